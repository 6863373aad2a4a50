"""Emulated Azure: an ARM-compatible HTTPS server for VM Scale Set VMs.

It serves exactly the REST shapes ``azure-mgmt-compute`` (39, ``.aio``) uses for scale-set VMs:
list (paged with ``nextLink``), get (``$expand=instanceView``), instanceView, restart, reimage,
delete, runCommand, the scale set's get, capacity update (PUT/PATCH ``sku.capacity``) and
``deleteInstances`` (``POST .../delete``). Mutating calls are long-running operations answered
``202`` with ``Azure-AsyncOperation``, ``Location`` and ``Retry-After: 1`` (the SDK waits 30 s
between polls without it); the operation reports ``InProgress`` until ``OPERATION_SECONDS`` real
seconds have passed, then ``Succeeded``; the ``Location`` URL then gives the result (for
runCommand ``{"value": [{"code": "ProvisioningState/succeeded", "message": ...}]}``).

HTTPS with a certificate from a CA made at start (``tls.py``): the SDK refuses bearer tokens over
plain HTTP. Any bearer token is accepted, and the same server answers Microsoft Entra ID's
client-credentials token requests (``POST /<tenant>/oauth2/v2.0/token``), so
``DefaultAzureCredential`` works with ``AZURE_AUTHORITY_HOST`` pointed here and the fake
``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET``/``AZURE_TENANT_ID`` of the world's env file.
Throttling (``Faults.cloud_throttle_rate``) answers 429 with ``Retry-After``, as ARM does;
operation polls are never throttled. Targeted faults (``FaultSpec`` with ``api: azure``) name the
call ``restart``, ``reimage``, ``delete`` (a VM's DELETE and the scale set's deleteInstances),
``capacity`` (PUT/PATCH of the scale set) or ``runCommand``: ``before`` answers the error without
running the handler, ``after`` runs it (the effect happens, the audit line says the real answer)
and answers the error instead.

Effects on the cluster: restart -> reboot (new bootID); reimage -> reboot with the NPD conditions
cleared (a fresh OS disk); delete / deleteInstances -> the Node goes NotReady and is deleted, and
the capacity drops by one, as in Azure; a capacity increase -> new VMs join as
``<group>-<instanceId>`` after the group's ``joinSeconds`` (instance ids grow monotonically in a
scale set, so the node index is the instance id); runCommand -> a repair attempt (the command
succeeds either way; its output says whether the node healed).

ProviderIDs keep the scenario's resource group spelling; in real clusters the Azure cloud
provider lowercases the resource group in ``spec.providerID``, so consumers must compare it
case-insensitively.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from noderescue.sim.faults import (
    AUDIT_NO_ANSWER,
    AUDIT_RESET,
    FaultSpec,
    hold_until_client_gives_up,
    reset_connection,
)
from noderescue.sim.manifests import HEALTHY_WHEN_TRUE, KUBELET_CONDITION_TYPES
from noderescue.sim.scenario import (
    AuditSink,
    ClusterEffects,
    GroupNodes,
    Scenario,
    ThrottleSwitch,
    node_labels,
    spread,
)
from noderescue.sim.tls import make_server_tls

log = structlog.get_logger(__name__)

SUBSCRIPTION_ID = "00000000-0000-0000-0000-00000000cafe"
RESOURCE_GROUP = "noderescue-sim-RG"
FAKE_TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
FAKE_CLIENT_ID = "00000000-0000-0000-0000-0000000000bb"
FAKE_CLIENT_SECRET = "noderescue-sim-fake-secret"  # nothing checks it

# Real seconds an operation stays InProgress: long enough that a poller sees it once.
OPERATION_SECONDS = 0.2
_SS_PATH = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{ss}"
_NPD_CLEARED_BY_REIMAGE = "Reimaged"
# deleteInstances' ids, kept on the request for its audit lines.
_INSTANCE_IDS = web.RequestKey("instance_ids", list[str])


@dataclass(slots=True)
class ScaleSetVm:
    instance_id: str
    node: str
    zone: str  # the short zone name ("1")
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class ScaleSet:
    nodes: GroupNodes
    vms: dict[str, ScaleSetVm] = field(default_factory=dict)
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def name(self) -> str:
        return self.nodes.group.name


@dataclass(slots=True)
class Operation:
    op_id: str
    name: str  # restart | reimage | delete | runCommand | deleteInstances | update
    done_at: float
    result: dict[str, Any] | None = None  # the Location body once done (None: 200 with no body)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _throttled(retry_after: str) -> web.Response:
    return _error(
        429,
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation type.",
        headers={"Retry-After": retry_after, "x-ms-ratelimit-remaining-resource": "0"},
    )


class AzureCloud:
    """The ARM emulator for one scenario. ``await start()``, ``await create_groups()``, ``await stop()``."""

    page_size = 50

    def __init__(
        self,
        scenario: Scenario,
        cluster: ClusterEffects,
        *,
        ca_bundle: Path,
        audit: AuditSink | None = None,
        throttle: ThrottleSwitch | None = None,
        subscription_id: str = SUBSCRIPTION_ID,
        resource_group: str = RESOURCE_GROUP,
    ) -> None:
        self.scenario = scenario
        self.location = scenario.region
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.ca_bundle = ca_bundle
        self._cluster = cluster
        self._audit = audit
        self._throttle = throttle
        self._scale_sets = {g.name.lower(): ScaleSet(GroupNodes(g)) for g in scenario.groups}
        self._operations: dict[str, Operation] = {}
        self._runner: web.AppRunner | None = None
        self.endpoint = ""

    # ----------------------------------------------------------------------------------------
    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        tls = await asyncio.to_thread(make_server_tls, self.ca_bundle)
        app = web.Application(middlewares=[self._guard])
        vms = _SS_PATH + "/virtualMachines"
        routes = [
            ("GET", _SS_PATH, self._get_scale_set),
            ("PUT", _SS_PATH, self._update_scale_set),
            ("PATCH", _SS_PATH, self._update_scale_set),
            ("POST", _SS_PATH + "/delete", self._delete_instances),
            ("GET", vms, self._list_vms),
            ("GET", vms + "/{id}", self._get_vm),
            ("DELETE", vms + "/{id}", self._delete_vm),
            ("GET", vms + "/{id}/instanceView", self._get_instance_view),
            ("POST", vms + "/{id}/restart", self._restart),
            ("POST", vms + "/{id}/reimage", self._reimage),
            ("POST", vms + "/{id}/runCommand", self._run_command),
            (
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{op}",
                self._op_status,
            ),
            (
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operationResults/{op}",
                self._op_result,
            ),
        ]
        # Microsoft Entra ID's token endpoint, for credentials that read AZURE_AUTHORITY_HOST.
        routes.append(("POST", "/{tenant}/oauth2/v2.0/token", self._token))
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls.context)
        await site.start()
        self.endpoint = f"https://{host}:{self._runner.addresses[0][1]}"
        log.info("sim_azure_started", endpoint=self.endpoint, ca_bundle=str(self.ca_bundle))
        return self.endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def create_groups(self) -> None:
        for scale_set in self._scale_sets.values():
            for zone in spread(scale_set.nodes.group.size, scale_set.nodes.group.zones):
                self._add_vm(scale_set, zone, join_after_s=0.0)

    # ----------------------------------------------------------------------------------------
    # the model

    def instance_of_node(self, node: str) -> str | None:
        """The VMSS instance id behind a node (None once the VM is deleted)."""
        for scale_set in self._scale_sets.values():
            found = scale_set.nodes.instance_of_node(node)
            if found is not None:
                return found
        return None

    def provider_id(self, scale_set: str, instance_id: str) -> str:
        return f"azure://{self._ss_id(scale_set)}/virtualMachines/{instance_id}"

    def _ss_id(self, scale_set: str) -> str:
        return _SS_PATH.format(sub=self.subscription_id, rg=self.resource_group, ss=scale_set)

    def _add_vm(self, scale_set: ScaleSet, zone: str, *, join_after_s: float) -> ScaleSetVm:
        nodes = scale_set.nodes
        instance_id = str(nodes.next_index)
        name = nodes.name_new(instance_id)
        vm = ScaleSetVm(instance_id=instance_id, node=name, zone=zone)
        scale_set.vms[instance_id] = vm
        full_zone = self.scenario.full_zone(zone)
        self._cluster.add_node(
            name,
            labels=node_labels(self.scenario, nodes.group, full_zone),
            zone=full_zone,
            provider_id=self.provider_id(scale_set.name, instance_id),
            join_after_s=join_after_s,
            boot_seconds=nodes.group.boot_seconds,
        )
        if nodes.group.repairable:
            self._cluster.set_repairable(name, True)
        return vm

    def _remove_vm(self, scale_set: ScaleSet, instance_id: str) -> None:
        vm = scale_set.vms.pop(instance_id)
        scale_set.nodes.node_of_instance.pop(instance_id, None)
        self._cluster.remove_node(vm.node)
        log.info("sim_azure_vm_deleted", node=vm.node, scale_set=scale_set.name, instance=instance_id)

    def _set_capacity(self, scale_set: ScaleSet, capacity: int) -> None:
        while len(scale_set.vms) > capacity:  # scale-in removes the newest VMs first
            self._remove_vm(scale_set, max(scale_set.vms, key=int))
        zones = scale_set.nodes.group.zones
        while len(scale_set.vms) < capacity:  # scale-out fills the emptiest zone
            zone = min(zones, key=lambda z: sum(1 for vm in scale_set.vms.values() if vm.zone == z))
            vm = self._add_vm(scale_set, zone, join_after_s=scale_set.nodes.group.join_seconds)
            log.info("sim_azure_vm_created", node=vm.node, scale_set=scale_set.name, instance=vm.instance_id)

    def _vm_json(self, scale_set: ScaleSet, vm: ScaleSetVm, *, expand: bool) -> dict[str, Any]:
        group = scale_set.nodes.group
        body: dict[str, Any] = {
            "id": f"{self._ss_id(scale_set.name)}/virtualMachines/{vm.instance_id}",
            "name": f"{scale_set.name}_{vm.instance_id}",
            "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            "location": self.location,
            "instanceId": vm.instance_id,
            "zones": [vm.zone],
            "sku": {"name": group.instance_type, "tier": "Standard"},
            "properties": {
                "latestModelApplied": True,
                "vmId": vm.vm_id,
                "provisioningState": "Succeeded",
                "hardwareProfile": {"vmSize": group.instance_type},
                "osProfile": {"computerName": vm.node, "adminUsername": "azureuser"},
            },
        }
        if expand:
            body["properties"]["instanceView"] = self._instance_view(vm)
        return body

    def _instance_view(self, vm: ScaleSetVm) -> dict[str, Any]:
        node = self._cluster.get_node(vm.node)
        running = node is not None
        return {
            "platformUpdateDomain": 0,
            "platformFaultDomain": 0,
            "computerName": vm.node,
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                },
                {
                    "code": "PowerState/running" if running else "PowerState/starting",
                    "level": "Info",
                    "displayStatus": "VM running" if running else "VM starting",
                },
            ],
        }

    def _scale_set_json(self, scale_set: ScaleSet) -> dict[str, Any]:
        group = scale_set.nodes.group
        return {
            "id": self._ss_id(scale_set.name),
            "name": scale_set.name,
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "location": self.location,
            "sku": {"name": group.instance_type, "tier": "Standard", "capacity": len(scale_set.vms)},
            "zones": list(group.zones),
            "properties": {
                "provisioningState": "Succeeded",
                "uniqueId": scale_set.unique_id,
                "orchestrationMode": "Uniform",
                "upgradePolicy": {"mode": "Manual"},
                "overprovision": False,
                "singlePlacementGroup": False,
            },
        }

    # ----------------------------------------------------------------------------------------
    # HTTP plumbing

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/oauth2/v2.0/token"):
            response: web.StreamResponse = await handler(request)
            return response
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return _error(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        polling = "/operations/" in request.path or "/operationResults/" in request.path
        fault = None if polling else await self._take_fault(request)
        if fault is not None and fault.mode == "before":
            return await self._fail(request, fault, applied=False)
        if not polling and self._throttle is not None and self._throttle.draw_cloud_throttle():
            await self._keep_instance_ids(request)
            retry_after = str(self._throttle.retry_after_s)
            throttled = _throttled(retry_after)
            self._audit_request(request, 429)
            log.info("sim_azure_throttled", method=request.method, path=request.path)
            return throttled
        served: web.StreamResponse = await handler(request)
        self._audit_request(request, served.status)
        if fault is not None:
            return await self._fail(request, fault, applied=True)
        return served

    async def _keep_instance_ids(self, request: web.Request) -> None:
        if request.method == "POST" and request.path.endswith("/delete") and _INSTANCE_IDS not in request:
            # deleteInstances names its VMs in the body: the audit lines and faults want them.
            with contextlib.suppress(ValueError):
                body = await request.json()
                if isinstance(body, dict) and isinstance(body.get("instanceIds"), list):
                    request[_INSTANCE_IDS] = [str(i) for i in body["instanceIds"]]

    async def _take_fault(self, request: web.Request) -> FaultSpec | None:
        if self._throttle is None or request.method == "GET":
            return None
        tail = request.path.rstrip("/").rpartition("/")[2]
        instance = request.match_info.get("id")
        if instance is not None:
            call = tail if request.method == "POST" else "delete"
            ids = [instance]
        elif tail == "delete":
            call = "delete"
            await self._keep_instance_ids(request)
            ids = request.get(_INSTANCE_IDS, [])
        else:
            call = "capacity"
            ids = []
        scale_set = self._scale_sets.get(request.match_info.get("ss", "").lower())
        names = list(ids)
        nodes = []
        if scale_set is not None:
            names += [f"{scale_set.name}_{i}" for i in ids]
            nodes = [scale_set.vms[i].node for i in ids if i in scale_set.vms]
        return self._throttle.take_fault("azure", call, instances=names, nodes=nodes)

    async def _fail(self, request: web.Request, fault: FaultSpec, *, applied: bool) -> web.StreamResponse:
        """Answer with the fault's error. ``applied``: the handler ran (and was audited with its
        real answer); otherwise the audit line carries what the client got."""
        log.info(
            "sim_azure_fault", method=request.method, path=request.path, error=fault.error, mode=fault.mode
        )
        if fault.error == "timeout":
            if not applied:
                self._audit_request(request, AUDIT_NO_ANSWER)
            await hold_until_client_gives_up(request)
            raise asyncio.CancelledError
        if fault.error == "reset":
            if not applied:
                self._audit_request(request, AUDIT_RESET)
            reset_connection(request)
            raise asyncio.CancelledError
        if fault.error == 429:
            response = _throttled(str(fault.retry_after))
        elif fault.error == 503:
            response = _error(503, "ServiceUnavailable", "The service is temporarily unavailable (injected).")
        else:
            response = _error(500, "InternalServerError", "An internal server error occurred (injected).")
        if not applied:
            self._audit_request(request, response.status)
        return response

    def _audit_request(self, request: web.Request, code: int) -> None:
        if self._audit is None or request.method == "GET":
            return
        ss = request.match_info.get("ss", "")
        instance = request.match_info.get("id")
        tail = request.path.rstrip("/").rpartition("/")[2]
        verb = {
            "restart": "restart",
            "reimage": "reimage",
            "runCommand": "runCommand",
            "delete": "deleteInstances",
        }
        user_agent = request.headers.get("User-Agent", "")
        if instance is not None:
            op = verb.get(tail, "delete") if request.method == "POST" else "delete"
            resource = "virtualMachineScaleSets/virtualMachines"
            self._audit.write(
                api="azure",
                verb=op,
                resource=resource,
                name=f"{ss}/{instance}",
                code=code,
                user_agent=user_agent,
            )
        elif tail == "delete":
            ids = request.get(_INSTANCE_IDS, [])
            for instance_id in ids or [""]:
                self._audit.write(
                    api="azure",
                    verb="deleteInstances",
                    resource="virtualMachineScaleSets/virtualMachines",
                    name=f"{ss}/{instance_id}",
                    code=code,
                    user_agent=user_agent,
                )
        else:
            self._audit.write(
                api="azure",
                verb="update",
                resource="virtualMachineScaleSets",
                name=ss,
                code=code,
                user_agent=user_agent,
            )

    def _scale_set(self, request: web.Request) -> ScaleSet:
        info = request.match_info
        if info["sub"] != self.subscription_id:
            raise _HttpError(
                404, "SubscriptionNotFound", f"The subscription '{info['sub']}' could not be found."
            )
        if info["rg"].lower() != self.resource_group.lower():
            raise _HttpError(
                404, "ResourceGroupNotFound", f"Resource group '{info['rg']}' could not be found."
            )
        scale_set = self._scale_sets.get(info["ss"].lower())
        if scale_set is None:
            raise _HttpError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{info['ss']}' under resource group "
                f"'{info['rg']}' was not found.",
            )
        return scale_set

    def _vm(self, request: web.Request) -> tuple[ScaleSet, ScaleSetVm]:
        scale_set = self._scale_set(request)
        vm = scale_set.vms.get(request.match_info["id"])
        if vm is None:
            raise _HttpError(
                404,
                "NotFound",
                f"The entity was not found: {scale_set.name}/{request.match_info['id']}.",
            )
        return scale_set, vm

    def _accepted(
        self, request: web.Request, name: str, result: dict[str, Any] | None = None
    ) -> web.Response:
        loop = asyncio.get_running_loop()
        op = Operation(
            op_id=str(uuid.uuid4()), name=name, done_at=loop.time() + OPERATION_SECONDS, result=result
        )
        self._operations[op.op_id] = op
        base = (
            f"{self.endpoint}/subscriptions/{self.subscription_id}"
            f"/providers/Microsoft.Compute/locations/{self.location}"
        )
        api_version = request.query.get("api-version", "")
        headers = {
            "Azure-AsyncOperation": f"{base}/operations/{op.op_id}?api-version={api_version}",
            "Location": f"{base}/operationResults/{op.op_id}?api-version={api_version}",
            "Retry-After": "1",
        }
        return web.Response(status=202, headers=headers)

    # ----------------------------------------------------------------------------------------
    # handlers

    async def _get_scale_set(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self._scale_set_json(self._scale_set(request)))
        except _HttpError as exc:
            return exc.response()

    async def _update_scale_set(self, request: web.Request) -> web.Response:
        try:
            scale_set = self._scale_set(request)
            body = await request.json()
            capacity = body.get("sku", {}).get("capacity") if isinstance(body, dict) else None
            if capacity is not None:
                if not isinstance(capacity, int) or capacity < 0:
                    raise _HttpError(400, "InvalidParameter", "sku.capacity must be a non-negative integer.")
                self._set_capacity(scale_set, capacity)
        except _HttpError as exc:
            return exc.response()
        except json.JSONDecodeError:
            return _error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        accepted = self._accepted(request, "update")
        response = web.json_response(self._scale_set_json(scale_set), status=200)
        # An update answers 200 with the resource and an operation to poll (no Location).
        response.headers["Azure-AsyncOperation"] = accepted.headers["Azure-AsyncOperation"]
        response.headers["Retry-After"] = "1"
        return response

    async def _delete_instances(self, request: web.Request) -> web.Response:
        try:
            scale_set = self._scale_set(request)
            body = await request.json()
            ids = body.get("instanceIds") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not ids:
                raise _HttpError(400, "InvalidParameter", "instanceIds is required.")
            request[_INSTANCE_IDS] = [str(i) for i in ids]
            missing = [str(i) for i in ids if str(i) not in scale_set.vms]
            if missing:
                raise _HttpError(
                    400,
                    "InvalidParameter",
                    f"The instance ids {', '.join(missing)} are not valid for {scale_set.name}.",
                )
            for instance_id in ids:
                self._remove_vm(scale_set, str(instance_id))
        except _HttpError as exc:
            return exc.response()
        except json.JSONDecodeError:
            return _error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        return self._accepted(request, "deleteInstances")

    async def _list_vms(self, request: web.Request) -> web.Response:
        try:
            scale_set = self._scale_set(request)
        except _HttpError as exc:
            return exc.response()
        expand = request.query.get("$expand", "") == "instanceView"
        vms = sorted(scale_set.vms.values(), key=lambda vm: int(vm.instance_id))
        skip = int(request.query.get("$skiptoken", "0") or 0)
        page = vms[skip : skip + self.page_size]
        body: dict[str, Any] = {"value": [self._vm_json(scale_set, vm, expand=expand) for vm in page]}
        if skip + self.page_size < len(vms):
            query = f"api-version={request.query.get('api-version', '')}&$skiptoken={skip + self.page_size}"
            if expand:
                query += "&$expand=instanceView"
            body["nextLink"] = f"{self.endpoint}{request.path}?{query}"
        return web.json_response(body)

    async def _get_vm(self, request: web.Request) -> web.Response:
        try:
            scale_set, vm = self._vm(request)
        except _HttpError as exc:
            return exc.response()
        expand = request.query.get("$expand", "") == "instanceView"
        return web.json_response(self._vm_json(scale_set, vm, expand=expand))

    async def _get_instance_view(self, request: web.Request) -> web.Response:
        try:
            _, vm = self._vm(request)
        except _HttpError as exc:
            return exc.response()
        return web.json_response(self._instance_view(vm))

    async def _delete_vm(self, request: web.Request) -> web.Response:
        try:
            scale_set, vm = self._vm(request)
        except _HttpError as exc:
            return exc.response()
        self._remove_vm(scale_set, vm.instance_id)
        return self._accepted(request, "delete")

    async def _restart(self, request: web.Request) -> web.Response:
        try:
            scale_set, vm = self._vm(request)
        except _HttpError as exc:
            return exc.response()
        self._cluster.reboot_node(vm.node)
        log.info("sim_azure_restart", node=vm.node, scale_set=scale_set.name, instance=vm.instance_id)
        return self._accepted(request, "restart")

    async def _reimage(self, request: web.Request) -> web.Response:
        try:
            scale_set, vm = self._vm(request)
        except _HttpError as exc:
            return exc.response()
        # A fresh OS disk: whatever NPD saw on the old one is gone.
        node = self._cluster.get_node(vm.node) or {}
        for cond in node.get("status", {}).get("conditions", []):
            ctype = cond.get("type", "")
            if ctype in KUBELET_CONDITION_TYPES:
                continue
            healthy = "True" if ctype in HEALTHY_WHEN_TRUE else "False"
            if cond.get("status") != healthy:
                self._cluster.set_condition(vm.node, ctype, healthy, _NPD_CLEARED_BY_REIMAGE)
        self._cluster.reboot_node(vm.node)
        log.info("sim_azure_reimage", node=vm.node, scale_set=scale_set.name, instance=vm.instance_id)
        return self._accepted(request, "reimage")

    async def _run_command(self, request: web.Request) -> web.Response:
        try:
            scale_set, vm = self._vm(request)
            body = await request.json()
        except _HttpError as exc:
            return exc.response()
        except json.JSONDecodeError:
            return _error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        if not isinstance(body, dict) or body.get("commandId") != "RunShellScript":
            return _error(400, "InvalidParameter", "commandId must be RunShellScript on a Linux VM.")
        script = body.get("script") or []
        healed = self._cluster.run_repair(vm.node)
        log.info("sim_azure_repair", node=vm.node, scale_set=scale_set.name, healed=healed)
        outcome = "repaired" if healed else "still unhealthy after the command"
        message = (
            f"Enable succeeded: \n[stdout]\nnoderescue sim: ran {len(script)} line(s); "
            f"node {vm.node} {outcome}\n\n[stderr]\n"
        )
        result = {
            "value": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "message": message,
                }
            ]
        }
        return self._accepted(request, "runCommand", result)

    async def _token(self, request: web.Request) -> web.Response:
        """A client-credentials token for any client and secret (the ARM side accepts any)."""
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "noderescue sim: client credentials only",
                },
                status=400,
            )
        token = f"sim-{uuid.uuid4().hex}"
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _operation(self, request: web.Request) -> Operation | None:
        return self._operations.get(request.match_info["op"])

    async def _op_status(self, request: web.Request) -> web.Response:
        op = self._operation(request)
        if op is None:
            return _error(404, "NotFound", "The operation was not found.")
        now = asyncio.get_running_loop().time()
        status = "Succeeded" if now >= op.done_at else "InProgress"
        headers = {} if status == "Succeeded" else {"Retry-After": "1"}
        return web.json_response({"name": op.op_id, "status": status}, headers=headers)

    async def _op_result(self, request: web.Request) -> web.Response:
        op = self._operation(request)
        if op is None:
            return _error(404, "NotFound", "The operation was not found.")
        if asyncio.get_running_loop().time() < op.done_at:
            return web.Response(status=202, headers={"Location": str(request.url), "Retry-After": "1"})
        if op.result is None:
            return web.Response(status=200)
        return web.json_response(op.result)


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return _error(self.status, self.code, self.message)
