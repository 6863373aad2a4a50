"""AwsProvider against in-process moto: boto3's real request path, moto's ASG/EC2/SSM behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from noderescue import USER_AGENT
from noderescue.adapters.cloud.aws import AwsProvider
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
    RequestRejected,
    UnsupportedProviderId,
)
from noderescue.adapters.cloud.retry import RetryPolicy
from tests.adapters.cloud.conftest import ALLOWED_GROUP, OTHER_GROUP, REGION, AwsWorld, setup_client

FAST_RETRY = RetryPolicy(deadline_s=2.0, backoff_initial_s=0.01, backoff_max_s=0.05)


@pytest.fixture
async def provider(aws_world: AwsWorld) -> AsyncIterator[AwsProvider]:
    aws = AwsProvider(
        REGION, [ALLOWED_GROUP], retry=FAST_RETRY, metrics=aws_world.metrics, session=aws_world.session
    )
    yield aws
    await aws.close()


async def test_resolve_finds_group_zone_and_state(aws_world: AwsWorld, provider: AwsProvider) -> None:
    instance_id = aws_world.allowed_instances[0]
    provider_id = aws_world.provider_id(instance_id)

    instance = await provider.resolve(provider_id)

    assert instance == Instance(
        id=instance_id,
        group=ALLOWED_GROUP,
        zone=provider_id.split("/")[3],
        state=InstanceState.RUNNING,
        provider_id=provider_id,
    )
    assert aws_world.log.calls == ["DescribeAutoScalingInstances", "DescribeInstances"]
    assert aws_world.calls_counted("DescribeAutoScalingInstances", "ok") == 1


async def test_user_agent_names_noderescue(aws_world: AwsWorld, provider: AwsProvider) -> None:
    seen: list[str] = []

    def capture(request: object, **_: object) -> None:
        seen.append(request.headers["User-Agent"].decode())  # type: ignore[attr-defined]

    aws_world.session.events.register("before-send", capture)
    # Clients were created before the hook: build a fresh provider from the same session.
    fresh = AwsProvider(REGION, [ALLOWED_GROUP], metrics=aws_world.metrics, session=aws_world.session)
    try:
        await fresh.instance_state(
            Instance("i-0123456789abcdef0", ALLOWED_GROUP, None, InstanceState.UNKNOWN, "")
        )
    finally:
        await fresh.close()
    assert seen
    assert all(USER_AGENT in ua for ua in seen)


def _instance_of_other_group(aws_world: AwsWorld) -> str:
    return aws_world.other_instances[0]


def _instance_in_no_group(aws_world: AwsWorld) -> str:
    ec2 = setup_client("ec2")
    reservation = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.small")
    return str(reservation["Instances"][0]["InstanceId"])


@pytest.mark.parametrize(
    ("instance_of", "reason"),
    [
        pytest.param(_instance_of_other_group, f"group '{OTHER_GROUP}'", id="group-not-configured"),
        pytest.param(_instance_in_no_group, "in no Auto Scaling group", id="standalone-instance"),
    ],
)
async def test_resolve_refuses_instance_outside_allowed_groups(
    aws_world: AwsWorld, provider: AwsProvider, instance_of: Callable[[AwsWorld], str], reason: str
) -> None:
    provider_id = aws_world.provider_id(instance_of(aws_world))
    with pytest.raises(NotAllowed, match=reason):
        await provider.resolve(provider_id)
    assert aws_world.log.mutating == []


async def test_resolve_unknown_instance_is_not_found(provider: AwsProvider) -> None:
    with pytest.raises(InstanceNotFound):
        await provider.resolve(f"aws:///{REGION}a/i-0000000000000dead")


async def test_resolve_rejects_foreign_provider_id(aws_world: AwsWorld, provider: AwsProvider) -> None:
    with pytest.raises(UnsupportedProviderId):
        await provider.resolve("azure:///subscriptions/s/resourceGroups/rg/providers/x")
    assert aws_world.log.calls == []


async def test_mutation_with_instance_from_other_group_makes_no_call(
    aws_world: AwsWorld, provider: AwsProvider
) -> None:
    forged = Instance(aws_world.other_instances[0], OTHER_GROUP, None, InstanceState.RUNNING, "")
    for mutate in (provider.reboot(forged), provider.replace(forged), provider.repair(forged, "true")):
        with pytest.raises(NotAllowed):
            await mutate
    assert aws_world.log.calls == []


async def test_repair_sends_command_and_polls_to_completion(
    aws_world: AwsWorld, provider: AwsProvider
) -> None:
    instance = await provider.resolve(aws_world.provider_id(aws_world.allowed_instances[0]))

    op = await provider.repair(instance, "systemctl restart kubelet")

    assert op.kind is OperationKind.REPAIR
    assert op.instance_id == instance.id
    assert aws_world.log.mutating == ["SendCommand"]
    ssm = setup_client("ssm")
    command = ssm.list_commands(CommandId=op.id)["Commands"][0]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Parameters"]["commands"] == ["systemctl restart kubelet"]
    status = await provider.operation_status(op)
    assert status.state is OperationState.SUCCEEDED
    assert "GetCommandInvocation" in aws_world.log.calls


async def test_reboot_calls_reboot_instances(aws_world: AwsWorld, provider: AwsProvider) -> None:
    instance = await provider.resolve(aws_world.provider_id(aws_world.allowed_instances[1]))

    op = await provider.reboot(instance)

    assert aws_world.log.mutating == ["RebootInstances"]
    assert op.kind is OperationKind.REBOOT
    assert (await provider.operation_status(op)).state is OperationState.SUCCEEDED


async def test_replace_terminates_keeps_capacity_and_launches_replacement(
    aws_world: AwsWorld, provider: AwsProvider
) -> None:
    victim = aws_world.allowed_instances[2]
    instance = await provider.resolve(aws_world.provider_id(victim))

    op = await provider.replace(instance)

    assert aws_world.log.mutating == ["TerminateInstanceInAutoScalingGroup"]
    group = aws_world.group(ALLOWED_GROUP)
    members = {i["InstanceId"] for i in group["Instances"]}
    assert group["DesiredCapacity"] == 3
    assert victim not in members
    assert len(members) == 3
    assert members - set(aws_world.allowed_instances), "no replacement launched"
    assert aws_world.describe(victim)["State"]["Name"] == "terminated"
    status = await provider.operation_status(op)
    assert status.state is OperationState.SUCCEEDED
    assert await provider.instance_state(instance) is InstanceState.TERMINATED


async def test_operation_survives_a_restart_as_a_string(aws_world: AwsWorld, provider: AwsProvider) -> None:
    instance = await provider.resolve(aws_world.provider_id(aws_world.allowed_instances[0]))
    op = await provider.repair(instance, "true")
    stored = op.to_str()
    await provider.close()

    restarted = AwsProvider(REGION, [ALLOWED_GROUP], metrics=aws_world.metrics, session=aws_world.session)
    try:
        status = await restarted.operation_status(Operation.from_str(stored))
    finally:
        await restarted.close()
    assert status.state is OperationState.SUCCEEDED
    assert aws_world.log.mutating == ["SendCommand"], "resuming must not repeat the command"


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("Throttling", id="Throttling"),
        pytest.param("ThrottlingException", id="ThrottlingException"),
        pytest.param("RequestLimitExceeded", id="RequestLimitExceeded"),
        pytest.param("RateExceeded", id="RateExceeded"),
    ],
)
async def test_throttling_is_retried_until_success(
    aws_world: AwsWorld, provider: AwsProvider, code: str
) -> None:
    instance = await provider.resolve(aws_world.provider_id(aws_world.allowed_instances[1]))
    aws_world.log.fail("RebootInstances", 400, code, times=3)

    await provider.reboot(instance)

    assert aws_world.log.mutating == ["RebootInstances"] * 4
    assert aws_world.calls_counted("RebootInstances", "throttled") == 3
    assert aws_world.calls_counted("RebootInstances", "ok") == 1


async def test_repeated_5xx_past_the_deadline_is_a_typed_failure_not_a_hang(
    aws_world: AwsWorld,
) -> None:
    policy = RetryPolicy(deadline_s=0.5, backoff_initial_s=0.02, backoff_max_s=0.1)
    provider = AwsProvider(
        REGION, [ALLOWED_GROUP], retry=policy, metrics=aws_world.metrics, session=aws_world.session
    )
    try:
        aws_world.log.fail("DescribeAutoScalingInstances", 503, "ServiceUnavailable", times=1000)
        provider_id = aws_world.provider_id(aws_world.allowed_instances[0])
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="ServiceUnavailable"):
            await provider.resolve(provider_id)
        elapsed = time.monotonic() - started
    finally:
        await provider.close()
    assert elapsed < 1.5  # deadline 0.5 s, with slack for a busy machine
    assert aws_world.calls_counted("DescribeAutoScalingInstances", "server_error") >= 3


async def test_client_error_is_not_retried(aws_world: AwsWorld, provider: AwsProvider) -> None:
    instance = await provider.resolve(aws_world.provider_id(aws_world.allowed_instances[1]))
    aws_world.log.fail("RebootInstances", 403, "UnauthorizedOperation", times=5)

    with pytest.raises(RequestRejected, match="UnauthorizedOperation"):
        await provider.reboot(instance)
    assert aws_world.log.mutating == ["RebootInstances"]


async def test_calls_do_not_block_the_event_loop(aws_world: AwsWorld, provider: AwsProvider) -> None:
    """Ticks of the loop keep coming while boto3 works in the thread pool."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    provider_id = aws_world.provider_id(aws_world.allowed_instances[0])
    await asyncio.gather(*(provider.resolve(provider_id) for _ in range(8)))
    stop.set()
    await task
    assert ticks > 8


