"""Object storage of the emulated API server: one global resourceVersion, a bounded event window.

Objects are kept as pre-serialized JSON bytes (orjson) plus the few fields selectors need, so a
LIST is a byte join and a node costs a few KiB, not a Python object tree (100k nodes fit well
under the 2 GiB target). Readers get a fresh parsed copy, so no caller can mutate stored state
behind the store's back. Everything runs on the event loop thread; nothing here awaits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from noderescue.sim.kubeapi.resources import ResourceType
from noderescue.sim.kubeapi.status import already_exists, conflict, expired, invalid, not_found
from noderescue.sim.kubeapi.timestamps import rfc3339

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]  # (namespace or "", name)


@dataclass(slots=True)
class Entry:
    raw: bytes
    rv: int
    labels: dict[str, str]
    # Pods only, so that controllers and PDB arithmetic over many pods need not parse them:
    node_name: str = ""  # spec.nodeName ("" when unscheduled)
    owner: str = ""  # "<Kind>/<name>" of the controller owner
    healthy: bool = False  # Ready and not terminating (what a PDB counts)
    terminating: bool = False  # has a deletionTimestamp


def _pod_summary(obj: dict[str, Any]) -> tuple[str, str, bool, bool]:
    meta = obj.get("metadata") or {}
    owner = next(
        (
            f"{r.get('kind')}/{r.get('name')}"
            for r in meta.get("ownerReferences") or []
            if r.get("controller")
        ),
        "",
    )
    terminating = bool(meta.get("deletionTimestamp"))
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    node_name = (obj.get("spec") or {}).get("nodeName") or ""
    return node_name, owner, ready and not terminating, terminating


@dataclass(frozen=True, slots=True)
class StoredEvent:
    rv: int
    type: EventType
    bucket: str
    namespace: str
    name: str
    entry: Entry
    prev: Entry | None = None  # the state before a MODIFIED (watch selectors need both)


@dataclass(eq=False, slots=True)
class Subscription:
    """One watcher's queue. A watcher that falls `limit` events behind is closed, as the real
    API server terminates slow watchers; the client resumes from its last resourceVersion."""

    bucket: str
    limit: int
    pending: deque[StoredEvent] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: str | None = None  # why: "overflow" | "disconnect" | "expired" | "stopped"

    def push(self, event: StoredEvent) -> None:
        if self.closed is not None:
            return
        if len(self.pending) >= self.limit:
            self.close("overflow")
            return
        self.pending.append(event)
        self.wakeup.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self.wakeup.set()


def _compact(raw: bytes) -> bytes:
    """orjson returns bytes inside a larger allocation (at least 8 KiB); a copy is exactly sized.
    Without it a 2 KiB Node costs 8 KiB and 100k nodes with their Leases cost 1.6 GiB."""
    return bytes(memoryview(raw))


ReadHook = Callable[[str | None, str | None], None]  # (namespace or None for all, name or None for all)


class Store:
    def __init__(self, *, window: int = 10_000, subscriber_limit: int = 100_000) -> None:
        self.rv = 0
        self._objects: dict[str, dict[Key, Entry]] = {}
        # One window per resource, as the real watch cache has: lease renewals of thousands
        # of kubelets must not push node events out of reach of node watchers.
        self._window_size = window
        self._windows: dict[str, deque[StoredEvent]] = {}
        self._compacted: dict[str, int] = {}  # per bucket: events with rv <= this are gone
        self._compacted_all = 0  # a forced compaction covers every bucket
        self._subscribers: dict[str, set[Subscription]] = {}
        self._subscriber_limit = subscriber_limit
        # Pods by spec.nodeName: drains list pods by node, and a node's controllers touch its pods.
        self._pods_by_node: dict[str, set[Key]] = {}
        self.read_hooks: dict[str, ReadHook] = {}
        self.write_hooks: list[Callable[[StoredEvent], None]] = []

    # ---- reads -------------------------------------------------------------------------------

    def before_read(self, res: ResourceType, namespace: str | None, name: str | None) -> None:
        hook = self.read_hooks.get(res.bucket)
        if hook is not None:
            hook(namespace, name)

    def entry(self, res: ResourceType, namespace: str, name: str) -> Entry | None:
        return self._objects.get(res.bucket, {}).get((namespace, name))

    def get(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self.entry(res, namespace, name)
        return None if entry is None else orjson.loads(entry.raw)

    def require(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(res, namespace, name)
        if obj is None:
            raise not_found(res.plural, res.group, name)
        return obj

    def items(self, res: ResourceType, namespace: str | None = None) -> Iterator[tuple[Key, Entry]]:
        bucket = self._objects.get(res.bucket, {})
        if namespace is None:
            return iter(list(bucket.items()))
        return iter([(k, e) for k, e in bucket.items() if k[0] == namespace])

    def pods_on_node(self, node_name: str) -> list[Key]:
        return sorted(self._pods_by_node.get(node_name, ()))

    def count(self, res: ResourceType) -> int:
        return len(self._objects.get(res.bucket, {}))

    def names(self, res: ResourceType, namespace: str | None = None) -> list[str]:
        return [k[1] for k, _ in self.items(res, namespace)]

    def objects(self, res: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        return [orjson.loads(e.raw) for _, e in self.items(res, namespace)]

    # ---- writes ------------------------------------------------------------------------------

    def create(self, res: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if res.namespaced else ""
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not name:
            raise invalid(res.kind, "", "metadata.name: Required value: name or generateName is required")
        bucket = self._objects.setdefault(res.bucket, {})
        if (namespace, name) in bucket:
            raise already_exists(res.plural, res.group, name)
        if res.namespaced:
            meta["namespace"] = namespace or "default"
            namespace = meta["namespace"]
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta.setdefault("creationTimestamp", rfc3339())
        meta.pop("deletionTimestamp", None)
        obj.setdefault("kind", res.kind)
        obj.setdefault("apiVersion", res.api_version)
        return self._write(res, namespace, name, obj, "ADDED")

    def update(
        self, res: ResourceType, obj: dict[str, Any], *, expect_rv: str | None = None
    ) -> dict[str, Any]:
        """Replace an object. `expect_rv` (the client's metadata.resourceVersion) makes it a
        compare-and-swap: a mismatch is 409 Conflict, as optimistic concurrency wants."""
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if res.namespaced else ""
        name = meta.get("name", "")
        current = self.entry(res, namespace, name)
        if current is None:
            raise not_found(res.plural, res.group, name)
        if expect_rv and expect_rv != str(current.rv):
            raise conflict(res.plural, res.group, name)
        old_meta = orjson.loads(current.raw)["metadata"]
        for immutable in ("uid", "creationTimestamp"):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
        if "deletionTimestamp" in old_meta:
            meta["deletionTimestamp"] = old_meta["deletionTimestamp"]
            meta["deletionGracePeriodSeconds"] = old_meta.get("deletionGracePeriodSeconds", 0)
        obj.setdefault("kind", res.kind)
        obj.setdefault("apiVersion", res.api_version)
        return self._write(res, namespace, name, obj, "MODIFIED")

    def mutate(
        self, res: ResourceType, namespace: str, name: str, change: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Read-modify-write for the emulator's own controllers; `change` returns whether it
        changed anything (no write, no event otherwise). None when the object does not exist."""
        obj = self.get(res, namespace, name)
        if obj is None:
            return None
        if not change(obj):
            return obj
        return self._write(res, namespace, name, obj, "MODIFIED")

    def delete(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        bucket = self._objects.get(res.bucket, {})
        entry = bucket.pop((namespace, name), None)
        if entry is None:
            raise not_found(res.plural, res.group, name)
        if entry.node_name:
            self._unindex_pod(entry.node_name, (namespace, name))
        self.rv += 1
        obj: dict[str, Any] = orjson.loads(entry.raw)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        final = Entry(
            _compact(orjson.dumps(obj)),
            self.rv,
            entry.labels,
            entry.node_name,
            entry.owner,
            entry.healthy,
            entry.terminating,
        )
        self._publish(StoredEvent(self.rv, "DELETED", res.bucket, namespace, name, final))
        return obj

    def _write(
        self, res: ResourceType, namespace: str, name: str, obj: dict[str, Any], kind: EventType
    ) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        labels = meta.get("labels") or {}
        entry = Entry(_compact(orjson.dumps(obj)), self.rv, dict(labels))
        if res.bucket == "pods":
            entry.node_name, entry.owner, entry.healthy, entry.terminating = _pod_summary(obj)
        node_name = entry.node_name
        bucket = self._objects.setdefault(res.bucket, {})
        key = (namespace, name)
        previous = bucket.get(key)
        bucket[key] = entry
        if previous is not None and previous.node_name and previous.node_name != node_name:
            self._unindex_pod(previous.node_name, key)
        if node_name:
            self._pods_by_node.setdefault(node_name, set()).add(key)
        self._publish(StoredEvent(self.rv, kind, res.bucket, namespace, name, entry, previous))
        return obj

    def _unindex_pod(self, node_name: str, key: Key) -> None:
        keys = self._pods_by_node.get(node_name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._pods_by_node[node_name]

    # ---- watch -------------------------------------------------------------------------------

    def _publish(self, event: StoredEvent) -> None:
        window = self._windows.get(event.bucket)
        if window is None:
            window = self._windows[event.bucket] = deque(maxlen=self._window_size)
        if len(window) == self._window_size:
            self._compacted[event.bucket] = window[0].rv
        window.append(event)
        for sub in self._subscribers.get(event.bucket, ()):
            sub.push(event)
        for hook in self.write_hooks:
            hook(event)

    def compacted_rv(self, res: ResourceType) -> int:
        return max(self._compacted.get(res.bucket, 0), self._compacted_all)

    def check_not_expired(self, res: ResourceType, requested: int) -> None:
        compacted = self.compacted_rv(res)
        if requested < compacted:
            raise expired(requested, compacted + 1)

    def subscribe(self, res: ResourceType, since_rv: int | None) -> tuple[Subscription, list[StoredEvent]]:
        """Register a watcher and return the window's events after `since_rv` (nothing can slip
        between the two: both happen without yielding to the loop). Raises 410 Expired when
        `since_rv` is older than the window."""
        backlog: list[StoredEvent] = []
        if since_rv is not None:
            self.check_not_expired(res, since_rv)
            backlog = [e for e in self._windows.get(res.bucket, ()) if e.rv > since_rv]
        sub = Subscription(res.bucket, self._subscriber_limit)
        self._subscribers.setdefault(res.bucket, set()).add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.get(sub.bucket, set()).discard(sub)

    def has_watchers(self, res: ResourceType) -> bool:
        return bool(self._subscribers.get(res.bucket))

    def close_watchers(self, reason: str) -> int:
        closed = 0
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close(reason)
                closed += 1
        return closed

    def compact(self) -> None:
        """Forget every event up to now (as an etcd compaction does): resuming from any version
        older than the current one gets 410."""
        self._compacted_all = self.rv
        self._windows.clear()
