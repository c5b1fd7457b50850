"""Receiver for Tec.Delivery's asynchronous-processing webhooks, and its durable spool."""

from catalog_assets.webhooks.app import WEBHOOK_PATH, WebhookReceiver, validate_notification
from catalog_assets.webhooks.spool import WebhookSpool

__all__ = ["WEBHOOK_PATH", "WebhookReceiver", "WebhookSpool", "validate_notification"]
