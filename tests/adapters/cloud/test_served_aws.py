"""Integration: providers built by ``build_provider`` from the configuration ``World`` writes, against
the emulator's served clouds (moto server behind the audit proxy; the ARM emulator), with the
identity guard reading Nodes from the emulated cluster. The audit log is the witness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from noderescue import USER_AGENT
from noderescue.adapters.cloud.base import (
    IdentityMismatch,
    NotAllowed,
    OperationState,
)
from noderescue.adapters.cloud.factory import ClusterCloud, build_provider
from noderescue.adapters.cloud.guard import NodeIdentity, Target
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.adapters.kube.nodeview import parse_time
from noderescue.config import ClusterSettings
from noderescue.metrics import Metrics
from noderescue.sim.world import World

FAST_RETRY = RetryPolicy(deadline_s=5.0, backoff_initial_s=0.02, backoff_max_s=0.2)


class ClusterNodes:
    """NodeReader over the emulated cluster (the runtime's reader goes through the Kubernetes API)."""

    def __init__(self, world: World) -> None:
        self._world = world

    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        node = self._world.cluster.get_node(name)
        if node is None:
            return None
        return NodeIdentity(
            node["metadata"]["uid"],
            node.get("spec", {}).get("providerID"),
            parse_time(node["metadata"].get("creationTimestamp")),
        )

    async def nodes_claiming(self, provider_id: str) -> list[str]:
        claims = []
        for name in self._world.cluster.node_names():
            node = self._world.cluster.get_node(name)
            if node is not None and node.get("spec", {}).get("providerID") == provider_id:
                claims.append(name)
        return claims


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    async with World.start("pets-reboot", out_dir=tmp_path, run_events=False) as w:
        for key, value in w.env().items():
            monkeypatch.setenv(key, value)
        yield w


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def cluster_settings(world: World, **aws_overrides: Any) -> ClusterSettings:
    raw = dict(world.daemon_config()["clusters"][0])
    raw["aws"] = {k: v for k, v in ({**raw["aws"], **aws_overrides}).items() if v is not None}
    return ClusterSettings.model_validate(raw)


async def build(
    world: World, metrics: Metrics, *, dry_run: bool = False, **aws_overrides: Any
) -> ClusterCloud:
    cloud = await build_provider(
        cluster_settings(world, **aws_overrides),
        ClusterNodes(world),
        dry_run=dry_run,
        metrics=metrics,
        retry=FAST_RETRY,
    )
    assert cloud is not None
    return cloud


def target(world: World, node_name: str) -> Target:
    node = world.cluster.get_node(node_name)
    assert node is not None
    provider_id = node["spec"]["providerID"]
    return Target(node_name, node["metadata"]["uid"], provider_id, provider_id.rpartition("/")[2])


def aws_audit(world: World) -> list[dict[str, Any]]:
    return [line for line in world.audit.lines if line["api"] == "aws"]


async def until_done(cloud: ClusterCloud, op: Any) -> Any:
    for _ in range(50):
        status = await cloud.provider.operation_status(op)
        if status.done:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("operation never finished")


@pytest.mark.slow
async def test_resolve_repair_reboot_replace_through_the_served_endpoint(
    world: World, metrics: Metrics
) -> None:
    # endpointUrl left out of the configuration: botocore takes AWS_ENDPOINT_URL from the env.
    cloud = await build(world, metrics, endpointUrl=None)
    try:
        gpu = target(world, "gpu-0")
        instance = await cloud.provider.verify(gpu)
        assert (instance.group, instance.state) == ("gpu", "running")

        repair = await cloud.provider.repair(gpu, "systemctl restart kubelet")
        repaired = await until_done(cloud, repair)
        reboot = await cloud.provider.reboot(gpu)
        rebooted = await until_done(cloud, reboot)

        worker = target(world, "workers-1")
        replace = await cloud.provider.replace(worker)
        replaced = await until_done(cloud, replace)
    finally:
        await cloud.close()

    assert repaired.state is OperationState.SUCCEEDED
    assert "gpu-0" in repaired.output, "the command reached the instance"
    assert rebooted.state is OperationState.SUCCEEDED
    assert replaced.state is OperationState.SUCCEEDED
    audit = aws_audit(world)
    assert [(a["verb"], a["name"], a["code"]) for a in audit] == [
        ("SendCommand", gpu.instance_id, 200),
        ("RebootInstances", gpu.instance_id, 200),
        ("TerminateInstanceInAutoScalingGroup", worker.instance_id, 200),
    ]
    assert all(USER_AGENT in a["userAgent"] for a in audit)
    assert world.aws is not None
    # Capacity kept: moto launched the replacement in the same call; it joins as a new Node.
    assert world.aws.instance_of_node("workers-1") is None
    assert world.aws.node_of_instance(worker.instance_id) is None


async def test_group_not_in_the_configuration_is_refused_with_no_mutating_call(
    world: World, metrics: Metrics
) -> None:
    cloud = await build(world, metrics, autoScalingGroups=["workers"])
    try:
        for act in (
            cloud.provider.reboot(target(world, "gpu-0")),
            cloud.provider.replace(target(world, "gpu-1")),
            cloud.provider.repair(target(world, "gpu-0"), "true"),
        ):
            with pytest.raises(NotAllowed, match="'gpu'"):
                await act
    finally:
        await cloud.close()
    assert aws_audit(world) == []


async def test_node_name_reuse_is_refused(world: World, metrics: Metrics) -> None:
    cloud = await build(world, metrics)
    recorded = target(world, "workers-0")
    stale = Target(
        recorded.node_name, "uid-of-the-node-that-was-deleted", recorded.provider_id, recorded.instance_id
    )
    try:
        with pytest.raises(IdentityMismatch, match="re-created"):
            await cloud.provider.replace(stale)
    finally:
        await cloud.close()
    assert aws_audit(world) == []


async def test_throttled_calls_succeed_after_backoff(world: World, metrics: Metrics) -> None:
    cloud = await build(world, metrics)
    gpu = target(world, "gpu-0")
    try:
        await cloud.provider.verify(gpu)
        world.faults.cloud_throttle_rate = 1.0
        asyncio.get_running_loop().call_later(0.3, setattr, world.faults, "cloud_throttle_rate", 0.0)
        op = await cloud.provider.reboot(gpu)
    finally:
        await cloud.close()
    assert op.instance_id == gpu.instance_id
    throttled = sum(
        metrics.registry.get_sample_value(
            "noderescue_cloud_api_calls_total",
            {"provider": "aws", "operation": operation, "result": "throttled"},
        )
        or 0.0
        for operation in ("DescribeAutoScalingInstances", "DescribeInstances", "RebootInstances")
    )
    assert throttled >= 1
    assert [a["verb"] for a in aws_audit(world) if a["code"] == 200] == ["RebootInstances"]


async def test_dry_run_makes_no_mutating_call(world: World, metrics: Metrics) -> None:
    cloud = await build(world, metrics, dry_run=True)
    assert cloud.dry_run is not None
    gpu, worker = target(world, "gpu-0"), target(world, "workers-2")
    try:
        ops = [
            await cloud.provider.repair(gpu, "systemctl restart kubelet"),
            await cloud.provider.reboot(gpu),
            await cloud.provider.replace(worker),
        ]
        statuses = [await cloud.provider.operation_status(op) for op in ops]
    finally:
        await cloud.close()
    assert aws_audit(world) == []
    assert [(i.kind, i.instance.id, i.command) for i in cloud.dry_run.intents] == [
        ("repair", gpu.instance_id, "systemctl restart kubelet"),
        ("reboot", gpu.instance_id, None),
        ("replace", worker.instance_id, None),
    ]
    assert all(s.state is OperationState.SUCCEEDED for s in statuses)
