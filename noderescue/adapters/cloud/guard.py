"""The identity guard of DESIGN §4: never touch a machine that is not the one behind the Node.

Node names are reused (a replacement may come back as ``workers-3``), instances move between
groups, records outlive both. So right before every destructive call the Node and the instance
are read again and compared with what the remediation record says. ``GuardedProvider`` is the
only mutating surface the runtime gets (``build_provider`` returns it): its mutating methods take
the recorded ``Target`` rather than an ``Instance``, so skipping the check is not expressible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Protocol

import structlog

from noderescue.adapters.cloud.base import (
    CloudError,
    CloudProvider,
    IdentityMismatch,
    Instance,
    InstanceState,
    Operation,
    OperationKind,
    OperationStatus,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    uid: str
    provider_id: str | None


class NodeReader(Protocol):
    """Reads one Node fresh from the API server (not from a cache). Implemented by the runtime
    with the Kubernetes adapter (adapters do not import each other)."""

    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        """``None`` when the Node does not exist."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """What the remediation record says we act on (Record.node, node_uid, provider_id, instance_id)."""

    node_name: str
    node_uid: str
    provider_id: str
    instance_id: str


class GuardedProvider:
    """A ``CloudProvider`` whose mutating calls re-check the Node ↔ providerID ↔ instance identity."""

    def __init__(self, inner: CloudProvider, node_reader: NodeReader) -> None:
        self._inner = inner
        self._nodes = node_reader

    @property
    def name(self) -> str:
        return self._inner.name

    async def verify(self, target: Target) -> Instance:
        """The instance behind ``target``, freshly read; ``IdentityMismatch`` / ``NotAllowed`` /
        ``InstanceNotFound`` when it is not safe to act on it."""
        node = await self._nodes.get_node_identity(target.node_name)
        if node is None:
            self._refuse(target, f"node {target.node_name} no longer exists")
        if node.uid != target.node_uid:
            self._refuse(
                target,
                f"node {target.node_name} was re-created (uid {node.uid}, recorded {target.node_uid}): "
                "the name was reused",
            )
        if node.provider_id != target.provider_id:
            self._refuse(
                target,
                f"node {target.node_name} providerID is {node.provider_id!r}, "
                f"recorded {target.provider_id!r}",
            )
        # resolve() raises NotAllowed when the instance left the configured groups.
        try:
            instance = await self._inner.resolve(target.provider_id)
        except CloudError as e:
            log.warning(
                "cloud_guard_refused", node=target.node_name, provider_id=target.provider_id, reason=str(e)
            )
            raise
        if instance.id != target.instance_id:
            self._refuse(
                target,
                f"providerID {target.provider_id} resolves to instance {instance.id}, "
                f"recorded {target.instance_id}",
            )
        return instance

    def _refuse(self, target: Target, reason: str) -> NoReturn:
        log.warning(
            "cloud_guard_refused", node=target.node_name, provider_id=target.provider_id, reason=reason
        )
        raise IdentityMismatch(reason)

    async def repair(self, target: Target, command: str) -> Operation:
        instance = await self.verify(target)
        return await self._inner.repair(instance, command)

    async def reboot(self, target: Target) -> Operation:
        instance = await self.verify(target)
        return await self._inner.reboot(instance)

    async def replace(self, target: Target) -> Operation:
        instance = await self.verify(target)
        return await self._inner.replace(instance)

    async def act(self, kind: OperationKind, target: Target, command: str = "") -> Operation:
        """Dispatch on the ladder step's action (``command`` is used by repair only)."""
        if kind is OperationKind.REPAIR:
            return await self.repair(target, command)
        if kind is OperationKind.REBOOT:
            return await self.reboot(target)
        return await self.replace(target)

    # Reads pass through.

    async def resolve(self, provider_id: str) -> Instance:
        return await self._inner.resolve(provider_id)

    async def operation_status(self, op: Operation) -> OperationStatus:
        return await self._inner.operation_status(op)

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        # No identity to re-check: the instance is gone; the provider checks the group.
        return await self._inner.follow_up(op, call)

    async def instance_state(self, instance: Instance) -> InstanceState:
        return await self._inner.instance_state(instance)

    async def close(self) -> None:
        await self._inner.close()
