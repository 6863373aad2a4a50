"""core/v1 Events on Nodes, aggregated like the kubelet's recorder.

The same (node, reason, message, type) within ``aggregate_window_s`` (10 minutes) bumps ``count``
and ``lastTimestamp`` of the existing Event with a PATCH instead of creating a new object, so a
gate that keeps tripping does not flood etcd. The aggregation memory is per process (as in
client-go); after a restart the first repeat creates a new Event.

Events are best effort: a failure is logged and swallowed (an Event must never fail a
remediation). Node events live in the ``default`` namespace, as the kubelet's do;
like client-go's recorder we send the legacy fields (count, first/lastTimestamp), no eventTime.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube.errors import Conflict, KubeError, NotFound
from noderescue.adapters.kube.nodeview import format_time
from noderescue.adapters.kube.transport import STRATEGIC_MERGE_PATCH, request_json

log = structlog.get_logger(__name__)

COMPONENT = "noderescue"
EventType = Literal["Normal", "Warning"]


@dataclass(slots=True)
class _Seen:
    name: str
    count: int
    last: float


class EventRecorder:
    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str = "default",
        aggregate_window_s: float = 600.0,
        max_remembered: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._window = aggregate_window_s
        self._max = max_remembered
        self._clock = clock
        self._instance = f"{socket.gethostname()}-{os.getpid()}"
        self._seen: OrderedDict[tuple[str, str, str, str, str], _Seen] = OrderedDict()
        self._lock = asyncio.Lock()
        self.posted = 0  # new Event objects created
        self.aggregated = 0  # count bumps

    async def emit(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        """``once_key``: post at most once per key, across processes and restarts: the Event gets a
        name derived from the key, and a post that finds it already there posts nothing (the end of
        a remediation is told once even when a crash made the daemon finish it twice)."""
        key = (node, node_uid, reason, message, type_)
        # One emit at a time: two concurrent repeats must not both create a new Event.
        async with self._lock:
            try:
                await self._emit(key, once_key)
            except KubeError as exc:
                log.warning("event_post_failed", node=node, reason=reason, error=str(exc))

    async def _emit(self, key: tuple[str, str, str, str, str], once_key: str | None) -> None:
        node, node_uid, reason, message, type_ = key
        now = self._clock()
        seen = self._seen.get(key)
        if once_key is None and seen is not None and now - seen.last <= self._window:
            patch = {"count": seen.count + 1, "lastTimestamp": format_time(now)}
            try:
                await request_json(
                    self._api,
                    "PATCH",
                    f"/api/v1/namespaces/{self._namespace}/events/{seen.name}",
                    body=patch,
                    content_type=STRATEGIC_MERGE_PATCH,
                )
            except NotFound:
                pass  # expired (events have a TTL) or deleted: post a new one below
            else:
                seen.count += 1
                seen.last = now
                self._seen.move_to_end(key)
                self.aggregated += 1
                return
        name = f"{node}.{time.time_ns():x}" if once_key is None else _once_name(node, once_key)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": self._namespace},
            "involvedObject": {"kind": "Node", "name": node, "uid": node_uid, "apiVersion": "v1"},
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
        try:
            await request_json(self._api, "POST", f"/api/v1/namespaces/{self._namespace}/events", body=body)
        except Conflict:
            if once_key is None:
                raise
            log.info("event_already_posted", node=node, reason=reason)
            return
        self.posted += 1
        self._seen[key] = _Seen(name=name, count=1, last=now)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)


def _once_name(node: str, once_key: str) -> str:
    """A valid, deterministic Event name (DNS subdomain, <= 253 characters) for ``once_key``."""
    digest = hashlib.sha256(f"{node}\0{once_key}".encode()).hexdigest()[:20]
    return f"{node[:200]}.once-{digest}"
