"""Azure: VM Scale Set VMs through azure-mgmt-compute ``.aio`` (ARM).

Long-running operations are started with ``polling=False``: we keep the operation's URLs
(``Azure-AsyncOperation``, ``Location``) from the 202 in ``Operation.token`` and look at them
once per ``operation_status`` call. The SDK's poller would block until done and die with the
process; a stored URL is resumable by a restarted daemon and never blocks the runtime.

azure-core's retry policy is off (``retry_total=0`` on the client, so for the initial requests of
LROs, the reads and the operation polls through ``send_request`` alike; no SDK poller runs):
``call_with_retries`` is the one retry layer, and it also retries what the SDK would not (a 429
on the initial POST of an LRO), honouring ``Retry-After``.

Mutating calls (restart, reimage, deleteInstances, the capacity update, runCommand) are sent at
most once per call of ours: retried on refusals only (``classify_azure_error``). Each attempt's
per-request ``connection_timeout``/``read_timeout`` is bounded by ``attempt_timeout_s``, the time
left to the deadline and, for mutating calls, the time left on the leader lease.

Replace by delete is two destructive calls: the delete, then -- once it is done and
``operation_status`` says ``follow_up="capacity"`` -- ``follow_up(op, "capacity")`` sets the scale
set's capacity back, each preceded by its own durable intent in the runtime. The capacity to
restore is the one read before the delete (kept in the operation's token), and never more than
one above the current capacity.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import structlog
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.compute.models import Sku, VirtualMachineScaleSetUpdate

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
from noderescue.adapters.cloud.provider_ids import AzureVmssVmRef, parse_azure_provider_id
from noderescue.adapters.cloud.retry import Failure, FailureKind, Mutation, RetryPolicy, call_with_retries
from noderescue.metrics import METRICS, Metrics

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline import PipelineResponse

T = TypeVar("T")

log = structlog.get_logger(__name__)

PROVIDER = "azure"
PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_ATTEMPT_TIMEOUT_S = 20.0  # ARM's initial POSTs are quick, but not always
# Less lease than this left: a mutating attempt is not started (it could only time out).
MIN_LEASE_S = 1.0
CAPACITY = "capacity"  # the follow-up call of a replace by delete
ReplaceMode = Literal["reimage", "delete"]


# --------------------------------------------------------------------------------------------
# Raw ARM JSON (read with cls=, not through the SDK's models: stable across SDK versions)
# --------------------------------------------------------------------------------------------


class StatusJson(TypedDict, total=False):
    code: str
    level: str
    displayStatus: str
    message: str


class InstanceViewJson(TypedDict, total=False):
    statuses: list[StatusJson]


class VmPropertiesJson(TypedDict, total=False):
    provisioningState: str
    instanceView: InstanceViewJson


class VmJson(TypedDict):
    name: str
    location: NotRequired[str]
    zones: NotRequired[list[str]]
    properties: NotRequired[VmPropertiesJson]


class SkuJson(TypedDict, total=False):
    capacity: int


class ScaleSetJson(TypedDict):
    name: str
    sku: NotRequired[SkuJson]


class ErrorJson(TypedDict, total=False):
    code: str
    message: str


class AsyncOperationJson(TypedDict, total=False):
    status: str  # InProgress | Succeeded | Failed | Canceled
    error: ErrorJson


class RunCommandResultJson(TypedDict, total=False):
    value: list[StatusJson]


class _TokenJson(TypedDict, total=False):
    async_url: str
    location: str
    restore_capacity: int


@dataclass(frozen=True, slots=True)
class _Polled:
    body: object | None  # None: still 202 Accepted
    retry_after_s: float | None


@dataclass(frozen=True, slots=True)
class _OperationToken:
    """What ``Operation.token`` holds for Azure: where to look, and what is left to do."""

    async_url: str = ""
    location: str = ""
    restore_capacity: int | None = None  # replace by delete: capacity to set once deleted

    def dump(self) -> str:
        raw: _TokenJson = {"async_url": self.async_url, "location": self.location}
        if self.restore_capacity is not None:
            raw["restore_capacity"] = self.restore_capacity
        return orjson.dumps(raw).decode()

    @classmethod
    def load(cls, text: str) -> _OperationToken:
        try:
            raw = cast(_TokenJson, orjson.loads(text))
            capacity = raw.get("restore_capacity")
            return cls(
                str(raw.get("async_url", "")),
                str(raw.get("location", "")),
                int(capacity) if capacity is not None else None,
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"not an Azure operation token: {e}") from e


_POWER_STATES = {
    "PowerState/starting": InstanceState.PENDING,
    "PowerState/running": InstanceState.RUNNING,
    "PowerState/stopping": InstanceState.STOPPING,
    "PowerState/stopped": InstanceState.STOPPED,
    "PowerState/deallocating": InstanceState.STOPPING,
    "PowerState/deallocated": InstanceState.STOPPED,
}


def parse_retry_after(value: str | None, unit_s: float = 1.0) -> float | None:
    """A Retry-After header as a delay in seconds, or ``None`` (use our own backoff) when it is
    absent, an HTTP date (rare from ARM), or not a positive finite number: a ``0`` or ``-1``
    followed literally would poll in a tight loop, a ``nan`` would sleep forever."""
    if not value:
        return None
    try:
        delay = float(value) * unit_s
    except ValueError:
        return None
    return delay if math.isfinite(delay) and delay > 0 else None


def _retry_after_s(error: HttpResponseError) -> float | None:
    response = error.response
    if response is None:
        return None
    headers: Mapping[str, str] = getattr(response, "headers", {})
    millis = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
    if millis:
        return parse_retry_after(millis, unit_s=0.001)
    return parse_retry_after(headers.get("Retry-After"))


def classify_azure_error(exc: Exception) -> Failure:
    """The one classification of an azure-core exception (kinds: ``base`` module docstring)."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code = exc.error.code if exc.error is not None and exc.error.code else (exc.reason or "")
        message = f"{status} {code}: {exc.message}"
        if status == 429:
            return Failure(Throttled(message, _retry_after_s(exc)), FailureKind.REFUSED, "throttled")
        if status >= 500:
            return Failure(CloudUnavailable(message), FailureKind.AMBIGUOUS, "server_error")
        if status == 404:
            return Failure(InstanceNotFound(message), FailureKind.FAILED, "not_found")
        return Failure(RequestRejected(message, str(code)), FailureKind.FAILED, "client_error")
    if isinstance(exc, ClientAuthenticationError):
        # No response: the credential itself failed (no managed identity, CLI not logged in...).
        return Failure(
            CloudUnavailable(f"no usable Azure credential: {exc}"), FailureKind.FAILED, "auth_error"
        )
    if isinstance(exc, ServiceRequestError) and _never_sent(exc):
        return Failure(CloudUnavailable(f"connection: {exc}"), FailureKind.REFUSED, "connect_error")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Failure(CloudUnavailable(f"connection: {exc}"), FailureKind.AMBIGUOUS, "connection_error")
    # Unknown: it may have happened after the request went out. Assume it did.
    return Failure(CloudError(f"unexpected {type(exc).__name__}: {exc}"), FailureKind.AMBIGUOUS, "error")


