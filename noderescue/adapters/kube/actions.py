"""Every mutating Kubernetes operation the runtime performs, behind one Protocol.

``KubeAdapter`` does them; ``DryRunKubeActions`` records them as (operation, arguments) and
makes zero mutating requests — it may read (GET/LIST) to give realistic answers (would the
cordon be ours? which pods would a drain evict or refuse?).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube import cordon as cordon_ops
from noderescue.adapters.kube.drain import (
    DrainOutcome,
    ProgressCallback,
    drain_node,
    node_pods_query,
    plan_pods,
)
from noderescue.adapters.kube.errors import NotFound
from noderescue.adapters.kube.events import EventRecorder, EventType
from noderescue.adapters.kube.records import write_record
from noderescue.adapters.kube.state import StateStore
from noderescue.adapters.kube.transport import list_all, request_json
from noderescue.core.model import CORDONED_BY_ANNOTATION, DrainPolicy, History, HistoryEvent, Pause, Record


class KubeActions(Protocol):
    async def cordon(self, node: str) -> bool:
        """True when the node is cordoned by us; False when a human had cordoned it."""
        ...

    async def uncordon(self, node: str) -> bool:
        """Uncordon only if we cordoned it; True when we did."""
        ...

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome: ...

    async def write_record(self, node: str, record: Record | None, *, expected_uid: str) -> None: ...

    async def emit_event(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        """``once_key``: the Event is posted at most once for this key (a deterministic object
        name; a second post, e.g. after a crash and a restart, finds it and posts nothing)."""
        ...

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History: ...

    async def set_pause(self, pause: Pause) -> None: ...

    async def clear_pause(self) -> None: ...

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        """Delete the Node object, only if it still has ``expected_uid`` (404 is success)."""
        ...


class KubeAdapter:
    """The real thing: one per cluster."""

    def __init__(self, api: ApiClient, *, state_namespace: str, events: EventRecorder | None = None) -> None:
        self.api = api
        self.state = StateStore(api, state_namespace)
        self.events = events or EventRecorder(api)

    async def cordon(self, node: str) -> bool:
        return await cordon_ops.cordon(self.api, node)

    async def uncordon(self, node: str) -> bool:
        return await cordon_ops.uncordon(self.api, node)

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome:
        return await drain_node(self.api, node, policy, deadline=deadline, on_progress=on_progress)

    async def write_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        await write_record(self.api, node, record, expected_uid=expected_uid)

    async def emit_event(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        await self.events.emit(node, node_uid, reason, message, type_=type_, once_key=once_key)

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        return await self.state.append(events, keep_after=keep_after)

    async def set_pause(self, pause: Pause) -> None:
        await self.state.set_pause(pause)

    async def clear_pause(self) -> None:
        await self.state.clear_pause()

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": expected_uid}}
        try:
            await request_json(self.api, "DELETE", f"/api/v1/nodes/{node}", body=body)
        except NotFound:
            pass


class DryRunKubeActions:
    """Records what would be done; reads only. ``calls`` is [(operation, arguments), ...].

    ``drain`` answers with the plan: ``ok`` unless pods would be refused, and ``remaining``
    naming the pods a real drain would evict (nothing is evicted).
    """

    def __init__(
        self, api: ApiClient, *, state_namespace: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.api = api
        self.state = StateStore(api, state_namespace)
        # The latest intents (a dry run can last for weeks: keep a bounded tail, logs have all).
        self.calls: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=10_000)
        self._clock = clock

    def _record(self, operation: str, **args: Any) -> None:
        self.calls.append((operation, args))

    async def cordon(self, node: str) -> bool:
        self._record("cordon", node=node)
        obj = await request_json(self.api, "GET", cordon_ops.node_path(node))
        unschedulable = (obj.get("spec") or {}).get("unschedulable") is True
        cordoned_by = ((obj.get("metadata") or {}).get("annotations") or {}).get(CORDONED_BY_ANNOTATION)
        return not unschedulable or cordoned_by == cordon_ops.CORDONED_BY_US

    async def uncordon(self, node: str) -> bool:
        self._record("uncordon", node=node)
        obj = await request_json(self.api, "GET", cordon_ops.node_path(node))
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return annotations.get(CORDONED_BY_ANNOTATION) == cordon_ops.CORDONED_BY_US

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome:
        self._record("drain", node=node, policy=policy, deadline=deadline)
        started = self._clock()
        pods, _ = await list_all(self.api, "/api/v1/pods", query=node_pods_query(node))
        plan = plan_pods(pods, policy)
        return DrainOutcome(
            node=node,
            ok=not plan.refused,
            refused=plan.refused,
            remaining=tuple(str(p) for p in plan.evict),  # what a real drain would evict
            skipped=plan.skipped,
            elapsed_s=self._clock() - started,
        )

    async def write_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        self._record("write_record", node=node, record=record, expected_uid=expected_uid)

    async def emit_event(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        self._record("emit_event", node=node, node_uid=node_uid, reason=reason, message=message, type_=type_)

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        self._record("append_history", events=tuple(events), keep_after=keep_after)
        history, _ = await self.state.load()
        return History(tuple(sorted((*history.events, *events), key=lambda e: e.ts))).compacted(keep_after)

    async def set_pause(self, pause: Pause) -> None:
        self._record("set_pause", pause=pause)

    async def clear_pause(self) -> None:
        self._record("clear_pause")

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        self._record("delete_node", node=node, expected_uid=expected_uid)
