"""AWS: Auto Scaling (resolve, replace), EC2 (state, reboot), SSM (repair).

boto3 is synchronous: every call runs in a bounded thread pool (``run_in_executor``) so the event
loop never blocks, and under ``call_with_retries`` (our only retry layer; botocore's is off).
botocore's connect/read timeouts are kept below the deadline because a thread cannot be
cancelled: the deadline frees the caller, the socket timeout frees the thread.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from noderescue import USER_AGENT
from noderescue.adapters.cloud.base import (
    CloudError,
    CloudUnavailable,
    Instance,
    InstanceNotFound,
    InstanceState,
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
    Throttled,
)
from noderescue.adapters.cloud.provider_ids import parse_aws_provider_id
from noderescue.adapters.cloud.retry import Failure, RetryPolicy, call_with_retries
from noderescue.metrics import METRICS, Metrics

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_ssm import SSMClient

T = TypeVar("T")

log = structlog.get_logger(__name__)

PROVIDER = "aws"

THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "RateExceeded"})
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})

_EC2_STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.TERMINATING,
    "terminated": InstanceState.TERMINATED,
}

# SSM GetCommandInvocation Status -> ours. "Delayed" is a transient delivery retry.
_SSM_STATES = {
    "Pending": OperationState.PENDING,
    "InProgress": OperationState.PENDING,
    "Delayed": OperationState.PENDING,
    "Cancelling": OperationState.PENDING,
    "Success": OperationState.SUCCEEDED,
    "Cancelled": OperationState.FAILED,
    "TimedOut": OperationState.FAILED,
    "Failed": OperationState.FAILED,
}

_ACTIVITY_STATES = {
    "Successful": OperationState.SUCCEEDED,
    "Failed": OperationState.FAILED,
    "Cancelled": OperationState.FAILED,
}


def _ec2_state_of(described: InstanceTypeDef | None) -> InstanceState:
    if described is None:
        return InstanceState.TERMINATED
    return _EC2_STATES.get(described.get("State", {}).get("Name", ""), InstanceState.UNKNOWN)


def classify_aws_error(exc: Exception) -> Failure:
    """Map a botocore exception to our error and decide whether it is worth another attempt."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"{code}: {error.get('Message', '')}"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in THROTTLING_CODES or status == 429:
            return Failure(Throttled(message), retryable=True, result="throttled")
        if status >= 500:
            return Failure(CloudUnavailable(message), retryable=True, result="server_error")
        if code in NOT_FOUND_CODES:
            return Failure(InstanceNotFound(message), retryable=False, result="not_found")
        return Failure(RequestRejected(message, code), retryable=False, result="client_error")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return Failure(CloudUnavailable(f"connection: {exc}"), retryable=True, result="connection_error")
    if isinstance(exc, NoCredentialsError):
        return Failure(CloudUnavailable(f"no AWS credentials: {exc}"), retryable=False, result="client_error")
    if isinstance(exc, BotoCoreError):
        return Failure(RequestRejected(f"request: {exc}"), retryable=False, result="client_error")
    return Failure(CloudError(f"unexpected {type(exc).__name__}: {exc}"), retryable=False, result="error")


