"""Telling the story of a remediation: Kubernetes Events on the Node and webhook notifications.

Both are best effort and never block or fail a remediation: an Event that cannot be posted is
logged by the recorder, notifications are queued by the notifier. In dry-run no notification is
sent (the DryRunKubeActions records the Events instead of posting them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from noderescue.adapters.kube import KubeActions, KubeError
from noderescue.adapters.kube.events import EventType
from noderescue.adapters.notify.webhook import Notification, NotificationKind, Notifier

log = structlog.get_logger(__name__)

EVENT_TIMEOUT_S = 5.0


class Announcer:
    def __init__(
        self, cluster: str, kube: KubeActions, notifiers: Sequence[Notifier], *, dry_run: bool
    ) -> None:
        self._cluster = cluster
        self._kube = kube
        self._notifiers = tuple(notifiers)
        self._dry_run = dry_run

    async def event(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        """An Event on the Node (``reason`` is one of the documented reasons); with ``once_key``
        at most one such Event ever (see ``EventRecorder.emit``)."""
        log.info("node_event", node=node, reason=reason, message=message, event_type=type_)
        try:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                await self._kube.emit_event(node, node_uid, reason, message, type_=type_, once_key=once_key)
        except (KubeError, TimeoutError) as exc:
            log.warning("node_event_failed", reason=reason, error=str(exc) or type(exc).__name__)

    def notify(
        self,
        kind: NotificationKind,
        message: str,
        *,
        node: str | None = None,
        cls: str | None = None,
        action: str | None = None,
    ) -> None:
        if self._dry_run:
            return
        note = Notification(
            kind=kind,
            cluster=self._cluster,
            node=node,
            cls=cls,
            action=action,
            message=message,
            ts=datetime.now(UTC),
        )
        for notifier in self._notifiers:
            notifier.notify(note)
