from catalog_assets.tec_delivery.client import BatchOutcome, TecDeliveryClient

__all__ = ["BatchOutcome", "TecDeliveryClient"]
