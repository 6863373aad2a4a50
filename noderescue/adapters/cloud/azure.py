"""Azure: VM Scale Set VMs through azure-mgmt-compute ``.aio`` (ARM).

Long-running operations are started with ``polling=False``: we keep the operation's URLs
(``Azure-AsyncOperation``, ``Location``) from the 202 in ``Operation.token`` and look at them
once per ``operation_status`` call. The SDK's poller would block until done and die with the
process; a stored URL is resumable by a restarted daemon and never blocks the runtime.

azure-core's retry policy is off (``retry_total=0``): ``call_with_retries`` is the one retry
layer, and it also retries what the SDK would not (a 429 on the initial POST of an LRO),
honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
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
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
    Throttled,
)
from noderescue.adapters.cloud.provider_ids import AzureVmssVmRef, parse_azure_provider_id
from noderescue.adapters.cloud.retry import Failure, RetryPolicy, call_with_retries
from noderescue.metrics import METRICS, Metrics

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline import PipelineResponse

T = TypeVar("T")

log = structlog.get_logger(__name__)

PROVIDER = "azure"
PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
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


class OsProfileJson(TypedDict, total=False):
    computerName: str


class VmPropertiesJson(TypedDict, total=False):
    provisioningState: str
    instanceView: InstanceViewJson
    osProfile: OsProfileJson
    timeCreated: str  # RFC 3339; ARM API versions from 2021-11-01 on


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


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


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
    """Map an azure-core exception to our error and decide whether it is worth another attempt."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code = exc.error.code if exc.error is not None and exc.error.code else (exc.reason or "")
        message = f"{status} {code}: {exc.message}"
        if status == 429:
            return Failure(Throttled(message, _retry_after_s(exc)), retryable=True, result="throttled")
        if status >= 500:
            return Failure(CloudUnavailable(message), retryable=True, result="server_error")
        if status == 404:
            return Failure(InstanceNotFound(message), retryable=False, result="not_found")
        return Failure(RequestRejected(message, str(code)), retryable=False, result="client_error")
    if isinstance(exc, ClientAuthenticationError):
        # No response: the credential itself failed (no managed identity, CLI not logged in...).
        return Failure(
            CloudUnavailable(f"no usable Azure credential: {exc}"), retryable=False, result="auth_error"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Failure(CloudUnavailable(f"connection: {exc}"), retryable=True, result="connection_error")
    return Failure(CloudError(f"unexpected {type(exc).__name__}: {exc}"), retryable=False, result="error")


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
    ) -> None:
        self._subscription_id = subscription_id
        self._resource_group = resource_group
        # ARM names are case-insensitive; keep the configured spelling for ids and logs.
        self._scale_sets = {name.lower(): name for name in allowed_scale_sets}
        self._replace_mode: ReplaceMode = replace_mode
        # DryRunProvider intercepts repair/reboot/replace, but following an operation started
        # before dry-run was switched on passes through to operation_status, which finishes a
        # replace-by-delete with a capacity update: in dry-run that update is only reported.
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
            lambda: self._client.virtual_machine_scale_set_vms.get(
                ref.resource_group, ref.scale_set, ref.instance_id, expand="instanceView", cls=_raw_json
            ),
        )
        vm_json = cast(VmJson, vm)
        zones = vm_json.get("zones") or []
        location = vm_json.get("location", "")
        # The Kubernetes zone label of an Azure node is <location>-<zone>.
        zone = f"{location}-{zones[0]}" if zones and location else (zones[0] if zones else None)
        properties = vm_json.get("properties", {})
        return Instance(
            id=self._instance_id(ref),
            group=self._scale_sets[ref.scale_set.lower()],
            zone=zone,
            state=_vm_state(vm_json),
            provider_id=provider_id,
            # The Azure cloud provider names a Node after the VM's computer name.
            hostname=properties.get("osProfile", {}).get("computerName") or None,
            launched=_parse_time(properties.get("timeCreated")),
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
            # The run-command output lives only at the Location URL (FACTS.md).
            result = await self._get_json("operation.result", token.location)
            if result.body is None:
                return OperationStatus(
                    OperationState.PENDING, detail="InProgress", retry_after_s=result.retry_after_s
                )
            output = _run_command_output(cast(RunCommandResultJson, result.body))
        if token.restore_capacity is not None:
            # No URL: the delete's response was lost, and the VM's absence says it is done.
            lost = not token.async_url and not token.location
            if lost and not await self._vm_gone(self._allowed_ref_for_op(op)):
                return OperationStatus(OperationState.PENDING, detail="deleting")
            return await self._restore_capacity(op, token.restore_capacity)
        return OperationStatus(OperationState.SUCCEEDED, detail="Succeeded", output=output)

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
            )
        else:
            capacity = await self._capacity(ref.resource_group, ref.scale_set)
            try:
                started = await self._start(
                    "vmss.delete_instances",
                    lambda **kw: self._client.virtual_machine_scale_sets.begin_delete_instances(
                        # Positional: the keyword is spelled vm_instance_i_ds (FACTS.md).
                        ref.resource_group,
                        ref.scale_set,
                        {"instanceIds": [ref.instance_id]},
                        **kw,
                    ),
                )
            except CloudError as e:
                # A retry after a lost response is refused: the instance is gone already. The
                # delete we asked for happened; say so and still restore the capacity (no URL
                # to poll: operation_status waits for the VM to be gone instead).
                if not await self._vm_gone(ref):
                    raise
                log.warning("azure_replace_response_lost", instance=instance.id, error=str(e))
                started = _OperationToken()
            # Deleting an instance lowers the capacity; operation_status sets it back once the
            # delete is done (a concurrent scale-set update would conflict with the delete).
            token = _OperationToken(started.async_url, started.location, restore_capacity=capacity)
        log.info("azure_replace_sent", instance=instance.id, group=instance.group, mode=self._replace_mode)
        return self._operation(OperationKind.REPLACE, instance, token)

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

    def _operation(self, kind: OperationKind, instance: Instance, token: _OperationToken) -> Operation:
        url = token.async_url or token.location
        op_id = urlsplit(url).path.rstrip("/").rpartition("/")[2] if url else f"sync-{uuid.uuid4()}"
        return Operation(
            id=op_id,
            kind=kind,
            instance_id=instance.id,
            started=self._clock(),
            provider=PROVIDER,
            token=token.dump(),
        )

    async def _start(self, operation: str, begin: Callable[..., Awaitable[object]]) -> _OperationToken:
        """Send the initial request of a long-running operation; keep where to poll it."""
        headers: dict[str, str] = {}

        def keep_headers(response: PipelineResponse[Any, Any]) -> None:
            headers.clear()
            for name in ("Azure-AsyncOperation", "Location"):
                value = response.http_response.headers.get(name)
                if value:
                    headers[name] = value

        await self._call(operation, lambda: begin(polling=False, raw_response_hook=keep_headers))
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
                lambda: self._client.virtual_machine_scale_set_vms.get(
                    ref.resource_group, ref.scale_set, ref.instance_id, cls=_raw_json
                ),
            )
        except InstanceNotFound:
            return True
        return False

    async def _capacity(self, resource_group: str, scale_set: str) -> int:
        raw = await self._call(
            "vmss.get",
            lambda: self._client.virtual_machine_scale_sets.get(resource_group, scale_set, cls=_raw_json),
        )
        return int(cast(ScaleSetJson, raw).get("sku", {}).get("capacity", 0))

    async def _restore_capacity(self, op: Operation, capacity: int) -> OperationStatus:
        ref = self._allowed_ref_for_op(op)
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
        # Setting (not adding to) the capacity is idempotent: a repeated status call, or one
        # from a restarted daemon, cannot scale out twice.
        await self._start(
            "vmss.update",
            lambda **kw: self._client.virtual_machine_scale_sets.begin_update(
                ref.resource_group,
                ref.scale_set,
                VirtualMachineScaleSetUpdate(sku=Sku(capacity=capacity)),
                **kw,
            ),
        )
        log.info("azure_capacity_restored", group=ref.scale_set, capacity=capacity, was=current)
        return OperationStatus(OperationState.PENDING, detail=f"restoring capacity {current} -> {capacity}")

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

        async def get() -> _Polled:
            response = await self._client.send_request(HttpRequest("GET", url))
            await response.read()
            if response.status_code >= 300:
                raise HttpResponseError(response=response)
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code == 202:
                return _Polled(None, retry_after_s)
            return _Polled(response.json() if response.content else {}, retry_after_s)

        return await self._call(operation, get)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            # Bounded like the AWS thread pool: a wave of nodes must not become a burst of
            # requests that ARM throttles.
            async with self._concurrency:
                return await call()

        return await call_with_retries(
            attempt,
            provider=PROVIDER,
            operation=operation,
            classify=classify_azure_error,
            policy=self._retry,
            metrics=self._metrics,
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