def _never_sent(exc: ServiceRequestError) -> bool:
    """azure-core says ``ServiceRequestError`` means "no request was sent", but its aiohttp
    transport also maps a connection dropped after sending (``ServerDisconnectedError``, a reset
    while reading) to it: only a connection never established proves nothing went out."""
    if isinstance(exc, ServiceRequestTimeoutError):
        return True  # aiohttp's connect timeout
    inner = exc.inner_exception
    if isinstance(inner, aiohttp.ClientConnectorError):
        return True  # refused, DNS, TLS handshake
    # Raised by a pipeline policy before the transport (bearer token over http, ...).
    return not isinstance(inner, aiohttp.ClientError | OSError)


class AzureProvider:
    """``CloudProvider`` for Uniform VM Scale Set VMs of one resource group."""

    name = PROVIDER

    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        allowed_scale_sets: Collection[str],
        *,
        credential: AsyncTokenCredential | None = None,
        arm_endpoint: str | None = None,
        ca_bundle: str | Path | None = None,
        replace_mode: ReplaceMode = "reimage",
        dry_run: bool = False,
        credential_scope: str | None = None,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        metrics: Metrics = METRICS,
        clock: Callable[[], float] = time.time,
        fence: LeaseFence | None = None,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    ) -> None:
        """``fence`` is asked right before each attempt of a mutating call; ``attempt_timeout_s``
        bounds every request's connect and read timeouts."""
        self._subscription_id = subscription_id
        self._fence = fence
        self._attempt_s = attempt_timeout_s
        self._resource_group = resource_group
        # ARM names are case-insensitive; keep the configured spelling for ids and logs.
        self._scale_sets = {name.lower(): name for name in allowed_scale_sets}
        self._replace_mode: ReplaceMode = replace_mode
        # DryRunProvider intercepts the mutations, but following an operation started before
        # dry-run was switched on passes through to operation_status: in dry-run it never asks
        # for the capacity follow-up of a replace-by-delete, and follow_up makes no call.
        self._dry_run = dry_run
        self._concurrency = asyncio.Semaphore(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._metrics = metrics
        self._clock = clock
        self._endpoint = (arm_endpoint or PUBLIC_ARM_ENDPOINT).rstrip("/")
        self._owns_credential = credential is None
        if credential is None:
            # Imported here: azure.identity is only needed when no credential is injected.
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._credential = credential
        transport: dict[str, Any] = {}
        if ca_bundle is not None:
            transport["connection_verify"] = str(ca_bundle)
        self._client = ComputeManagementClient(
            credential,
            subscription_id,
            base_url=self._endpoint,
            # Sovereign clouds' audience is their ARM endpoint; Azure Stack Hub's differs
            # (its ARM metadata's audience): pass that as credential_scope.
            credential_scopes=[credential_scope or f"{self._endpoint}/.default"],
            user_agent=USER_AGENT,
            retry_total=0,  # call_with_retries is the retry layer (module docstring)
            **transport,
        )

    # ---------------------------------------------------------------------------------------
    # reads

    async def resolve(self, provider_id: str) -> Instance:
        ref = self._allowed_ref(provider_id)
        vm = await self._call(
            "vmss_vm.get",
            lambda **kw: self._client.virtual_machine_scale_set_vms.get(
                ref.resource_group, ref.scale_set, ref.instance_id, expand="instanceView", cls=_raw_json, **kw
            ),
        )
        vm_json = cast(VmJson, vm)
        zones = vm_json.get("zones") or []
        location = vm_json.get("location", "")
        # The Kubernetes zone label of an Azure node is <location>-<zone>.
        zone = f"{location}-{zones[0]}" if zones and location else (zones[0] if zones else None)
        return Instance(
            id=self._instance_id(ref),
            group=self._scale_sets[ref.scale_set.lower()],
            zone=zone,
            state=_vm_state(vm_json),
            provider_id=provider_id,
        )

    async def instance_state(self, instance: Instance) -> InstanceState:
        try:
            return (await self.resolve(instance.provider_id)).state
        except InstanceNotFound:
            return InstanceState.TERMINATED

    async def operation_status(self, op: Operation) -> OperationStatus:
        if op.provider != PROVIDER:
            raise ValueError(f"operation {op.id} belongs to provider {op.provider!r}, not azure")
        token = _OperationToken.load(op.token)
        try:
            return await self._operation_status(op, token)
        except InstanceNotFound as e:
            # ARM forgets finished operations after a while; the runtime verifies the machine.
            return OperationStatus(OperationState.FAILED, detail=f"operation not found (expired?): {e}")

    async def _operation_status(self, op: Operation, token: _OperationToken) -> OperationStatus:
        if token.async_url:
            polled = await self._get_json("operation.status", token.async_url)
            if polled.body is None:
                return OperationStatus(
                    OperationState.PENDING, detail="Accepted", retry_after_s=polled.retry_after_s
                )
            status_json = cast(AsyncOperationJson, polled.body)
            status = status_json.get("status", "")
            if status in ("Failed", "Canceled"):
                error = status_json.get("error", {})
                return OperationStatus(
                    OperationState.FAILED,
                    detail=f"{status}: {error.get('code', '')} {error.get('message', '')}".strip(),
                )
            if status != "Succeeded":
                return OperationStatus(
                    OperationState.PENDING, detail=status, retry_after_s=polled.retry_after_s
                )
        output = ""
        if token.location and (op.kind is OperationKind.REPAIR or not token.async_url):
            # The run-command output lives only at the Location URL (the Azure-AsyncOperation
            # status carries none).
            result = await self._get_json("operation.result", token.location)
            if result.body is None:
                return OperationStatus(
                    OperationState.PENDING, detail="InProgress", retry_after_s=result.retry_after_s
                )
            output = _run_command_output(cast(RunCommandResultJson, result.body))
        if token.restore_capacity is not None:
            # No URL: the delete's answer was lost, and the VM's absence says it is done.
            lost = not token.async_url and not token.location
            ref = self._allowed_ref_for_op(op)
            if lost and not await self._vm_gone(ref):
                return OperationStatus(OperationState.PENDING, detail="deleting")
            return await self._deleted(ref, token.restore_capacity)
        return OperationStatus(OperationState.SUCCEEDED, detail="Succeeded", output=output)

    async def _deleted(self, ref: AzureVmssVmRef, capacity: int) -> OperationStatus:
        """A replace by delete is done: is the capacity still to be restored?"""
        current = await self._capacity(ref.resource_group, ref.scale_set)
        if current >= capacity:
            return OperationStatus(OperationState.SUCCEEDED, detail=f"deleted; capacity {current}")
        if self._dry_run:
            log.warning(
                "azure_capacity_restore_skipped",
                group=ref.scale_set,
                capacity=capacity,
                was=current,
                dry_run=True,
            )
            return OperationStatus(
                OperationState.SUCCEEDED,
                detail=f"deleted; dry run: capacity not restored ({current}, was {capacity})",
            )
        return OperationStatus(
            OperationState.SUCCEEDED,
            detail=f"deleted; capacity {current}, was {capacity}",
            follow_up=CAPACITY,
        )

    # ---------------------------------------------------------------------------------------
    # mutations (reach them through GuardedProvider)

    async def repair(self, instance: Instance, command: str) -> Operation:
        ref = self._allowed_ref(instance.provider_id)
        token = await self._start(
            "vmss_vm.run_command",
            lambda **kw: self._client.virtual_machine_scale_set_vms.begin_run_command(
                ref.resource_group,
                ref.scale_set,
                ref.instance_id,
                {"commandId": "RunShellScript", "script": [command]},
                **kw,
            ),
            # Lost with an ambiguous answer: the output. The node's health tells what happened.
            self._mutation("cloud.azure.run_command"),
        )
        log.info("azure_repair_sent", instance=instance.id, group=instance.group)
        return self._operation(OperationKind.REPAIR, instance, token)

    async def reboot(self, instance: Instance) -> Operation:
        ref = self._allowed_ref(instance.provider_id)
        token = await self._start(
            "vmss_vm.restart",
            lambda **kw: self._client.virtual_machine_scale_set_vms.begin_restart(
                ref.resource_group, ref.scale_set, ref.instance_id, **kw
            ),
            # Lost answer: the runtime verifies a restart by the Node's bootID.
            self._mutation("cloud.azure.restart", self._operation(OperationKind.REBOOT, instance)),
        )
        log.info("azure_reboot_sent", instance=instance.id, group=instance.group)
        return self._operation(OperationKind.REBOOT, instance, token)

    async def replace(self, instance: Instance) -> Operation:
        ref = self._allowed_ref(instance.provider_id)
        if self._replace_mode == "reimage":
            token = await self._start(
                "vmss_vm.reimage",
                lambda **kw: self._client.virtual_machine_scale_set_vms.begin_reimage(
                    ref.resource_group, ref.scale_set, ref.instance_id, **kw
                ),
                # Lost answer: the runtime verifies a reimage by the Node's bootID and health.
                self._mutation("cloud.azure.reimage", self._operation(OperationKind.REPLACE, instance)),
            )
        else:
            # Deleting an instance lowers the capacity; once the delete is done the runtime sets
            # it back with follow_up (a concurrent scale-set update would conflict with the
            # delete). The capacity read now is the most it will ever be set to.
            capacity = await self._capacity(ref.resource_group, ref.scale_set)
            by_state = _OperationToken(restore_capacity=capacity)
            started = await self._start(
                "vmss.delete_instances",
                lambda **kw: self._client.virtual_machine_scale_sets.begin_delete_instances(
                    # Positional: the keyword is spelled vm_instance_i_ds.
                    ref.resource_group,
                    ref.scale_set,
                    {"instanceIds": [ref.instance_id]},
                    **kw,
                ),
                # Lost answer: no URL to poll; done once the VM is gone.
                self._mutation(
                    "cloud.azure.delete", self._operation(OperationKind.REPLACE, instance, by_state)
                ),
            )
            token = _OperationToken(started.async_url, started.location, restore_capacity=capacity)
        log.info("azure_replace_sent", instance=instance.id, group=instance.group, mode=self._replace_mode)
        return self._operation(OperationKind.REPLACE, instance, token)

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        """``"capacity"``: set the scale set's capacity back after a replace by delete, to the
        capacity read before the delete but never more than one above the current one (a
        concurrent scale-in stays; a second delete restores its own one). ``None`` when the
        capacity is already there (or in dry-run)."""
        if op.provider != PROVIDER:
            raise ValueError(f"operation {op.id} belongs to provider {op.provider!r}, not azure")
        if call != CAPACITY:
            raise ValueError(f"azure operations have no follow-up call {call!r}")
        before = _OperationToken.load(op.token).restore_capacity
        if before is None:
            return None
        ref = self._allowed_ref_for_op(op)
        current = await self._capacity(ref.resource_group, ref.scale_set)
        target = min(before, current + 1)
        if current >= target:
            log.info("azure_capacity_already_restored", group=ref.scale_set, capacity=current, was=before)
            return None
        if self._dry_run:
            log.warning("azure_capacity_restore_skipped", group=ref.scale_set, capacity=target, dry_run=True)
            return None
        token = await self._start(
            "vmss.update",
            lambda **kw: self._client.virtual_machine_scale_sets.begin_update(
                ref.resource_group,
                ref.scale_set,
                VirtualMachineScaleSetUpdate(sku=Sku(capacity=target)),
                **kw,
            ),
            self._mutation("cloud.azure.capacity"),
        )
        log.info("azure_capacity_restored", group=ref.scale_set, capacity=target, was=current)
        return Operation(
            id=self._operation_id(token),
            kind=op.kind,
            instance_id=op.instance_id,
            started=self._clock(),
            provider=PROVIDER,
            token=token.dump(),
        )

    async def close(self) -> None:
        await self._client.close()
        if self._owns_credential:
            await self._credential.close()

    # ---------------------------------------------------------------------------------------

    def _allowed_ref(self, provider_id: str) -> AzureVmssVmRef:
        """Parse and check against the configuration; no cloud call is needed to refuse."""
        ref = parse_azure_provider_id(provider_id)
        if ref.subscription_id.lower() != self._subscription_id.lower():
            raise NotAllowed(f"{provider_id}: subscription {ref.subscription_id} is not the configured one")
        # cloud-provider-azure lower-cases the resource group in providerIDs.
        if ref.resource_group.lower() != self._resource_group.lower():
            raise NotAllowed(
                f"{provider_id}: resource group {ref.resource_group} is not the configured "
                f"{self._resource_group}"
            )
        if ref.scale_set.lower() not in self._scale_sets:
            raise NotAllowed(
                f"{provider_id}: scale set {ref.scale_set!r} is not one of the configured "
                f"{sorted(self._scale_sets.values())}"
            )
        return AzureVmssVmRef(
            self._subscription_id,
            self._resource_group,
            self._scale_sets[ref.scale_set.lower()],
            ref.instance_id,
        )

    def _instance_id(self, ref: AzureVmssVmRef) -> str:
        return ref.vm_name

    def _mutation(self, failpoint: str, by_state: Operation | None = None) -> Mutation:
        return Mutation(
            failpoint=failpoint,
            fence=self._fence,
            min_attempt_s=min(MIN_LEASE_S, self._attempt_s),
            ambiguous_operation=by_state,
        )

    @staticmethod
    def _operation_id(token: _OperationToken) -> str:
        url = token.async_url or token.location
        return urlsplit(url).path.rstrip("/").rpartition("/")[2] if url else f"sync-{uuid.uuid4()}"

    def _operation(
        self, kind: OperationKind, instance: Instance, token: _OperationToken | None = None
    ) -> Operation:
        """``token=None``: an operation followed by state (its answer was lost)."""
        token = token or _OperationToken()
        return Operation(
            id=self._operation_id(token),
            kind=kind,
            instance_id=instance.id,
            started=self._clock(),
            provider=PROVIDER,
            token=token.dump(),
        )

    async def _start(
        self, operation: str, begin: Callable[..., Awaitable[object]], mutation: Mutation
    ) -> _OperationToken:
        """Send the initial request of a long-running operation; keep where to poll it."""
        headers: dict[str, str] = {}

        def keep_headers(response: PipelineResponse[Any, Any]) -> None:
            headers.clear()
            for name in ("Azure-AsyncOperation", "Location"):
                value = response.http_response.headers.get(name)
                if value:
                    headers[name] = value

        await self._call(
            operation, lambda **kw: begin(polling=False, raw_response_hook=keep_headers, **kw), mutation
        )
        # The call was made: refusing its operation URLs now would report a done action as
        # failed (and invite a repeat). ARM paths do not depend on the host, so a URL on another
        # spelling of the endpoint is followed on the configured one.
        return _OperationToken(
            self._on_endpoint(headers.get("Azure-AsyncOperation", "")),
            self._on_endpoint(headers.get("Location", "")),
        )

    def _on_endpoint(self, url: str) -> str:
        if not url:
            return url
        want, got = urlsplit(self._endpoint), urlsplit(url)
        if (got.scheme, got.netloc.lower()) == (want.scheme, want.netloc.lower()):
            return url
        log.warning("azure_operation_url_rehomed", url=url, endpoint=self._endpoint)
        return urlunsplit((want.scheme, want.netloc, got.path, got.query, ""))

    async def _vm_gone(self, ref: AzureVmssVmRef) -> bool:
        """The scale-set VM no longer exists (``False`` while it is still deleting)."""
        try:
            await self._call(
                "vmss_vm.get",
                lambda **kw: self._client.virtual_machine_scale_set_vms.get(
                    ref.resource_group, ref.scale_set, ref.instance_id, cls=_raw_json, **kw
                ),
            )
        except InstanceNotFound:
            return True
        return False

    async def _capacity(self, resource_group: str, scale_set: str) -> int:
        raw = await self._call(
            "vmss.get",
            lambda **kw: self._client.virtual_machine_scale_sets.get(
                resource_group, scale_set, cls=_raw_json, **kw
            ),
        )
        return int(cast(ScaleSetJson, raw).get("sku", {}).get("capacity", 0))

    def _allowed_ref_for_op(self, op: Operation) -> AzureVmssVmRef:
        scale_set, _, instance_id = op.instance_id.rpartition("_")
        return self._allowed_ref(
            f"azure:///subscriptions/{self._subscription_id}/resourceGroups/{self._resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}/virtualMachines/{instance_id}"
        )

    def _check_origin(self, url: str) -> None:
        # Operation URLs come back from stored records: never send our bearer token to a host
        # other than the configured ARM endpoint.
        want, got = urlsplit(self._endpoint), urlsplit(url)
        if (got.scheme, got.netloc.lower()) != (want.scheme, want.netloc.lower()):
            raise RequestRejected(f"operation URL {url!r} is not on the ARM endpoint {self._endpoint}")

    async def _get_json(self, operation: str, url: str) -> _Polled:
        """GET an operation URL: the body when done (``None`` while it answers 202)."""
        self._check_origin(url)

        async def get(**timeouts: float) -> _Polled:
            response = await self._client.send_request(HttpRequest("GET", url), stream=False, **timeouts)
            await response.read()
            if response.status_code >= 300:
                raise HttpResponseError(response=response)
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code == 202:
                return _Polled(None, retry_after_s)
            return _Polled(response.json() if response.content else {}, retry_after_s)

        return await self._call(operation, get)

    async def _call(
        self, operation: str, call: Callable[..., Awaitable[T]], mutation: Mutation | None = None
    ) -> T:
        """``call(connection_timeout=, read_timeout=)``: one request, its timeouts bounded by the
        attempt's budget (the deadline, the lease) and ``attempt_timeout_s``."""

        async def attempt(budget_s: float) -> T:
            timeout = max(0.001, min(budget_s, self._attempt_s))
            # Bounded like the AWS thread pool: a wave of nodes must not become a burst of
            # requests that ARM throttles.
            async with self._concurrency:
                return await call(connection_timeout=timeout, read_timeout=timeout)

        return await call_with_retries(
            attempt,
            provider=PROVIDER,
            operation=operation,
            classify=classify_azure_error,
            policy=self._retry,
            metrics=self._metrics,
            mutation=mutation,
        )


def _raw_json(
    pipeline_response: PipelineResponse[Any, Any], _deserialized: object, _headers: object
) -> object:
    return pipeline_response.http_response.json()


def _vm_state(vm: VmJson) -> InstanceState:
    properties = vm.get("properties", {})
    if properties.get("provisioningState", "").lower() == "deleting":
        return InstanceState.TERMINATING
    for status in properties.get("instanceView", {}).get("statuses", []):
        state = _POWER_STATES.get(status.get("code", ""))
        if state is not None:
            return state
    return InstanceState.UNKNOWN


def _run_command_output(result: RunCommandResultJson) -> str:
    return "\n".join(status.get("message", "") for status in result.get("value", []) if status.get("message"))