class AwsProvider:
    """``CloudProvider`` for EC2 instances in Auto Scaling groups."""

    name = PROVIDER

    def __init__(
        self,
        region: str,
        allowed_groups: Collection[str],
        *,
        endpoint_url: str | None = None,
        max_workers: int = 4,
        retry: RetryPolicy | None = None,
        metrics: Metrics = METRICS,
        session: boto3.session.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Builds the boto3 clients, which loads service models (~0.1 s each): construct it off
        the event loop (``build_provider`` does, with ``asyncio.to_thread``).

        ``endpoint_url=None`` lets botocore apply ``AWS_ENDPOINT_URL`` (and the per-service
        variants) itself.
        """
        self._allowed_groups = frozenset(allowed_groups)
        self._retry = retry or RetryPolicy()
        self._metrics = metrics
        self._clock = clock
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="noderescue-aws")
        config = Config(
            region_name=region,
            user_agent_extra=USER_AGENT,
            # One attempt per botocore call: call_with_retries is the retry layer (see retry.py).
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=min(5.0, self._retry.deadline_s),
            read_timeout=min(20.0, self._retry.deadline_s),
            max_pool_connections=max_workers,
        )
        session = session or boto3.session.Session()
        self._asg: AutoScalingClient = session.client("autoscaling", config=config, endpoint_url=endpoint_url)
        self._ec2: EC2Client = session.client("ec2", config=config, endpoint_url=endpoint_url)
        self._ssm: SSMClient = session.client("ssm", config=config, endpoint_url=endpoint_url)

    # ---------------------------------------------------------------------------------------
    # reads

    async def resolve(self, provider_id: str) -> Instance:
        ref = parse_aws_provider_id(provider_id)
        resp = await self._call(
            "DescribeAutoScalingInstances",
            self._asg.describe_auto_scaling_instances,
            InstanceIds=[ref.instance_id],
        )
        members = resp["AutoScalingInstances"]
        if not members:
            if await self._ec2_state(ref.instance_id) is InstanceState.TERMINATED:
                raise InstanceNotFound(f"instance {ref.instance_id} does not exist (or is terminated)")
            raise NotAllowed(f"instance {ref.instance_id} is in no Auto Scaling group")
        member = members[0]
        group = member["AutoScalingGroupName"]
        if group not in self._allowed_groups:
            raise NotAllowed(
                f"instance {ref.instance_id} is in Auto Scaling group {group!r}, "
                f"not one of the configured {sorted(self._allowed_groups)}"
            )
        described = await self._ec2_instance(ref.instance_id)
        state = _ec2_state_of(described)
        if member["LifecycleState"].startswith("Terminating") and state is not InstanceState.TERMINATED:
            state = InstanceState.TERMINATING
        launched = (described or {}).get("LaunchTime")
        return Instance(
            id=ref.instance_id,
            group=group,
            zone=member.get("AvailabilityZone") or ref.zone,
            state=state,
            provider_id=provider_id,
            # The AWS cloud provider names a Node after this (or after the instance id).
            hostname=(described or {}).get("PrivateDnsName") or None,
            launched=launched.timestamp() if launched is not None else None,
        )

    async def _ec2_instance(self, instance_id: str) -> InstanceTypeDef | None:
        """DescribeInstances of one instance; None when EC2 does not know it (any more)."""
        try:
            resp = await self._call(
                "DescribeInstances", self._ec2.describe_instances, InstanceIds=[instance_id]
            )
        except InstanceNotFound:
            return None
        for reservation in resp["Reservations"]:
            for inst in reservation.get("Instances", []):
                if inst.get("InstanceId") == instance_id:
                    return inst
        return None

    async def instance_state(self, instance: Instance) -> InstanceState:
        return await self._ec2_state(instance.id)

    async def _ec2_state(self, instance_id: str) -> InstanceState:
        try:
            resp = await self._call(
                "DescribeInstances", self._ec2.describe_instances, InstanceIds=[instance_id]
            )
        except InstanceNotFound:
            return InstanceState.TERMINATED
        for reservation in resp["Reservations"]:
            for inst in reservation.get("Instances", []):
                if inst.get("InstanceId") == instance_id:
                    return _EC2_STATES.get(inst.get("State", {}).get("Name", ""), InstanceState.UNKNOWN)
        return InstanceState.TERMINATED

    async def operation_status(self, op: Operation) -> OperationStatus:
        if op.provider != PROVIDER:
            raise ValueError(f"operation {op.id} belongs to provider {op.provider!r}, not aws")
        if op.kind is OperationKind.REPAIR:
            return await self._command_status(op)
        if op.kind is OperationKind.REBOOT:
            # EC2 has no reboot operation to follow: the request was accepted; the runtime
            # verifies the reboot itself (the Node's bootID changes).
            return OperationStatus(OperationState.SUCCEEDED, detail="reboot requested")
        return await self._replace_status(op)

    async def _command_status(self, op: Operation) -> OperationStatus:
        try:
            resp = await self._call(
                "GetCommandInvocation",
                self._ssm.get_command_invocation,
                CommandId=op.id,
                InstanceId=op.instance_id,
            )
        except RequestRejected as e:
            if e.code == "InvocationDoesNotExist":
                # SSM is eventually consistent: right after SendCommand the invocation may not
                # be visible yet.
                return OperationStatus(OperationState.PENDING, detail="InvocationDoesNotExist")
            raise
        status = resp.get("Status", "")
        output = resp.get("StandardOutputContent", "")
        errors = resp.get("StandardErrorContent", "")
        return OperationStatus(
            _SSM_STATES.get(status, OperationState.PENDING),
            detail=resp.get("StatusDetails", status),
            output=output + (f"\n{errors}" if errors else ""),
        )

    async def _replace_status(self, op: Operation) -> OperationStatus:
        resp = await self._call(
            "DescribeScalingActivities", self._asg.describe_scaling_activities, ActivityIds=[op.id]
        )
        for activity in resp["Activities"]:
            if activity["ActivityId"] == op.id:
                code = activity["StatusCode"]
                if code in _ACTIVITY_STATES:
                    return OperationStatus(_ACTIVITY_STATES[code], detail=activity.get("StatusMessage", code))
                return OperationStatus(OperationState.PENDING, detail=code)
        # Activities age out (and moto keeps none): the instance itself is the ground truth.
        state = await self._ec2_state(op.instance_id)
        if state is InstanceState.TERMINATED:
            return OperationStatus(OperationState.SUCCEEDED, detail="instance terminated")
        return OperationStatus(OperationState.PENDING, detail=f"instance {state}")

    # ---------------------------------------------------------------------------------------
    # mutations (reach them through GuardedProvider)

    async def repair(self, instance: Instance, command: str) -> Operation:
        self._check_allowed(instance)
        resp = await self._call(
            "SendCommand",
            self._ssm.send_command,
            InstanceIds=[instance.id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": [command]},
            Comment=f"noderescue repair of {instance.id}"[:100],  # SSM caps comments at 100 chars
        )
        command_id = resp["Command"]["CommandId"]
        log.info("aws_repair_sent", instance=instance.id, group=instance.group, command_id=command_id)
        return self._operation(command_id, OperationKind.REPAIR, instance)

    async def reboot(self, instance: Instance) -> Operation:
        self._check_allowed(instance)
        await self._call("RebootInstances", self._ec2.reboot_instances, InstanceIds=[instance.id])
        log.info("aws_reboot_sent", instance=instance.id, group=instance.group)
        return self._operation(
            f"reboot-{instance.id}-{int(self._clock() * 1000)}", OperationKind.REBOOT, instance
        )

    async def replace(self, instance: Instance) -> Operation:
        self._check_allowed(instance)
        try:
            resp = await self._call(
                "TerminateInstanceInAutoScalingGroup",
                self._asg.terminate_instance_in_auto_scaling_group,
                InstanceId=instance.id,
                # Keep the desired capacity: the group launches the replacement.
                ShouldDecrementDesiredCapacity=False,
            )
        except CloudError as e:
            # A retry after a lost response is refused (the instance already left the group).
            # If the instance is going away, the terminate we asked for happened: say so,
            # rather than make the runtime try again or give up on a node being replaced.
            state = await self._ec2_state(instance.id)
            if state not in (InstanceState.TERMINATING, InstanceState.TERMINATED):
                raise
            log.warning("aws_replace_response_lost", instance=instance.id, state=str(state), error=str(e))
            return self._operation(f"terminate-{instance.id}", OperationKind.REPLACE, instance)
        activity_id = resp["Activity"]["ActivityId"]
        log.info("aws_replace_sent", instance=instance.id, group=instance.group, activity_id=activity_id)
        return self._operation(activity_id, OperationKind.REPLACE, instance)

    async def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True

        def close_clients() -> None:
            for client in (self._asg, self._ec2, self._ssm):
                client.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close_clients)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------------------------------

    def _check_allowed(self, instance: Instance) -> None:
        # Defence in depth: GuardedProvider re-resolves right before the call; this catches an
        # Instance built by hand or restored from an old record.
        if instance.group not in self._allowed_groups:
            raise NotAllowed(f"instance {instance.id}: group {instance.group!r} is not configured")

    def _operation(self, op_id: str, kind: OperationKind, instance: Instance) -> Operation:
        return Operation(
            id=op_id, kind=kind, instance_id=instance.id, started=self._clock(), provider=PROVIDER
        )

    async def _call(self, operation: str, method: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await call_with_retries(
            lambda: loop.run_in_executor(
                self._executor, functools.partial(_no_stop_iteration, method, kwargs)
            ),
            provider=PROVIDER,
            operation=operation,
            classify=classify_aws_error,
            policy=self._retry,
            metrics=self._metrics,
        )


def _no_stop_iteration(method: Callable[..., T], kwargs: dict[str, Any]) -> T:
    # A StopIteration cannot be set on an asyncio future: the awaiting coroutine would never be
    # woken and would wait for its deadline instead. moto raises one for some calls on
    # instances that have left their group.
    try:
        return method(**kwargs)
    except StopIteration as e:
        raise RuntimeError(f"{getattr(method, '__name__', method)} raised StopIteration") from e
