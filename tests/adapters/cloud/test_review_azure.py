"""Review findings on the Azure adapter, against the ARM emulator of ``noderescue.sim``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceResponseError
from prometheus_client import CollectorRegistry

from noderescue.adapters.cloud.azure import AzureProvider
from noderescue.adapters.cloud.base import AmbiguousOutcome, Operation, OperationState, OperationStatus
from noderescue.adapters.cloud.factory import build_provider
from noderescue.adapters.cloud.guard import NodeIdentity
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.config import ClusterSettings
from noderescue.metrics import Metrics
from noderescue.sim.world import World

FAST_RETRY = RetryPolicy(deadline_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05)
SCALE_SET = "workers"


class StaticCredential:
    """An AsyncTokenCredential with a fixed token (the emulator accepts any)."""

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        pass


class NoNodes:
    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        return None


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World.start("azure-workers", out_dir=tmp_path, run_events=False) as w:
        yield w


def azure_mutations(world: World) -> list[str]:
    return [line["verb"] for line in world.audit.lines if line["api"] == "azure"]


async def until_done(poll: Any, op: Operation) -> OperationStatus:
    for _ in range(50):
        status: OperationStatus = await poll(op)
        if status.done:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"operation {op.id} never finished")


async def test_dry_run_daemon_following_a_real_delete_does_not_restore_capacity(world: World) -> None:
    """A replace by delete was started for real; the daemon then restarts with --dry-run (an SRE
    stopping the automation) and follows the stored operation. Following it is a read; restoring
    the scale set's capacity is a mutating call that dry-run must not make (DESIGN §4)."""
    assert world.azure is not None
    metrics = Metrics(CollectorRegistry())
    real = AzureProvider(
        world.azure.subscription_id,
        world.azure.resource_group,
        [SCALE_SET],
        credential=StaticCredential(),
        arm_endpoint=world.azure.endpoint,
        ca_bundle=world.azure.ca_bundle,
        replace_mode="delete",
        retry=FAST_RETRY,
        metrics=metrics,
    )
    try:
        instance = await real.resolve(world.azure.provider_id(SCALE_SET, "3"))
        stored = (await real.replace(instance)).to_str()
    finally:
        await real.close()
    assert azure_mutations(world) == ["deleteInstances"]

    raw = world.daemon_config()["clusters"][0]
    raw["azure"] = {**raw["azure"], "replaceMode": "delete"}
    settings = ClusterSettings.model_validate(raw)
    cloud = await build_provider(
        settings,
        NoNodes(),
        dry_run=True,
        metrics=metrics,
        azure_credential=StaticCredential(),
        retry=FAST_RETRY,
    )
    assert cloud is not None
    try:
        status = await until_done(cloud.provider.operation_status, Operation.from_str(stored))
    finally:
        await cloud.close()

    assert status.state is OperationState.SUCCEEDED
    assert "dry run" in status.detail
    assert azure_mutations(world) == ["deleteInstances"], "dry-run made a mutating call"


async def test_replace_by_delete_whose_response_was_lost_still_restores_capacity(world: World) -> None:
    """The delete reached ARM and took effect, the response was lost (connection reset). It is
    not sent again; the operation given with the ambiguity is followed by state (the VM is gone)
    and still ends with the capacity restored (else the scale set silently shrinks by one and the
    node is handed to a human as a failed replace)."""
    assert world.azure is not None
    provider = AzureProvider(
        world.azure.subscription_id,
        world.azure.resource_group,
        [SCALE_SET],
        credential=StaticCredential(),
        arm_endpoint=world.azure.endpoint,
        ca_bundle=world.azure.ca_bundle,
        replace_mode="delete",
        retry=FAST_RETRY,
        metrics=Metrics(CollectorRegistry()),
    )
    scale_sets = provider._client.virtual_machine_scale_sets
    real_delete = scale_sets.begin_delete_instances
    lost: list[bool] = []

    async def delete_then_lose_the_response(*args: Any, **kwargs: Any) -> Any:
        result = await real_delete(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise ServiceResponseError("Connection reset by peer (injected after the delete)")
        return result

    scale_sets.begin_delete_instances = delete_then_lose_the_response  # type: ignore[method-assign]
    try:
        capacity_before = await provider._capacity(world.azure.resource_group, SCALE_SET)
        instance = await provider.resolve(world.azure.provider_id(SCALE_SET, "3"))
        with pytest.raises(AmbiguousOutcome) as caught:
            await provider.replace(instance)
        op = caught.value.operation
        assert op is not None
        status = await until_done(provider.operation_status, op)
        assert status.follow_up == "capacity"
        restore = await provider.follow_up(op, "capacity")
        assert restore is not None
        await until_done(provider.operation_status, restore)
        capacity_after = await provider._capacity(world.azure.resource_group, SCALE_SET)
    finally:
        await provider.close()

    assert lost == [True]
    assert status.state is OperationState.SUCCEEDED
    assert capacity_after == capacity_before
    assert azure_mutations(world) == ["deleteInstances", "update"]


async def test_operation_urls_on_another_spelling_of_the_endpoint_do_not_fail_a_done_restart(
    world: World,
) -> None:
    """ARM answered the restart (it happened) with operation URLs on another spelling of its
    host (configured ``localhost``, answered ``127.0.0.1``; a regional endpoint answered by the
    global one). Refusing them *after* the call reported a restart that happened as failed, and
    the runtime would restart the VM again. The URLs are moved onto the configured endpoint
    (the bearer token still never leaves it) and the operation is followed to its end."""
    assert world.azure is not None
    endpoint = world.azure.endpoint
    assert endpoint.startswith("https://127.0.0.1:")
    provider = AzureProvider(
        world.azure.subscription_id,
        world.azure.resource_group,
        [SCALE_SET],
        credential=StaticCredential(),
        arm_endpoint=endpoint.replace("127.0.0.1", "localhost"),
        ca_bundle=world.azure.ca_bundle,
        retry=FAST_RETRY,
        metrics=Metrics(CollectorRegistry()),
    )
    try:
        instance = await provider.resolve(world.azure.provider_id(SCALE_SET, "0"))
        op = await provider.reboot(instance)
        status = await until_done(provider.operation_status, op)
    finally:
        await provider.close()

    assert status.state is OperationState.SUCCEEDED
    assert "127.0.0.1" not in op.token
    assert azure_mutations(world) == ["restart"]
