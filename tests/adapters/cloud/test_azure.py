"""AzureProvider: azure-mgmt-compute .aio against the ARM emulator of ``noderescue.sim`` (HTTPS,
self-signed CA, LROs with Retry-After: 1), through ``World``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AccessToken
from prometheus_client import CollectorRegistry

from noderescue import USER_AGENT
from noderescue.adapters.cloud.azure import AzureProvider
from noderescue.adapters.cloud.base import (
    AmbiguousOutcome,
    DeadlineExceeded,
    Instance,
    InstanceNotFound,
    InstanceState,
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
)
from noderescue.adapters.cloud.dryrun import DryRunProvider
from noderescue.adapters.cloud.factory import build_provider
from noderescue.adapters.cloud.guard import GuardedProvider, NodeIdentity, Target
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.config import ClusterSettings
from noderescue.metrics import Metrics
from noderescue.sim.tls import make_server_tls
from noderescue.sim.world import World

FAST_RETRY = RetryPolicy(deadline_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05)
SCALE_SET = "workers"


class StaticCredential:
    """An AsyncTokenCredential that hands out a fixed token (the emulator accepts any)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        pass


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World.start("azure-workers", out_dir=tmp_path, run_events=False) as w:
        yield w


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def make_provider(world: World, metrics: Metrics, **overrides: Any) -> AzureProvider:
    assert world.azure is not None
    kwargs: dict[str, Any] = {
        "credential": StaticCredential(),
        "arm_endpoint": world.azure.endpoint,
        "ca_bundle": world.azure.ca_bundle,
        "retry": FAST_RETRY,
        "metrics": metrics,
    } | overrides
    return AzureProvider(world.azure.subscription_id, world.azure.resource_group, [SCALE_SET], **kwargs)


@pytest.fixture
async def provider(world: World, metrics: Metrics) -> AsyncIterator[AzureProvider]:
    azure = make_provider(world, metrics)
    yield azure
    await azure.close()


def provider_id(world: World, instance: str) -> str:
    assert world.azure is not None
    return world.azure.provider_id(SCALE_SET, instance)


def azure_audit(world: World) -> list[dict[str, Any]]:
    return [line for line in world.audit.lines if line["api"] == "azure"]


async def until_done(provider: AzureProvider | GuardedProvider, op: Operation) -> tuple[OperationStatus, int]:
    """Poll as the runtime does (the emulator asks for Retry-After: 1; its operations take 0.2 s)."""
    for polls in range(1, 50):
        status = await provider.operation_status(op)
        if status.done:
            return status, polls
        await asyncio.sleep(0.1)
    raise AssertionError(f"operation {op.id} never finished")


def count(metrics: Metrics, operation: str, result: str) -> float:
    labels = {"provider": "azure", "operation": operation, "result": result}
    return metrics.registry.get_sample_value("noderescue_cloud_api_calls_total", labels) or 0.0


async def test_resolve_reads_the_scale_set_vm(world: World, provider: AzureProvider) -> None:
    pid = provider_id(world, "0")

    instance = await provider.resolve(pid)

    assert instance == Instance(
        id=f"{SCALE_SET}_0",
        group=SCALE_SET,
        zone="westeurope-1",
        state=InstanceState.RUNNING,
        provider_id=pid,
    )


