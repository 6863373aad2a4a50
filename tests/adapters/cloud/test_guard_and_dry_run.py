"""The identity guard and the dry-run recorder, around AwsProvider against in-process moto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from noderescue.adapters.cloud.aws import AwsProvider
from noderescue.adapters.cloud.base import (
    IdentityMismatch,
    InstanceNotFound,
    NotAllowed,
    OperationKind,
    OperationState,
)
from noderescue.adapters.cloud.dryrun import DryRunProvider
from noderescue.adapters.cloud.guard import GuardedProvider, NodeIdentity, Target
from noderescue.adapters.cloud.retry import RetryPolicy
from tests.adapters.cloud.conftest import ALLOWED_GROUP, REGION, AwsWorld

UID = "6f0c1f9e-0000-4000-8000-000000000001"


class NodeTable:
    """The Nodes as the API server would return them now (the runtime's NodeReader seam)."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeIdentity] = {}
        self.reads: list[str] = []

    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        self.reads.append(name)
        return self.nodes.get(name)

    async def nodes_claiming(self, provider_id: str) -> Sequence[str]:
        return sorted(name for name, node in self.nodes.items() if node.provider_id == provider_id)


@pytest.fixture
async def aws(aws_world: AwsWorld) -> AsyncIterator[AwsProvider]:
    provider = AwsProvider(
        REGION,
        [ALLOWED_GROUP],
        retry=RetryPolicy(deadline_s=2.0, backoff_initial_s=0.01),
        metrics=aws_world.metrics,
        session=aws_world.session,
    )
    yield provider
    await provider.close()


def node_name_of(aws_world: AwsWorld, instance_id: str) -> str:
    """The name the AWS cloud provider gives the instance's Node: its private DNS name's host."""
    return str(aws_world.describe(instance_id)["PrivateDnsName"]).split(".")[0]


def launch_time(aws_world: AwsWorld, instance_id: str) -> float:
    return float(aws_world.describe(instance_id)["LaunchTime"].timestamp())


def recorded_target(aws_world: AwsWorld, nodes: NodeTable, index: int = 0) -> Target:
    instance_id = aws_world.allowed_instances[index]
    provider_id = aws_world.provider_id(instance_id)
    name = node_name_of(aws_world, instance_id)
    # The kubelet registers its Node a little after the instance started.
    created = launch_time(aws_world, instance_id) + 60
    nodes.nodes[name] = NodeIdentity(uid=UID, provider_id=provider_id, created=created)
    return Target(node_name=name, node_uid=UID, provider_id=provider_id, instance_id=instance_id)


@pytest.mark.parametrize("kind", [pytest.param(kind, id=str(kind)) for kind in OperationKind])
async def test_guard_lets_the_recorded_instance_through(
    aws_world: AwsWorld, aws: AwsProvider, kind: OperationKind
) -> None:
    nodes = NodeTable()
    target = recorded_target(aws_world, nodes)
    guarded = GuardedProvider(aws, nodes)

    op = await guarded.act(kind, target, command="true")

    assert op.kind is kind
    assert op.instance_id == target.instance_id
    assert nodes.reads == [target.node_name]
    assert len(aws_world.log.mutating) == 1


def _node_name_reused(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    # The Node was deleted and a replacement registered under the same name: new UID, new
    # instance. The record still describes the old one.
    new_instance = aws_world.allowed_instances[1]
    nodes.nodes[target.node_name] = NodeIdentity(
        uid="new-uid", provider_id=aws_world.provider_id(new_instance)
    )
    return target


def _provider_id_changed(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    nodes.nodes[target.node_name] = NodeIdentity(
        uid=UID, provider_id=aws_world.provider_id(aws_world.allowed_instances[1])
    )
    return target


def _node_gone(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    del nodes.nodes[target.node_name]
    return target


def _record_names_other_instance(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    return replace(target, instance_id=aws_world.allowed_instances[2])


def _instance_in_other_group(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    provider_id = aws_world.provider_id(aws_world.other_instances[0])
    nodes.nodes[target.node_name] = NodeIdentity(uid=UID, provider_id=provider_id)
    return replace(target, provider_id=provider_id, instance_id=aws_world.other_instances[0])


def _instance_already_gone(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    provider_id = f"aws:///{REGION}a/i-00000000000000bad"
    nodes.nodes[target.node_name] = NodeIdentity(uid=UID, provider_id=provider_id)
    return replace(target, provider_id=provider_id, instance_id="i-00000000000000bad")


def _second_node_claims_the_instance(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    # Any kubelet may register a Node with any providerID: a second claim on the instance.
    nodes.nodes["attacker-0"] = NodeIdentity(uid="attacker-uid", provider_id=target.provider_id)
    return target


def _record_on_the_node_that_claims_a_foreign_instance(
    aws_world: AwsWorld, nodes: NodeTable, target: Target
) -> Target:
    # The only Node claiming the instance, but not the machine behind it: the instance's
    # private DNS name is another node's name.
    del nodes.nodes[target.node_name]
    nodes.nodes["attacker-0"] = NodeIdentity(
        uid="attacker-uid",
        provider_id=target.provider_id,
        created=launch_time(aws_world, target.instance_id) + 60,
    )
    return replace(target, node_name="attacker-0", node_uid="attacker-uid")


def _instance_younger_than_the_node(aws_world: AwsWorld, nodes: NodeTable, target: Target) -> Target:
    node = nodes.nodes[target.node_name]
    nodes.nodes[target.node_name] = replace(node, created=launch_time(aws_world, target.instance_id) - 3600)
    return target


@pytest.mark.parametrize(
    ("change", "error", "reason"),
    [
        pytest.param(_node_name_reused, IdentityMismatch, "re-created", id="node-name-reused"),
        pytest.param(_provider_id_changed, IdentityMismatch, "providerID", id="provider-id-changed"),
        pytest.param(_node_gone, IdentityMismatch, "no longer exists", id="node-deleted"),
        pytest.param(_record_names_other_instance, IdentityMismatch, "resolves to", id="instance-id-differs"),
        pytest.param(
            _instance_in_other_group, NotAllowed, "not one of the configured", id="group-not-allowed"
        ),
        pytest.param(_instance_already_gone, InstanceNotFound, "does not exist", id="instance-gone"),
        pytest.param(
            _second_node_claims_the_instance,
            IdentityMismatch,
            r"claimed by 2 nodes: attacker-0, ip-",
            id="provider-id-claimed-twice",
        ),
        pytest.param(
            _record_on_the_node_that_claims_a_foreign_instance,
            IdentityMismatch,
            "host name ip-.* does not match node attacker-0",
            id="instance-is-another-nodes-machine",
        ),
        pytest.param(
            _instance_younger_than_the_node, IdentityMismatch, "younger than node", id="instance-younger"
        ),
    ],
)
async def test_guard_refuses_with_no_mutating_call(
    aws_world: AwsWorld,
    aws: AwsProvider,
    change: object,
    error: type[Exception],
    reason: str,
) -> None:
    nodes = NodeTable()
    target = change(aws_world, nodes, recorded_target(aws_world, nodes))  # type: ignore[operator]
    guarded = GuardedProvider(aws, nodes)

    for kind in OperationKind:
        with pytest.raises(error, match=reason):
            await guarded.act(kind, target, command="true")
    assert aws_world.log.mutating == []


async def test_dry_run_records_intents_and_makes_no_mutating_call(
    aws_world: AwsWorld, aws: AwsProvider
) -> None:
    nodes = NodeTable()
    dry = DryRunProvider(aws, clock=lambda: 1000.0)
    guarded = GuardedProvider(dry, nodes)
    targets = [recorded_target(aws_world, nodes, i) for i in range(1)]

    ops = [
        await guarded.repair(targets[0], "systemctl restart kubelet"),
        await guarded.reboot(targets[0]),
        await guarded.replace(targets[0]),
    ]

    assert aws_world.log.mutating == []
    assert [i.kind for i in dry.intents] == [
        OperationKind.REPAIR,
        OperationKind.REBOOT,
        OperationKind.REPLACE,
    ]
    assert all(i.instance.id == targets[0].instance_id for i in dry.intents)
    assert all(i.instance.group == ALLOWED_GROUP for i in dry.intents)
    assert [i.command for i in dry.intents] == ["systemctl restart kubelet", None, None]
    assert [i.operation_id for i in dry.intents] == [op.id for op in ops]
    assert all(i.at == 1000.0 for i in dry.intents)
    for op in ops:
        assert (await guarded.operation_status(op)).state is OperationState.SUCCEEDED
    # The instance is untouched.
    assert aws_world.describe(targets[0].instance_id)["State"]["Name"] == "running"
    assert aws_world.log.mutating == []


async def test_dry_run_still_refuses_what_the_guard_refuses(aws_world: AwsWorld, aws: AwsProvider) -> None:
    """`plan`/dry-run must show the same refusals a real run would hit."""
    nodes = NodeTable()
    target = _node_name_reused(aws_world, nodes, recorded_target(aws_world, nodes))
    dry = DryRunProvider(aws)

    with pytest.raises(IdentityMismatch):
        await GuardedProvider(dry, nodes).replace(target)
    assert dry.intents == []


async def test_resolve_reports_the_instances_host_name_and_launch_time(
    aws_world: AwsWorld, aws: AwsProvider
) -> None:
    instance_id = aws_world.allowed_instances[0]
    described = aws_world.describe(instance_id)

    instance = await aws.resolve(aws_world.provider_id(instance_id))

    assert instance.hostname == described["PrivateDnsName"]
    assert instance.hostname.startswith("ip-")
    assert instance.launched == described["LaunchTime"].timestamp()


@pytest.mark.parametrize(
    "naming",
    [
        pytest.param(lambda dns, iid: dns, id="full-private-dns-name"),
        pytest.param(lambda dns, iid: dns.split(".")[0], id="host-label"),
        pytest.param(lambda dns, iid: iid, id="instance-id"),
        pytest.param(lambda dns, iid: f"{iid}.eu-west-1.compute.internal", id="resource-name"),
        pytest.param(lambda dns, iid: dns.upper(), id="case-insensitive"),
    ],
)
async def test_guard_accepts_the_ways_aws_names_nodes(
    aws_world: AwsWorld, aws: AwsProvider, naming: object
) -> None:
    nodes = NodeTable()
    instance_id = aws_world.allowed_instances[0]
    dns = str(aws_world.describe(instance_id)["PrivateDnsName"])
    name = naming(dns, instance_id)  # type: ignore[operator]
    provider_id = aws_world.provider_id(instance_id)
    nodes.nodes[name] = NodeIdentity(uid=UID, provider_id=provider_id)
    target = Target(node_name=name, node_uid=UID, provider_id=provider_id, instance_id=instance_id)

    assert (await GuardedProvider(aws, nodes).verify(target)).id == instance_id


async def test_guard_refuses_a_name_that_only_starts_like_the_host(
    aws_world: AwsWorld, aws: AwsProvider
) -> None:
    nodes = NodeTable()
    instance_id = aws_world.allowed_instances[0]
    host = node_name_of(aws_world, instance_id)
    provider_id = aws_world.provider_id(instance_id)
    for name in (f"{host}0", f"{host}-evil", f"{instance_id}x"):
        nodes.nodes = {name: NodeIdentity(uid=UID, provider_id=provider_id)}
        target = Target(node_name=name, node_uid=UID, provider_id=provider_id, instance_id=instance_id)
        with pytest.raises(IdentityMismatch, match="does not match"):
            await GuardedProvider(aws, nodes).replace(target)
    assert aws_world.log.mutating == []


async def test_a_provider_id_claimed_twice_names_both_nodes_to_park(
    aws_world: AwsWorld, aws: AwsProvider
) -> None:
    nodes = NodeTable()
    target = _second_node_claims_the_instance(aws_world, nodes, recorded_target(aws_world, nodes))

    with pytest.raises(IdentityMismatch) as refused:
        await GuardedProvider(aws, nodes).verify(target)

    assert refused.value.nodes == tuple(sorted(["attacker-0", target.node_name]))
    assert aws_world.log.mutating == []
