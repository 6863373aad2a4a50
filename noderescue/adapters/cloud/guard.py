"""The identity guard: never touch a machine that is not the one behind the Node.

Node names are reused (a replacement may come back as ``workers-3``), instances move between
groups, records outlive both. So right before every destructive call the Node and the instance
are read again and compared with what the remediation record says. ``GuardedProvider`` is the
only mutating surface the runtime gets (``build_provider`` returns it): its mutating methods take
the recorded ``Target`` rather than an ``Instance``, so skipping the check is not expressible.

A Node's ``spec.providerID`` is written by the kubelet that registers it, so it proves nothing:
any compromised node may register a second Node claiming a healthy machine's providerID and
report it NotReady. What a kubelet cannot choose under NodeRestriction is its Node's *name*
(its credential is ``system:node:<name>``), and the cloud reports the machine's own host name.
So besides the record the instance is bound to the Node by:

- the claim being unique: a providerID claimed by two Nodes is refused for both (the runtime
  parks both, a human decides which one lies);
- the name: the Node is named after the machine (AWS: the private DNS name, or the instance id
  with resource-name host names; Azure: the VM's computer name);
- the age: the machine is not younger than the Node (a Node that outlived its machine and now
  resolves to a new one, e.g. a re-created scale set reusing instance ids and computer names).
"""

from __future__ import annotations

from collections.abc import Sequence
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

# A Node's creationTimestamp has whole seconds, and the cloud's and the API server's clocks differ
# by a little: a machine counts as younger than its Node only beyond this.
LAUNCH_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    uid: str
    provider_id: str | None
    created: float | None = None  # metadata.creationTimestamp, epoch seconds


class NodeReader(Protocol):
    """Reads Nodes for the guard. Implemented by the runtime with the Kubernetes adapter
    (adapters do not import each other)."""

    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        """One Node read fresh from the API server (not from a cache); ``None`` when it does
        not exist."""
        ...

    async def nodes_claiming(self, provider_id: str) -> Sequence[str]:
        """Names of every Node whose ``spec.providerID`` is ``provider_id`` (the target included)."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """What the remediation record says we act on (Record.node, node_uid, provider_id, instance_id)."""

    node_name: str
    node_uid: str
    provider_id: str
    instance_id: str


def names_match(node_name: str, instance: Instance) -> bool:
    """Is ``node_name`` a name the cloud's node controller gives the Node of ``instance``?

    The full host name (AWS private DNS name ``ip-10-0-1-2.eu-west-1.compute.internal``, an Azure
    computer name), its first label (kubelets with a short host name), or the instance id, bare or
    as the first label (AWS resource-name host names: ``i-0abc...``). DNS names compare without
    case; the Azure cloud provider lower-cases computer names."""
    name = node_name.lower()
    first = name.split(".", 1)[0]
    if first == instance.id.lower():
        return True
    if not instance.hostname:
        return False
    hostname = instance.hostname.lower().rstrip(".")
    return name == hostname or (first == name and first == hostname.split(".", 1)[0])


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
        claimants = sorted({*await self._nodes.nodes_claiming(target.provider_id), target.node_name})
        if len(claimants) > 1:
            self._refuse(
                target,
                f"providerID {target.provider_id} is claimed by {len(claimants)} nodes: "
                f"{', '.join(claimants)}; a node registered with another machine's providerID",
                nodes=tuple(claimants),
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
        if not names_match(target.node_name, instance):
            self._refuse(
                target,
                f"instance {instance.id} has host name {instance.hostname or '(none reported)'}, "
                f"which does not match node {target.node_name}: the Node is not the machine behind "
                "its providerID",
            )
        if (
            instance.launched is not None
            and node.created is not None
            and instance.launched > node.created + LAUNCH_SLACK_S
        ):
            self._refuse(
                target,
                f"instance {instance.id} (launched {instance.launched:.0f}) is younger than node "
                f"{target.node_name} (created {node.created:.0f}): the Node outlived its machine",
            )
        return instance

    def _refuse(self, target: Target, reason: str, nodes: tuple[str, ...] = ()) -> NoReturn:
        log.warning(
            "cloud_guard_refused", node=target.node_name, provider_id=target.provider_id, reason=reason
        )
        raise IdentityMismatch(reason, nodes or (target.node_name,))

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
