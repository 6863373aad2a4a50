"""Every mutating Kubernetes operation the runtime performs, behind one Protocol.

``KubeAdapter`` does them; ``DryRunKubeActions`` records them as (operation, arguments) and
makes zero mutating requests — it may read (GET/LIST) to give realistic answers (would the
cordon be ours? which pods would a drain evict or refuse?). Its remediation records and
replacement claims live in its memory, laid over what the real store held when first read.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence, Set
from typing import Any, Protocol

from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
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
from noderescue.adapters.kube.record_store import Claim, LoadedRecords, MalformedClaim, RecordStore
from noderescue.adapters.kube.records import (
    MalformedRecord,
    NodeIdentityChanged,
    StaleRecord,
    progress_key,
    write_record,
)
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

    async def write_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        """Deprecated: writes the record as a Node annotation, which a kubelet can forge and
        which disappears with the Node. Use ``put_record`` / ``delete_record`` (and
        ``mirror_record`` to show it on the Node)."""
        ...

    async def load_records(self) -> LoadedRecords:
        """Every stored record (by node) and claim (by new node uid), and the unreadable objects
        (object name -> why), which are skipped."""
        ...

    async def put_record(self, record: Record) -> None:
        """Store the record of ``record.node`` durably before the step it describes.

        Raises ``StaleRecord`` (a newer one is stored), ``NodeIdentityChanged`` (the stored one
        is of another Node object with that name), ``KubeError``."""
        ...

    async def delete_record(self, node: str) -> None:
        """The remediation of ``node`` is over. Idempotent."""
        ...

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        """True when ``new_node`` may count as the replacement of ``replaced_node``: claimed now,
        or already by this same replace. False when it verified another replace."""
        ...

    async def prune_claims(self, live_node_uids: Set[str], older_than: float) -> int:
        """Drop claims of nodes no longer in ``live_node_uids`` made before ``older_than``
        (epoch s); how many were dropped."""
        ...

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        """Best effort: show the record on the Node (annotation) for humans; never raises."""
        ...

    async def emit_event(
        self, node: str, node_uid: str, reason: str, message: str, *, type_: EventType = "Normal"
    ) -> None: ...

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
        self.records = RecordStore(api, state_namespace)
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
        """Deprecated (see ``KubeActions.write_record``)."""
        await write_record(self.api, node, record, expected_uid=expected_uid)

    async def load_records(self) -> LoadedRecords:
        return await self.records.load()

    async def put_record(self, record: Record) -> None:
        await self.records.put(record)

    async def delete_record(self, node: str) -> None:
        await self.records.delete(node)

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        return await self.records.claim(new_node_uid, new_node, replaced_node)

    async def prune_claims(self, live_node_uids: Set[str], older_than: float) -> int:
        return await self.records.prune_claims(live_node_uids, older_than)

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        await self.records.mirror(node, record, expected_uid=expected_uid)

    async def emit_event(
        self, node: str, node_uid: str, reason: str, message: str, *, type_: EventType = "Normal"
    ) -> None:
        await self.events.emit(node, node_uid, reason, message, type_=type_)

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        return await self.state.append(events, keep_after=keep_after)

    async def set_pause(self, pause: Pause) -> None:
        await self.state.set_pause(pause)

    async def clear_pause(self) -> None:
        await self.state.clear_pause()

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": expected_uid}}
        failpoints.hit("kube.node.delete.before")
        try:
            await request_json(self.api, "DELETE", f"/api/v1/nodes/{node}", body=body)
        except NotFound:
            pass
        failpoints.hit("kube.node.delete.after")


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
        self.records = RecordStore(api, state_namespace)  # read only
        # What a real run would have stored: node -> record (None: deleted), uid -> claim.
        self._records: dict[str, Record | None] = {}
        self._claims: dict[str, Claim | None] = {}
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
        """Deprecated (see ``KubeActions.write_record``)."""
        self._record("write_record", node=node, record=record, expected_uid=expected_uid)

    async def load_records(self) -> LoadedRecords:
        """The real store (read), with what this dry run would have written laid over it."""
        stored = await self.records.load()
        records = dict(stored.records)
        for node, record in self._records.items():
            if record is None:
                records.pop(node, None)
            else:
                records[node] = record
        claims = dict(stored.claims)
        for uid, claim in self._claims.items():
            if claim is None:
                claims.pop(uid, None)
            else:
                claims[uid] = claim
        return LoadedRecords(records=records, claims=claims, malformed=stored.malformed)

    async def _current_record(self, node: str) -> Record | None:
        if node in self._records:
            return self._records[node]
        try:
            return await self.records.get(node)
        except MalformedRecord:
            return None

    async def put_record(self, record: Record) -> None:
        self._record("put_record", node=record.node, record=record)
        current = await self._current_record(record.node)
        if current is not None:
            if current.node_uid != record.node_uid:
                raise NodeIdentityChanged(
                    f"the record of node {record.node} is of uid {current.node_uid}, not {record.node_uid}"
                )
            if progress_key(current) > progress_key(record):
                raise StaleRecord(current)
        self._records[record.node] = record

    async def delete_record(self, node: str) -> None:
        self._record("delete_record", node=node)
        self._records[node] = None

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        self._record(
            "claim_replacement", new_node_uid=new_node_uid, new_node=new_node, replaced_node=replaced_node
        )
        if new_node_uid in self._claims:
            held = self._claims[new_node_uid]
        else:
            try:
                held = await self.records.get_claim(new_node_uid)
            except MalformedClaim:
                return False
        if held is not None:
            return held.replaced_node == replaced_node
        self._claims[new_node_uid] = Claim(new_node_uid, new_node, replaced_node, self._clock())
        return True

    async def prune_claims(self, live_node_uids: Set[str], older_than: float) -> int:
        self._record("prune_claims", live_node_uids=frozenset(live_node_uids), older_than=older_than)
        claims = (await self.load_records()).claims
        stale = [uid for uid, c in claims.items() if uid not in live_node_uids and c.claimed_at < older_than]
        for uid in stale:
            self._claims[uid] = None
        return len(stale)

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        self._record("mirror_record", node=node, record=record, expected_uid=expected_uid)

    async def emit_event(
        self, node: str, node_uid: str, reason: str, message: str, *, type_: EventType = "Normal"
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