async def test_hung_endpoint_is_cut_off_at_the_deadline(aws_world: AwsWorld) -> None:
    policy = RetryPolicy(deadline_s=0.3, backoff_initial_s=0.01)
    provider = AwsProvider(
        REGION, [ALLOWED_GROUP], retry=policy, metrics=aws_world.metrics, session=aws_world.session
    )
    forged = Instance(aws_world.allowed_instances[0], ALLOWED_GROUP, None, InstanceState.RUNNING, "")
    aws_world.log.hangs["DescribeInstances"] = 1.0
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await provider.instance_state(forged)
        elapsed = time.monotonic() - started
    finally:
        aws_world.log.hangs.clear()
        await provider.close()
    assert elapsed < 0.9, "the caller is freed at the deadline, not when the thread returns"
    assert aws_world.calls_counted("DescribeInstances", "timeout") == 1


async def test_cancellation_propagates(aws_world: AwsWorld, provider: AwsProvider) -> None:
    forged = Instance(aws_world.allowed_instances[0], ALLOWED_GROUP, None, InstanceState.RUNNING, "")
    aws_world.log.hangs["DescribeInstances"] = 0.5
    task = asyncio.create_task(provider.instance_state(forged))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_replace_whose_response_was_lost_is_ambiguous_never_resent_and_followed_by_state(
    aws_world: AwsWorld,
) -> None:
    """A 5xx after the terminate took effect: the terminate may have happened, so it is not sent
    again (a retry could terminate a replacement that took the id's place in a real group, and
    is refused anyway); the caller gets an operation to follow by the instance's state, which
    says the replace we asked for is done."""
    provider = AwsProvider(
        REGION,
        [ALLOWED_GROUP],
        retry=RetryPolicy(deadline_s=10.0, backoff_initial_s=0.01, backoff_max_s=0.05),
        metrics=aws_world.metrics,
        session=aws_world.session,
    )
    victim = aws_world.allowed_instances[0]
    try:
        instance = await provider.resolve(aws_world.provider_id(victim))
        aws_world.log.lose_response.add("TerminateInstanceInAutoScalingGroup")
        started = time.monotonic()
        with pytest.raises(AmbiguousOutcome) as caught:
            await provider.replace(instance)
        elapsed = time.monotonic() - started
        op = caught.value.operation
        assert op is not None
        status = await provider.operation_status(op)
    finally:
        await provider.close()

    assert elapsed < 5.0, "no wait for the 10 s deadline"
    assert op.kind is OperationKind.REPLACE and op.instance_id == victim
    assert aws_world.log.mutating.count("TerminateInstanceInAutoScalingGroup") == 1
    assert status.state is OperationState.SUCCEEDED
    group = aws_world.group(ALLOWED_GROUP)
    assert group["DesiredCapacity"] == 3
    assert victim not in {i["InstanceId"] for i in group["Instances"]}
