"""Dry-run: reads reach the cloud, mutations are only recorded: dry-run makes zero mutating calls."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from noderescue.adapters.cloud.base import (
    CloudProvider,
    Instance,
    InstanceState,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
)

log = structlog.get_logger(__name__)

DRY_RUN_PROVIDER = "dry-run"


@dataclass(frozen=True, slots=True)
class Intent:
    """A mutating call that dry-run did not make."""

    kind: OperationKind
    provider: str  # the wrapped provider's name
    instance: Instance
    command: str | None  # repair only
    at: float
    operation_id: str


class DryRunProvider:
    """Wraps a provider: ``resolve``/``instance_state`` pass through, mutations become intents."""

    def __init__(self, inner: CloudProvider, *, clock: Callable[[], float] = time.time) -> None:
        self._inner = inner
        self._clock = clock
        self._ids = itertools.count(1)
        self.intents: list[Intent] = []

    @property
    def name(self) -> str:
        return self._inner.name

    def _record(self, kind: OperationKind, instance: Instance, command: str | None) -> Operation:
        now = self._clock()
        op_id = f"dry-run-{kind}-{instance.id}-{next(self._ids)}"
        self.intents.append(Intent(kind, self._inner.name, instance, command, now, op_id))
        log.info(
            "cloud_dry_run_intent",
            provider=self._inner.name,
            action=str(kind),
            instance=instance.id,
            group=instance.group,
            dry_run=True,
        )
        return Operation(id=op_id, kind=kind, instance_id=instance.id, started=now, provider=DRY_RUN_PROVIDER)

    async def repair(self, instance: Instance, command: str) -> Operation:
        return self._record(OperationKind.REPAIR, instance, command)

    async def reboot(self, instance: Instance) -> Operation:
        return self._record(OperationKind.REBOOT, instance, None)

    async def replace(self, instance: Instance) -> Operation:
        return self._record(OperationKind.REPLACE, instance, None)

    async def operation_status(self, op: Operation) -> OperationStatus:
        if op.provider == DRY_RUN_PROVIDER:
            return OperationStatus(OperationState.SUCCEEDED, detail="dry run: not executed")
        # A real operation started before dry-run was switched on: following it is a read.
        return await self._inner.operation_status(op)

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        """Dry-run never changes anything, a scale set's capacity included."""
        log.info("cloud_dry_run_follow_up_skipped", provider=self._inner.name, call=call, dry_run=True)
        return None

    async def resolve(self, provider_id: str) -> Instance:
        return await self._inner.resolve(provider_id)

    async def instance_state(self, instance: Instance) -> InstanceState:
        return await self._inner.instance_state(instance)

    async def close(self) -> None:
        await self._inner.close()
