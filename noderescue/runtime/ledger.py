"""The one owner of remediation records, replacement claims and not-yet-durable admissions.

Records live in noderescue's own namespace of the target cluster (one object per node, written by
the Kubernetes adapter's record store), never in anything a kubelet can write. In the process, this
ledger holds them: the reconciler plans on ``records()``, the executor's workers write through
``put``/``close``. Nobody else keeps a copy.

Accounting starts at admission, before any I/O: ``admit`` puts the record a worker is about to
write (and the history event it is about to append) into the ledger synchronously, in the same
pass that decided it. A pass that runs while the worker is still waiting for the API server sees
the remediation in flight and its rate-limit slot taken, so nothing is admitted past a budget.
An admission that never became durable (the worker failed first) is dropped when its worker ends;
its history event stays counted until the stored history shows it or it ages out (a rate limit
counted once too often is safe, once too few is not).

A leader loads the store when it takes over (``load``); from then on its own writes keep the
ledger current. A standby re-reads the store now and then (``refresh``), for ``plan`` and
``/status``; it never acts.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from noderescue.adapters.kube import KubeError
from noderescue.adapters.kube.record_store import LoadedRecords
from noderescue.core.model import HistoryEvent, Record

log = structlog.get_logger(__name__)

MIRROR_TIMEOUT_S = 3.0


class RecordStore(Protocol):
    """The Kubernetes adapter's record store, as the ledger uses it."""

    async def load_records(self) -> LoadedRecords: ...

    async def put_record(self, record: Record) -> None: ...

    async def delete_record(self, node: str) -> None: ...

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool: ...

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None: ...


class Ledger:
    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._records: dict[str, Record] = {}
        self._admitted: dict[str, Record] = {}  # decided, not yet durable
        self._pending_history: dict[HistoryEvent, None] = {}  # appended (maybe), not yet seen stored
        self._claims: dict[str, str] = {}
        self.malformed: dict[str, str] = {}
        self.loaded = False

    # ------------------------------------------------------------------ reading

    def records(self) -> dict[str, Record]:
        """Every record the plan must see: durable ones and admissions still on their way."""
        out = dict(self._records)
        out.update(self._admitted)
        return out

    def get(self, node: str) -> Record | None:
        return self._admitted.get(node) or self._records.get(node)

    def pending_history(self) -> tuple[HistoryEvent, ...]:
        return tuple(self._pending_history)

    def history_seen(self, stored: tuple[HistoryEvent, ...], keep_after: float) -> None:
        """The stored history was read: events it shows, or older than every window, are settled."""
        present = set(stored)
        for event in list(self._pending_history):
            if event in present or event.ts <= keep_after:
                del self._pending_history[event]

    def claim_holder(self, new_node_uid: str) -> str | None:
        """The node whose replace the node with this uid verified, if any (as far as we know)."""
        return self._claims.get(new_node_uid)

    # ------------------------------------------------------------------ loading

    async def load(self) -> None:
        """Replace what the ledger knows with the store's content (start-up, takeover). Admissions
        of workers still running stay: they are newer than anything stored."""
        state = await self._store.load_records()
        self._records = dict(state.records)
        self._claims = state.claim_holders()
        for name, why in state.malformed.items():
            if self.malformed.get(name) != why:
                log.warning("record_malformed_skipped", record=name, error=why)
        self.malformed = dict(state.malformed)
        self.loaded = True

    # ------------------------------------------------------------------ admission

    def admit(self, record: Record, event: HistoryEvent) -> None:
        self._admitted[record.node] = record
        self._pending_history[event] = None

    def expect_history(self, event: HistoryEvent) -> None:
        self._pending_history[event] = None

    def drop_admission(self, node: str) -> None:
        """The worker ended before its record became durable: the remediation never started."""
        if self._admitted.pop(node, None) is not None:
            log.info("admission_dropped", node=node)

    # ------------------------------------------------------------------ writing

    async def put(self, record: Record) -> Record:
        await self._store.put_record(record)
        self._records[record.node] = record
        self._admitted.pop(record.node, None)
        await self._mirror(record.node, record, record.node_uid)
        return record

    def keep_in_memory(self, record: Record) -> None:
        """Dry-run bookkeeping only: the store is a recorder there."""
        self._records[record.node] = record
        self._admitted.pop(record.node, None)

    async def close(self, record: Record, *, node_uid: str | None) -> None:
        """The remediation is over: its record object is deleted (the Node's mirror too)."""
        await self._store.delete_record(record.node)
        self._records.pop(record.node, None)
        self._admitted.pop(record.node, None)
        if node_uid is not None:
            await self._mirror(record.node, None, node_uid)

    async def claim(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        holder = self._claims.get(new_node_uid)
        if holder is not None and holder != replaced_node:
            return False
        won = await self._store.claim_replacement(new_node_uid, new_node, replaced_node)
        if won:
            self._claims[new_node_uid] = replaced_node
        return won

    async def _mirror(self, node: str, record: Record | None, uid: str) -> None:
        """The Node annotation is for humans only (kubectl describe node): best effort, bounded."""
        try:
            async with asyncio.timeout(MIRROR_TIMEOUT_S):
                await self._store.mirror_record(node, record, expected_uid=uid)
        except (KubeError, TimeoutError) as exc:
            log.debug("record_mirror_failed", node=node, error=str(exc) or type(exc).__name__)