async def test_resolve_accepts_lowercased_resource_group(world: World, provider: AzureProvider) -> None:
    assert world.azure is not None
    pid = provider_id(world, "1").replace(world.azure.resource_group, world.azure.resource_group.lower())
    assert pid != provider_id(world, "1")

    assert (await provider.resolve(pid)).id == f"{SCALE_SET}_1"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        pytest.param(
            lambda pid: pid.replace(f"/{SCALE_SET}/", "/gpu/"), "scale set 'gpu'", id="other-scale-set"
        ),
        pytest.param(
            lambda pid: pid.replace("/resourceGroups/noderescue-sim-RG/", "/resourceGroups/other-rg/"),
            "resource group other-rg",
            id="other-resource-group",
        ),
        pytest.param(
            lambda pid: pid.replace(
                "00000000-0000-0000-0000-00000000cafe", "11111111-0000-0000-0000-000000000000"
            ),
            "subscription",
            id="other-subscription",
        ),
    ],
)
async def test_outside_the_configuration_is_refused_without_a_request(
    world: World, provider: AzureProvider, metrics: Metrics, mangle: Any, reason: str
) -> None:
    pid = mangle(provider_id(world, "0"))
    assert pid != provider_id(world, "0")
    forged = Instance("x_0", SCALE_SET, None, InstanceState.RUNNING, pid)

    with pytest.raises(NotAllowed, match=reason):
        await provider.resolve(pid)
    for mutate in (provider.reboot(forged), provider.replace(forged), provider.repair(forged, "true")):
        with pytest.raises(NotAllowed):
            await mutate
    assert azure_audit(world) == []
    assert metrics.registry.get_sample_value("noderescue_cloud_api_calls_total", {}) is None


async def test_resolve_of_a_deleted_vm_is_not_found(world: World, provider: AzureProvider) -> None:
    with pytest.raises(InstanceNotFound):
        await provider.resolve(provider_id(world, "99"))


async def test_repair_runs_the_command_and_returns_its_output(world: World, provider: AzureProvider) -> None:
    instance = await provider.resolve(provider_id(world, "2"))

    op = await provider.repair(instance, "systemctl restart kubelet")
    first = await provider.operation_status(op)
    status, _ = await until_done(provider, op)

    assert first == OperationStatus(OperationState.PENDING, detail="InProgress", retry_after_s=1.0)
    assert status.state is OperationState.SUCCEEDED
    assert "ran 1 line(s)" in status.output
    audit = azure_audit(world)
    assert [(a["verb"], a["name"], a["code"]) for a in audit] == [("runCommand", "workers/2", 202)]
    assert audit[0]["userAgent"].startswith(USER_AGENT)


async def test_reboot_restarts_the_vm(world: World, provider: AzureProvider) -> None:
    instance = await provider.resolve(provider_id(world, "1"))

    op = await provider.reboot(instance)
    status, _ = await until_done(provider, op)

    assert status.state is OperationState.SUCCEEDED
    # The emulator turns the restart into a reboot of the Node (bootID changes after
    # bootSeconds: the runtime's verification, not this adapter's).
    assert [(a["verb"], a["name"], a["code"]) for a in azure_audit(world)] == [("restart", "workers/1", 202)]


async def test_replace_by_reimage(world: World, provider: AzureProvider) -> None:
    instance = await provider.resolve(provider_id(world, "3"))

    op = await provider.replace(instance)
    status, _ = await until_done(provider, op)

    assert op.kind is OperationKind.REPLACE
    assert status.state is OperationState.SUCCEEDED
    assert [(a["verb"], a["name"]) for a in azure_audit(world)] == [("reimage", "workers/3")]


async def test_replace_by_delete_restores_capacity(world: World, metrics: Metrics) -> None:
    provider = make_provider(world, metrics, replace_mode="delete")
    try:
        instance = await provider.resolve(provider_id(world, "3"))
        op = await provider.replace(instance)
        status, _ = await until_done(provider, op)
        with pytest.raises(InstanceNotFound):
            await provider.resolve(provider_id(world, "3"))
        # The capacity is a destructive call of its own: asked for, not made by the status poll.
        assert status.follow_up == "capacity"
        assert [a["verb"] for a in azure_audit(world)] == ["deleteInstances"]
        restore = await provider.follow_up(op, "capacity")
        assert restore is not None
        restored, _ = await until_done(provider, restore)
        replacement = await provider.resolve(provider_id(world, "4"))
        # Done: the same operation asks for nothing more, and a repeated follow-up sends nothing.
        assert (await provider.operation_status(op)).follow_up is None
        assert await provider.follow_up(op, "capacity") is None
    finally:
        await provider.close()

    assert status.state is OperationState.SUCCEEDED and restored.state is OperationState.SUCCEEDED
    assert restored.follow_up is None
    assert [a["verb"] for a in azure_audit(world)] == ["deleteInstances", "update"]
    assert replacement.group == SCALE_SET


