"""Notifications to humans (webhooks)."""

from noderescue.adapters.notify.escape import TextFormat, escape
from noderescue.adapters.notify.webhook import (
    NOTIFICATION_KINDS,
    Notification,
    NotificationKind,
    Notifier,
    WebhookNotifier,
    safe_url,
)

__all__ = [
    "NOTIFICATION_KINDS",
    "Notification",
    "NotificationKind",
    "Notifier",
    "TextFormat",
    "WebhookNotifier",
    "escape",
    "safe_url",
]
