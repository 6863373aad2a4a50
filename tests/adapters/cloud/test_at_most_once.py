"""At most once, at the adapters: the ambiguous-failure matrix and the fence.

Real boto3 and azure-mgmt-compute against the served emulators (moto behind the audit proxy; the
ARM emulator), with targeted faults. The emulator's audit log is the witness: a line with a 2xx
code is a call the cloud applied.

For each destructive call x {500 after applying, timeout after applying, reset after applying}
the adapter raises ``AmbiguousOutcome`` and the call was applied exactly once (never re-sent);
a refusal (429 before applying) is retried and applied exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from noderescue import failpoints
from noderescue.adapters.cloud.aws import AwsProvider
from noderescue.adapters.cloud.azure import AzureProvider
from noderescue.adapters.cloud.base import (
    AmbiguousOutcome,
    Fenced,
    Instance,
    Operation,
    OperationStatus,
)
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.metrics import Metrics
from noderescue.sim.faults import FaultSpec
from noderescue.sim.world import World
from tests.adapters.cloud.test_azure import StaticCredential

RETRY = RetryPolicy(deadline_s=8.0, backoff_initial_s=0.05, backoff_max_s=0.2)
ATTEMPT_S = 1.0  # per-attempt timeouts: a held answer ends the call this fast
AMBIGUOUS = [
    pytest.param(500, id="500-after"),
    pytest.param("timeout", id="timeout-after"),
    pytest.param("reset", id="reset-after"),
]


@dataclass
class Lease:
    """A LeaseFence whose answers a test scripts (the last one repeats)."""

    answers: list[float | None]
    asked: int = 0

    def remaining_s(self) -> float | None:
        self.asked += 1
        return self.answers[min(self.asked, len(self.answers)) - 1]


def applied(world: World, verb: str) -> list[dict[str, Any]]:
    return [line for line in world.audit.lines if line["verb"] == verb and 200 <= line["code"] < 300]


def audited(world: World, verb: str) -> list[int]:
    return [line["code"] for line in world.audit.lines if line["verb"] == verb]


async def outcome(call: Awaitable[Operation | None]) -> str | Operation | None:
    """What the call did: its operation, or the name of the error it raised."""
    try:
        return await call
    except Exception as exc:  # the assertion names what was raised instead
        return type(exc).__name__


# ---- AWS ----------------------------------------------------------------------------------------


@pytest.fixture
async def aws_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    async with World.start("pets-reboot", out_dir=tmp_path, run_events=False) as w:
        for key, value in w.env().items():
            monkeypatch.setenv(key, value)
        yield w


def make_aws(world: World, fence: Lease | None = None, **kwargs: Any) -> AwsProvider:
    assert world.aws is not None
    return AwsProvider(
        world.scenario.region,
        [g.name for g in world.scenario.groups],
        endpoint_url=world.aws.endpoint,
        retry=RETRY,
        metrics=Metrics(CollectorRegistry()),
        fence=fence,
        **({"attempt_timeout_s": ATTEMPT_S} | kwargs),
    )


async def aws_instance(world: World, provider: AwsProvider, node: str) -> Instance:
    found = world.cluster.get_node(node)
    assert found is not None
    return await provider.resolve(found["spec"]["providerID"])


AwsAct = Callable[[AwsProvider, Instance], Awaitable[Operation]]
AWS_CALLS = [
    pytest.param("TerminateInstanceInAutoScalingGroup", lambda p, i: p.replace(i), id="terminate"),
    pytest.param("RebootInstances", lambda p, i: p.reboot(i), id="reboot"),
    pytest.param("SendCommand", lambda p, i: p.repair(i, "systemctl restart kubelet"), id="send-command"),
]


@pytest.mark.parametrize("error", AMBIGUOUS)
@pytest.mark.parametrize(("verb", "act"), AWS_CALLS)
async def test_aws_ambiguous_failure_is_applied_once_and_never_resent(
    aws_world: World, verb: str, act: AwsAct, error: object
) -> None:
    provider = make_aws(aws_world)
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")
        aws_world.faults.add_fault(FaultSpec(api="aws", call=verb, mode="after", error=error, node="gpu-1"))
        started = time.monotonic()
        result = await outcome(act(provider, instance))
        assert len(applied(aws_world, verb)) == 1, audited(aws_world, verb)
        assert result == "AmbiguousOutcome"
        assert time.monotonic() - started < RETRY.deadline_s  # no retrying until the deadline
    finally:
        await provider.close()


@pytest.mark.parametrize(("verb", "act"), AWS_CALLS)
async def test_aws_refusal_is_retried_and_applied_once(aws_world: World, verb: str, act: AwsAct) -> None:
    provider = make_aws(aws_world)
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")
        aws_world.faults.add_fault(FaultSpec(api="aws", call=verb, mode="before", error=429, node="gpu-1"))
        op = await act(provider, instance)
        assert isinstance(op, Operation)
        assert len(audited(aws_world, verb)) == 2 and len(applied(aws_world, verb)) == 1
    finally:
        await provider.close()


async def test_aws_ambiguous_terminate_can_be_followed_by_state(aws_world: World) -> None:
    provider = make_aws(aws_world)
    try:
        instance = await aws_instance(aws_world, provider, "workers-0")
        verb = "TerminateInstanceInAutoScalingGroup"
        aws_world.faults.add_fault(FaultSpec(api="aws", call=verb, mode="after", error=500))
        with pytest.raises(AmbiguousOutcome) as caught:
            await provider.replace(instance)
        op = caught.value.operation
        assert op is not None and op.instance_id == instance.id
        status = await provider.operation_status(op)
        assert status.done and status.detail == "instance terminated"
    finally:
        await provider.close()


@pytest.mark.parametrize(
    "lease",
    [
        pytest.param([0.0], id="not-held"),
        pytest.param([-3.0], id="expired"),
        pytest.param([ATTEMPT_S / 2], id="less-than-an-attempt-left"),
        pytest.param([30.0, 0.0], id="lost-between-attempts"),
    ],
)
async def test_aws_fenced_call_sends_nothing(aws_world: World, lease: list[float | None]) -> None:
    fence = Lease(lease)
    provider = make_aws(aws_world, fence)
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")
        # A refusal first: the second attempt must see the lease again.
        aws_world.faults.add_fault(FaultSpec(api="aws", call="RebootInstances", error=429))
        with pytest.raises(Fenced):
            await provider.reboot(instance)
        assert applied(aws_world, "RebootInstances") == []
        assert len(audited(aws_world, "RebootInstances")) == len(lease) - 1
        assert fence.asked == len(lease)
    finally:
        await provider.close()


async def test_aws_held_lease_lets_the_call_through_and_reads_are_not_fenced(aws_world: World) -> None:
    fence = Lease([0.0])
    provider = make_aws(aws_world, fence)
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")  # a read: never asks the lease
        assert fence.asked == 0
        fence.answers = [None]  # no leader election
        await provider.reboot(instance)
        fence.answers = [60.0]
        await provider.reboot(instance)
        assert len(applied(aws_world, "RebootInstances")) == 2 and fence.asked == 2
    finally:
        await provider.close()


# ---- Azure --------------------------------------------------------------------------------------


@pytest.fixture
async def azure_world(tmp_path: Path) -> AsyncIterator[World]:
    async with World.start("azure-workers", out_dir=tmp_path, run_events=False) as w:
        yield w


def make_azure(world: World, fence: Lease | None = None, **kwargs: Any) -> AzureProvider:
    assert world.azure is not None
    return AzureProvider(
        world.azure.subscription_id,
        world.azure.resource_group,
        ["workers"],
        credential=StaticCredential(),
        arm_endpoint=world.azure.endpoint,
        ca_bundle=world.azure.ca_bundle,
        retry=RETRY,
        metrics=Metrics(CollectorRegistry()),
        fence=fence,
        **({"attempt_timeout_s": ATTEMPT_S} | kwargs),
    )


async def azure_instance(world: World, provider: AzureProvider, index: str) -> Instance:
    assert world.azure is not None
    return await provider.resolve(world.azure.provider_id("workers", index))


async def until_done(provider: AzureProvider, op: Operation) -> OperationStatus:
    for _ in range(60):
        status = await provider.operation_status(op)
        if status.done:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"operation {op.id} never finished")


async def deleted_for_capacity(world: World, provider: AzureProvider) -> Operation:
    """A replace-by-delete of workers_1, done: its operation now asks for the capacity call."""
    op = await provider.replace(await azure_instance(world, provider, "1"))
    status = await until_done(provider, op)
    assert status.follow_up == "capacity", status
    return op


AzureAct = Callable[[World, AzureProvider], Awaitable[Operation | None]]


async def _restart(world: World, provider: AzureProvider) -> Operation | None:
    return await provider.reboot(await azure_instance(world, provider, "1"))


async def _reimage(world: World, provider: AzureProvider) -> Operation | None:
    return await provider.replace(await azure_instance(world, provider, "1"))


async def _delete(world: World, provider: AzureProvider) -> Operation | None:
    return await provider.replace(await azure_instance(world, provider, "1"))


async def _run_command(world: World, provider: AzureProvider) -> Operation | None:
    return await provider.repair(await azure_instance(world, provider, "1"), "systemctl restart kubelet")


async def _capacity(world: World, provider: AzureProvider) -> Operation | None:
    return await provider.follow_up(await deleted_for_capacity(world, provider), "capacity")


AZURE_CALLS = [
    pytest.param("restart", "restart", _restart, "reimage", id="restart"),
    pytest.param("reimage", "reimage", _reimage, "reimage", id="reimage"),
    pytest.param("delete", "deleteInstances", _delete, "delete", id="delete"),
    pytest.param("capacity", "update", _capacity, "delete", id="capacity"),
    pytest.param("runCommand", "runCommand", _run_command, "reimage", id="run-command"),
]


@pytest.mark.parametrize("error", AMBIGUOUS)
@pytest.mark.parametrize(("call", "verb", "act", "mode"), AZURE_CALLS)
async def test_azure_ambiguous_failure_is_applied_once_and_never_resent(
    azure_world: World, call: str, verb: str, act: AzureAct, mode: str, error: object
) -> None:
    provider = make_azure(azure_world, replace_mode=mode)
    try:
        azure_world.faults.add_fault(FaultSpec(api="azure", call=call, mode="after", error=error))
        started = time.monotonic()
        result = await outcome(act(azure_world, provider))
        assert len(applied(azure_world, verb)) == 1, audited(azure_world, verb)
        assert result == "AmbiguousOutcome"
        assert time.monotonic() - started < RETRY.deadline_s
    finally:
        await provider.close()


@pytest.mark.parametrize(("call", "verb", "act", "mode"), AZURE_CALLS)
async def test_azure_refusal_is_retried_and_applied_once(
    azure_world: World, call: str, verb: str, act: AzureAct, mode: str
) -> None:
    provider = make_azure(azure_world, replace_mode=mode)
    try:
        azure_world.faults.add_fault(FaultSpec(api="azure", call=call, mode="before", error=429))
        op = await act(azure_world, provider)
        assert isinstance(op, Operation)
        assert audited(azure_world, verb) == [429, 200 if call == "capacity" else 202]
    finally:
        await provider.close()


async def test_azure_ambiguous_delete_is_followed_by_state_to_its_capacity(azure_world: World) -> None:
    assert azure_world.azure is not None
    provider = make_azure(azure_world, replace_mode="delete")
    try:
        azure_world.faults.add_fault(FaultSpec(api="azure", call="delete", mode="after", error="reset"))
        with pytest.raises(AmbiguousOutcome) as caught:
            await _delete(azure_world, provider)
        op = caught.value.operation
        assert op is not None
        status = await until_done(provider, op)  # no URL: done once the VM is gone
        assert status.follow_up == "capacity"
        follow = await provider.follow_up(op, "capacity")
        assert follow is not None and (await until_done(provider, follow)).follow_up is None
        assert len(applied(azure_world, "update")) == 1
        assert len(azure_world.azure._scale_sets["workers"].vms) == 4
    finally:
        await provider.close()


@pytest.mark.parametrize(
    "lease",
    [
        pytest.param([0.0], id="not-held"),
        pytest.param([30.0, -1.0], id="lost-between-attempts"),
    ],
)
async def test_azure_fenced_call_sends_nothing(azure_world: World, lease: list[float | None]) -> None:
    fence = Lease(lease)
    provider = make_azure(azure_world, fence)
    try:
        azure_world.faults.add_fault(FaultSpec(api="azure", call="restart", error=429))
        with pytest.raises(Fenced):
            await _restart(azure_world, provider)
        assert applied(azure_world, "restart") == []
        assert len(audited(azure_world, "restart")) == len(lease) - 1
    finally:
        await provider.close()


async def test_azure_attempt_is_bounded_by_the_lease(azure_world: World) -> None:
    """The per-request timeouts come from the lease: a held answer ends when the lease would."""
    fence = Lease([1.5])
    provider = make_azure(azure_world, fence, attempt_timeout_s=30.0)
    try:
        azure_world.faults.add_fault(FaultSpec(api="azure", call="restart", mode="after", error="timeout"))
        started = time.monotonic()
        with pytest.raises(AmbiguousOutcome):
            await _restart(azure_world, provider)
        assert 1.2 < time.monotonic() - started < 10.0  # the lease, not the 30 s attempt bound
        assert len(applied(azure_world, "restart")) == 1
    finally:
        await provider.close()


# ---- failpoints and the SDKs' own retries ------------------------------------------------------


@pytest.mark.parametrize(("point", "applied_calls"), [("before", 0), ("after", 1)])
async def test_failpoints_sit_right_before_and_after_the_call(
    aws_world: World, tmp_path: Path, point: str, applied_calls: int
) -> None:
    provider = make_aws(aws_world)
    trace = tmp_path / "trace"
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")
        failpoints.arm(f"cloud.aws.reboot.{point}=raise", trace=str(trace))
        try:
            with pytest.raises(failpoints.FailpointError):
                await provider.reboot(instance)
        finally:
            failpoints.arm("")
        assert len(applied(aws_world, "RebootInstances")) == applied_calls
        reached = trace.read_text().split()
        assert reached == ["cloud.aws.reboot.before"] + (
            ["cloud.aws.reboot.after"] if point == "after" else []
        )
    finally:
        await provider.close()


async def test_every_aws_destructive_call_passes_its_failpoints(aws_world: World, tmp_path: Path) -> None:
    provider = make_aws(aws_world)
    trace = tmp_path / "trace"
    failpoints.arm("", trace=str(trace))
    try:
        instance = await aws_instance(aws_world, provider, "gpu-1")
        aws_world.faults.add_fault(FaultSpec(api="aws", call="RebootInstances", error=429))
        await provider.repair(instance, "true")
        await provider.reboot(instance)  # refused once: two attempts
        await provider.replace(instance)
    finally:
        failpoints.arm("")
        await provider.close()
    assert trace.read_text().split() == [
        "cloud.aws.send_command.before",
        "cloud.aws.send_command.after",
        "cloud.aws.reboot.before",
        "cloud.aws.reboot.after",
        "cloud.aws.reboot.before",
        "cloud.aws.reboot.after",
        "cloud.aws.terminate.before",
        "cloud.aws.terminate.after",
    ]


async def test_every_azure_destructive_call_passes_its_failpoints(azure_world: World, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    reimaging, deleting = make_azure(azure_world), make_azure(azure_world, replace_mode="delete")
    failpoints.arm("", trace=str(trace))
    try:
        await _run_command(azure_world, reimaging)
        await _restart(azure_world, reimaging)
        await _reimage(azure_world, reimaging)
        await _capacity(azure_world, deleting)
    finally:
        failpoints.arm("")
        await reimaging.close()
        await deleting.close()
    calls = ["run_command", "restart", "reimage", "delete", "capacity"]
    assert trace.read_text().split() == [f"cloud.azure.{c}.{w}" for c in calls for w in ("before", "after")]


async def test_no_sdk_layer_sends_a_request_again(aws_world: World, tmp_path: Path) -> None:
    """botocore makes one attempt per call (and hands urllib3 no retries); azure-core's retry
    policy, in the client's one pipeline that the initial requests of LROs, the reads and the
    operation polls (``send_request``) all go through, makes none. The matrix above is the
    behavioural witness for the mutating calls."""
    aws = make_aws(aws_world)
    try:
        for client in (aws._asg, aws._ec2, aws._ssm):
            config: Any = client.meta.config
            assert config.retries == {"mode": "standard", "total_max_attempts": 1}
            assert config.read_timeout == ATTEMPT_S
    finally:
        await aws.close()
    async with World.start("azure-workers", out_dir=tmp_path / "azure", run_events=False) as world:
        azure = make_azure(world)
        try:
            assert azure._client._config.retry_policy.total_retries == 0
        finally:
            await azure.close()