@pytest.mark.parametrize(
    ("before", "current", "expected"),
    [
        pytest.param(4, 3, 4, id="one-below"),
        pytest.param(6, 3, 4, id="never-more-than-one-up"),
        pytest.param(4, 4, None, id="already-there"),
        pytest.param(2, 3, None, id="never-above-the-capacity-before"),
    ],
)
async def test_capacity_follow_up_is_bounded(
    world: World, provider: AzureProvider, before: int, current: int, expected: int | None
) -> None:
    """The token (stored by the runtime in its own namespace) may say more than the delete
    removed, or a scale-in may have happened since: the capacity only ever goes one step up,
    and never above what it was before the delete."""
    assert world.azure is not None
    scale_set = world.azure._scale_sets[SCALE_SET]
    world.azure._set_capacity(scale_set, current)
    instance = Instance("workers_0", SCALE_SET, None, InstanceState.RUNNING, provider_id(world, "0"))
    op = Operation(
        id="x",
        kind=OperationKind.REPLACE,
        instance_id=instance.id,
        started=time.time(),
        provider="azure",
        token=f'{{"async_url":"","location":"","restore_capacity":{before}}}',
    )
    follow = await provider.follow_up(op, "capacity")
    assert (follow is None) == (expected is None)
    updates = [a for a in azure_audit(world) if a["verb"] == "update"]
    assert len(updates) == (0 if expected is None else 1)
    if expected is not None:
        assert len(scale_set.vms) == expected
    with pytest.raises(ValueError, match="no follow-up call"):
        await provider.follow_up(op, "reboot")


async def test_operation_resumes_after_a_restart(world: World, metrics: Metrics) -> None:
    first = make_provider(world, metrics)
    instance = await first.resolve(provider_id(world, "0"))
    stored = (await first.reboot(instance)).to_str()
    await first.close()

    second = make_provider(world, metrics)
    try:
        status, _ = await until_done(second, Operation.from_str(stored))
    finally:
        await second.close()
    assert status.state is OperationState.SUCCEEDED
    assert len(azure_audit(world)) == 1, "resuming must not repeat the restart"


async def test_operation_url_off_the_arm_endpoint_is_never_polled(
    world: World, provider: AzureProvider
) -> None:
    """A tampered record must not send our bearer token elsewhere."""
    instance = await provider.resolve(provider_id(world, "0"))
    op = await provider.reboot(instance)
    forged = replace(op, token=op.token.replace("https://127.0.0.1", "https://attacker.invalid"))

    with pytest.raises(RequestRejected, match="not on the ARM endpoint"):
        await provider.operation_status(forged)


async def test_throttled_initial_request_waits_for_retry_after(
    world: World, provider: AzureProvider, metrics: Metrics
) -> None:
    instance = await provider.resolve(provider_id(world, "1"))
    world.faults.retry_after_s = 1
    world.faults.cloud_throttle_rate = 1.0
    asyncio.get_running_loop().call_later(0.3, setattr, world.faults, "cloud_throttle_rate", 0.0)

    started = time.monotonic()
    op = await provider.reboot(instance)
    elapsed = time.monotonic() - started

    assert op.kind is OperationKind.REBOOT
    assert elapsed >= 1.0, "Retry-After: 1 was honoured"
    assert elapsed < FAST_RETRY.deadline_s
    codes = [a["code"] for a in azure_audit(world)]
    assert codes[0] == 429
    assert codes[-1] == 202
    assert count(metrics, "vmss_vm.restart", "throttled") >= 1
    assert count(metrics, "vmss_vm.restart", "ok") == 1


async def test_dry_run_makes_no_azure_request(world: World, provider: AzureProvider) -> None:
    pid = provider_id(world, "0")
    node = world.cluster.get_node("workers-0")
    assert node is not None
    uid = node["metadata"]["uid"]

    class Nodes:
        async def get_node_identity(self, name: str) -> NodeIdentity | None:
            return NodeIdentity(uid, pid) if name == "workers-0" else None

    dry = DryRunProvider(provider)
    guarded = GuardedProvider(dry, Nodes())
    target = Target("workers-0", uid, pid, f"{SCALE_SET}_0")
    for kind in OperationKind:
        op = await guarded.act(kind, target, command="true")
        assert (await guarded.operation_status(op)).state is OperationState.SUCCEEDED

    assert [i.kind for i in dry.intents] == list(OperationKind)
    assert azure_audit(world) == []


