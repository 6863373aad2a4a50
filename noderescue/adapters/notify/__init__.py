"""Notifications to humans (webhooks)."""

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
    "WebhookNotifier",
    "safe_url",
]
