"""AWS: Auto Scaling (resolve, replace), EC2 (state, reboot), SSM (repair).

boto3 is synchronous: every call runs in a bounded thread pool (``run_in_executor``) so the event
loop never blocks, and under ``call_with_retries`` (our only retry layer; botocore's is off:
``total_max_attempts=1``, and botocore hands urllib3 ``Retry(False)``). botocore's connect/read
timeouts are kept at ``attempt_timeout_s`` (and below the deadline) because a thread cannot be
cancelled: the deadline frees the caller, the socket timeout frees the thread. The same bound
fences mutating calls: an attempt is only started with at least that much of the leader lease
left, so a request cannot reach AWS after the lease is gone.

Mutating calls (TerminateInstanceInAutoScalingGroup, RebootInstances, SendCommand) are sent at
most once per call of ours: retried on refusals only (``classify_aws_error``), never after an
answer that leaves open whether they were applied.
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
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ProxyConnectionError,
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
    LeaseFence,
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
    Throttled,
)
from noderescue.adapters.cloud.provider_ids import parse_aws_provider_id
from noderescue.adapters.cloud.retry import Failure, FailureKind, Mutation, RetryPolicy, call_with_retries
from noderescue.metrics import METRICS, Metrics

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

T = TypeVar("T")

log = structlog.get_logger(__name__)

PROVIDER = "aws"

THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "RateExceeded"})
# The request was turned away because of another operation in flight: nothing ran, later may pass.
REFUSED_CODES = frozenset({"ResourceContention", "ScalingActivityInProgress"})
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})
NEVER_CONNECTED = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError)
DEFAULT_ATTEMPT_TIMEOUT_S = 5.0
_BY_STATE = "terminate-"  # a replace whose activity id is unknown: followed by the instance's state

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


def classify_aws_error(exc: Exception) -> Failure:
    """The one classification of a botocore exception (kinds: ``base`` module docstring)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"{code}: {error.get('Message', '')}"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        # By code first: EC2 throttles with HTTP 503, Auto Scaling's contention is an HTTP 500.
        if code in THROTTLING_CODES or status == 429:
            return Failure(Throttled(message), FailureKind.REFUSED, "throttled")
        if code in REFUSED_CODES:
            return Failure(Throttled(message), FailureKind.REFUSED, "busy")
        if status >= 500:
            return Failure(CloudUnavailable(message), FailureKind.AMBIGUOUS, "server_error")
        if code in NOT_FOUND_CODES:
            return Failure(InstanceNotFound(message), FailureKind.FAILED, "not_found")
        return Failure(RequestRejected(message, code), FailureKind.FAILED, "client_error")
    if isinstance(exc, NEVER_CONNECTED):
        # No connection, so no request: nothing can have been applied.
        return Failure(CloudUnavailable(f"connection: {exc}"), FailureKind.REFUSED, "connect_error")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # Read timeout, connection closed or reset once the request may have gone out (and a TLS
        # error, which cannot tell a handshake from a later read).
        return Failure(CloudUnavailable(f"connection: {exc}"), FailureKind.AMBIGUOUS, "connection_error")
    if isinstance(exc, NoCredentialsError):
        return Failure(CloudUnavailable(f"no AWS credentials: {exc}"), FailureKind.FAILED, "client_error")
    if isinstance(exc, BotoCoreError):
        return Failure(RequestRejected(f"request: {exc}"), FailureKind.FAILED, "client_error")
    # Unknown: it may have happened after the request went out. Assume it did.
    return Failure(CloudError(f"unexpected {type(exc).__name__}: {exc}"), FailureKind.AMBIGUOUS, "error")


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
        fence: LeaseFence | None = None,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    ) -> None:
        """Builds the boto3 clients, which loads service models (~0.1 s each): construct it off
        the event loop (``build_provider`` does, with ``asyncio.to_thread``).

        ``endpoint_url=None`` lets botocore apply ``AWS_ENDPOINT_URL`` (and the per-service
        variants) itself. ``fence`` is asked right before each attempt of a mutating call;
        ``attempt_timeout_s`` bounds each attempt's connect and read timeouts, and is the least
        lease an attempt needs.
        """
        self._allowed_groups = frozenset(allowed_groups)
        self._retry = retry or RetryPolicy()
        self._fence = fence
        self._attempt_s = min(attempt_timeout_s, self._retry.deadline_s)
        self._metrics = metrics
        self._clock = clock
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="noderescue-aws")
        config = Config(
            region_name=region,
            user_agent_extra=USER_AGENT,
            # One attempt per botocore call: call_with_retries is the retry layer (see retry.py).
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=self._attempt_s,
            read_timeout=self._attempt_s,
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
        state = await self._ec2_state(ref.instance_id)
        if member["LifecycleState"].startswith("Terminating") and state is not InstanceState.TERMINATED:
            state = InstanceState.TERMINATING
        return Instance(
            id=ref.instance_id,
            group=group,
            zone=member.get("AvailabilityZone") or ref.zone,
            state=state,
            provider_id=provider_id,
        )

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

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        """Nothing follows an AWS operation: a terminate keeps the group's desired capacity."""
        if op.provider != PROVIDER:
            raise ValueError(f"operation {op.id} belongs to provider {op.provider!r}, not aws")
        raise ValueError(f"aws operations have no follow-up call {call!r}")

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
        activities = []
        if not op.id.startswith(_BY_STATE):
            resp = await self._call(
                "DescribeScalingActivities", self._asg.describe_scaling_activities, ActivityIds=[op.id]
            )
            activities = resp["Activities"]
        for activity in activities:
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
            # Lost with an ambiguous answer: the command id. Nothing to follow; the node's health
            # tells whether the repair happened.
            mutation=self._mutation("cloud.aws.send_command"),
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
        op = self._operation(
            f"reboot-{instance.id}-{int(self._clock() * 1000)}", OperationKind.REBOOT, instance
        )
        # EC2 has no reboot operation: the same one serves when the answer was lost (the
        # runtime verifies a reboot by the Node's bootID either way).
        await self._call(
            "RebootInstances",
            self._ec2.reboot_instances,
            mutation=self._mutation("cloud.aws.reboot", op),
            InstanceIds=[instance.id],
        )
        log.info("aws_reboot_sent", instance=instance.id, group=instance.group)
        return op

    async def replace(self, instance: Instance) -> Operation:
        self._check_allowed(instance)
        # Followed by the instance's state when the activity id is lost with the answer.
        by_state = self._operation(f"{_BY_STATE}{instance.id}", OperationKind.REPLACE, instance)
        resp = await self._call(
            "TerminateInstanceInAutoScalingGroup",
            self._asg.terminate_instance_in_auto_scaling_group,
            mutation=self._mutation("cloud.aws.terminate", by_state),
            InstanceId=instance.id,
            # Keep the desired capacity: the group launches the replacement.
            ShouldDecrementDesiredCapacity=False,
        )
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

    def _mutation(self, failpoint: str, by_state: Operation | None = None) -> Mutation:
        return Mutation(
            failpoint=failpoint,
            fence=self._fence,
            # The socket timeouts are fixed per client: an attempt needs that much lease left.
            min_attempt_s=self._attempt_s,
            ambiguous_operation=by_state,
        )

    async def _call(
        self, operation: str, method: Callable[..., T], *, mutation: Mutation | None = None, **kwargs: Any
    ) -> T:
        loop = asyncio.get_running_loop()
        return await call_with_retries(
            lambda _budget_s: loop.run_in_executor(
                self._executor, functools.partial(_no_stop_iteration, method, kwargs)
            ),
            provider=PROVIDER,
            operation=operation,
            classify=classify_aws_error,
            policy=self._retry,
            metrics=self._metrics,
            mutation=mutation,
        )


def _no_stop_iteration(method: Callable[..., T], kwargs: dict[str, Any]) -> T:
    # A StopIteration cannot be set on an asyncio future: the awaiting coroutine would never be
    # woken and would wait for its deadline instead. moto raises one for some calls on
    # instances that have left their group.
    try:
        return method(**kwargs)
    except StopIteration as e:
        raise RuntimeError(f"{getattr(method, '__name__', method)} raised StopIteration") from e