# --------------------------------------------------------------------------------------------
# A server that always fails: the emulator has no 5xx switch for its ARM side.
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def failing_arm(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    tls = await asyncio.to_thread(make_server_tls, tmp_path / "ca.pem")
    seen: list[str] = []

    async def unavailable(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.json_response(
            {"error": {"code": "ServiceUnavailable", "message": "try later"}}, status=503
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", tls.ca_bundle, seen
    finally:
        await runner.cleanup()


async def test_repeated_5xx_past_the_deadline_is_a_typed_failure(
    failing_arm: tuple[str, Path, list[str]], metrics: Metrics
) -> None:
    """A read retries 5xx until the deadline; a mutating call is never sent twice after one."""
    endpoint, ca_bundle, seen = failing_arm
    provider = AzureProvider(
        "sub",
        "rg",
        [SCALE_SET],
        credential=StaticCredential(),
        arm_endpoint=endpoint,
        ca_bundle=ca_bundle,
        retry=RetryPolicy(deadline_s=0.6, backoff_initial_s=0.02, backoff_max_s=0.1),
        metrics=metrics,
    )
    pid = "azure:///subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/workers/virtualMachines/0"
    instance = Instance(f"{SCALE_SET}_0", SCALE_SET, None, InstanceState.RUNNING, pid)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded, match="ServiceUnavailable"):
            await provider.resolve(pid)
        elapsed = time.monotonic() - started
        reads = len(seen)
        with pytest.raises(AmbiguousOutcome, match="ServiceUnavailable"):
            await provider.reboot(instance)
    finally:
        await provider.close()
    assert elapsed < 1.5
    assert reads >= 3 and seen[reads:] == ["POST"]
    assert count(metrics, "vmss_vm.get", "server_error") == reads
    assert count(metrics, "vmss_vm.restart", "server_error") == 1


async def test_build_provider_from_the_configuration(world: World, metrics: Metrics) -> None:
    settings = ClusterSettings.model_validate(world.daemon_config()["clusters"][0])
    credential = StaticCredential()
    node = world.cluster.get_node("workers-0")
    assert node is not None
    identity = NodeIdentity(node["metadata"]["uid"], node["spec"]["providerID"])

    class Nodes:
        async def get_node_identity(self, name: str) -> NodeIdentity | None:
            return identity if name == "workers-0" else None

    cloud = await build_provider(
        settings, Nodes(), dry_run=False, metrics=metrics, azure_credential=credential
    )
    assert cloud is not None
    try:
        target = Target("workers-0", node["metadata"]["uid"], node["spec"]["providerID"], f"{SCALE_SET}_0")
        instance = await cloud.provider.verify(target)
    finally:
        await cloud.close()
    assert cloud.dry_run is None
    assert instance.group == SCALE_SET
    # The token audience follows the configured ARM endpoint (sovereign clouds, Azure Stack).
    assert world.azure is not None
    assert credential.scopes[0] == (f"{world.azure.endpoint}/.default",)


async def test_provider_none_has_no_cloud() -> None:
    settings = ClusterSettings.model_validate({"name": "bare", "provider": "none"})

    class NoNodes:
        async def get_node_identity(self, name: str) -> NodeIdentity | None:
            return None

    assert await build_provider(settings, NoNodes(), dry_run=False) is None


async def test_forgotten_operation_is_reported_failed(world: World, provider: AzureProvider) -> None:
    instance = await provider.resolve(provider_id(world, "0"))
    op = await provider.reboot(instance)
    forgotten = replace(op, token=op.token.replace(op.id, "00000000-0000-0000-0000-000000000000"))
    assert forgotten.token != op.token

    status = await provider.operation_status(forgotten)

    assert status.state is OperationState.FAILED
    assert "not found" in status.detail
