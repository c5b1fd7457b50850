from catalog_assets.onec.client import CatalogPage, OneCCatalogClient, OneCResponseError

__all__ = ["CatalogPage", "OneCCatalogClient", "OneCResponseError"]
