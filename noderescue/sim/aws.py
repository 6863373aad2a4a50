"""Emulated AWS: moto's server (EC2, Auto Scaling, SSM) behind a reverse proxy of ours.

Clients talk to the proxy (``AwsCloud.endpoint``); it forwards every request to an in-process
``ThreadedMotoServer`` and, around that:

- answers a share of calls (``cloud_throttle_rate``) with the throttling error AWS sends:
  ``Throttling`` (Auto Scaling, query protocol, HTTP 400), ``RequestLimitExceeded`` (EC2, HTTP
  503 as EC2 sends it), ``ThrottlingException`` (SSM, JSON protocol, HTTP 400);
- applies targeted faults (``FaultSpec`` with ``api: aws``, ``call`` = the Action) to any call:
  ``before`` answers the error without forwarding, ``after`` forwards (moto applies it, the
  cluster sees the effect, the audit line says the real answer) and then answers the error
  instead of moto's reply;
- writes one audit line per mutating call and instance (verb = the Action, resource = the
  service, name = the instance id, or the group name for calls without one);
- turns cloud actions into cluster effects. ``TerminateInstanceInAutoScalingGroup`` -> the
  Node goes NotReady and is deleted, and the replacement moto launches in the same call joins as
  ``<group>-<next index>`` after the group's ``joinSeconds``, in the group's emptiest zone as an
  ASG's AZ rebalancing would place it (any mutating Auto Scaling call
  re-syncs its group with the Nodes, so capacity changes work too); EC2 ``TerminateInstances``
  -> the Node goes away and the ASG replaces the instance (as its health check would);
  ``StopInstances`` -> the kubelet stops reporting; ``StartInstances`` and ``RebootInstances``
  (a no-op in moto) -> NotReady for ``bootSeconds``, then Ready with a new bootID;
  SSM ``SendCommand`` -> a repair attempt on each instance named in the request's
  ``InstanceIds`` (moto would target every instance and accept unknown ids).

A repair that does not heal the node is what a real failed repair usually looks like: the
command itself succeeds (``GetCommandInvocation`` says ``Success``) and the node stays unhealthy;
its standard output says which happened.

The moto server is started once per process and kept (a stop costs half a second); each
``AwsCloud`` works in an AWS account of its own (moto's ``x-moto-account-id``), so several worlds
can run side by side in one process without seeing each other's groups.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

import aiohttp
import structlog
from aiohttp import web

from noderescue.sim.faults import (
    AUDIT_NO_ANSWER,
    AUDIT_RESET,
    FaultSpec,
    hold_until_client_gives_up,
    reset_connection,
)
from noderescue.sim.scenario import (
    AuditSink,
    ClusterEffects,
    GroupNodes,
    Scenario,
    ThrottleSwitch,
    node_labels,
    spread,
)

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client

log = structlog.get_logger(__name__)

FAKE_ACCESS_KEY_ID = "AKIANODERESCUESIM000"
FAKE_SECRET_ACCESS_KEY = "noderescue-sim-fake-secret"  # moto accepts any credentials
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_QUERY_VERSIONS = {"2011-01-01": "autoscaling", "2016-11-15": "ec2"}
# Headers the proxy does not copy between client and moto: hop-by-hop ones, and those that aiohttp
# sets itself for the new connection and body.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "server", "date"}
_UPSTREAM_TIMEOUT_S = 60.0
_ACCOUNT_HEADER = "x-moto-account-id"  # moto's per-request account switch


@dataclass(frozen=True, slots=True)
class AwsCall:
    """What the proxy needs to know about one request."""

    service: str  # autoscaling | ec2 | ssm | "" (moto-api and the like)
    action: str
    params: dict[str, Any]
    instance_ids: tuple[str, ...]

    @property
    def mutating(self) -> bool:
        return bool(self.action) and not self.action.startswith(("Describe", "List", "Get"))


def parse_call(headers: Mapping[str, str], body: bytes, query: str) -> AwsCall:
    """Service, action and instance ids of a query-protocol (EC2, Auto Scaling) or JSON (SSM) call."""
    scope = _CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    target = headers.get("X-Amz-Target", "")
    if target:
        action = target.rpartition(".")[2]
        params: dict[str, Any] = json.loads(body or b"{}")
        ids = params.get("InstanceIds") or ([params["InstanceId"]] if "InstanceId" in params else [])
        service = scope.group(2) if scope else "ssm"
        return AwsCall(service=service, action=action, params=params, instance_ids=tuple(ids))
    form = parse_qs(body.decode() or query, keep_blank_values=True)
    flat = {k: v[0] for k, v in form.items()}
    action = flat.get("Action", "")
    service = scope.group(2) if scope else _QUERY_VERSIONS.get(flat.get("Version", ""), "")
    ids = [
        v
        for k, v in sorted(flat.items(), key=lambda kv: _member_order(kv[0]))
        if k == "InstanceId" or re.fullmatch(r"InstanceId\.\d+|InstanceIds\.member\.\d+", k)
    ]
    return AwsCall(service=service, action=action, params=flat, instance_ids=tuple(ids))


def _member_order(key: str) -> tuple[str, int]:
    prefix, _, index = key.rpartition(".")
    return (prefix, int(index)) if index.isdigit() else (key, 0)


def throttle_response(service: str) -> web.Response:
    """The error AWS answers a throttled call with, per protocol."""
    if service == "ssm":
        return _json_error(400, "ThrottlingException", "Rate exceeded")
    if service == "ec2":
        return _ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")
    return _query_error(400, "Sender", "Throttling", "Rate exceeded")


def error_response(service: str, error: Literal[500, 503, 429]) -> web.Response:
    """An injected error, as the service's protocol spells it (429 is the service's throttling
    error: AWS APIs do not answer 429 themselves)."""
    if error == 429:
        return throttle_response(service)
    if service == "ssm":
        code = "InternalServerError" if error == 500 else "ServiceUnavailable"
        return _json_error(error, code, "injected by the emulator")
    if service == "ec2":
        code = "InternalError" if error == 500 else "Unavailable"
        return _ec2_error(error, code, "injected by the emulator")
    code = "InternalFailure" if error == 500 else "ServiceUnavailable"
    return _query_error(error, "Receiver", code, "injected by the emulator")


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"__type": code, "message": message}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "x-amzn-ErrorType": code,
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )


def _ec2_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message>"
        f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return web.Response(status=status, text=xml, content_type="text/xml")


def _query_error(status: int, kind: str, code: str, message: str) -> web.Response:
    xml = (
        '<ErrorResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=xml, content_type="text/xml")


class AwsCloud:
    """moto + our proxy for one scenario. ``await start()``, ``await create_groups()``, ``await stop()``."""

    def __init__(
        self,
        scenario: Scenario,
        cluster: ClusterEffects,
        *,
        audit: AuditSink | None = None,
        throttle: ThrottleSwitch | None = None,
    ) -> None:
        self.scenario = scenario
        self.region = scenario.region
        self._cluster = cluster
        self._audit = audit
        self._throttle = throttle
        self._groups = {g.name: GroupNodes(g) for g in scenario.groups}
        # moto keeps one state per process; an account of its own keeps this world's ASGs and
        # instances apart from any other world's, even at the same time.
        self.account_id = f"{uuid.uuid4().int % 10**12:012d}"
        self._moto_url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._autoscaling: AutoScalingClient | None = None
        self._ec2: EC2Client | None = None
        # (command id, instance id) -> what the repair did, for GetCommandInvocation's stdout.
        self._repairs: dict[tuple[str, str], str] = {}
        self._sync_locks: dict[str, asyncio.Lock] = {}
        self._placement_locks: dict[str, asyncio.Lock] = {}
        self.endpoint = ""

    # ----------------------------------------------------------------------------------------
    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._moto_url = await asyncio.to_thread(_moto_url)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._autoscaling, self._ec2 = await asyncio.to_thread(self._make_clients)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.endpoint = f"http://{host}:{bound[1]}"
        log.info("sim_aws_started", endpoint=self.endpoint, region=self.region)
        return self.endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _make_clients(self) -> tuple[AutoScalingClient, EC2Client]:
        import boto3

        kwargs: dict[str, Any] = {
            "endpoint_url": self._moto_url,
            "region_name": self.region,
            "aws_access_key_id": FAKE_ACCESS_KEY_ID,
            "aws_secret_access_key": FAKE_SECRET_ACCESS_KEY,
        }
        autoscaling, ec2 = boto3.client("autoscaling", **kwargs), boto3.client("ec2", **kwargs)
        for client in (autoscaling, ec2):
            client.meta.events.register("before-sign.*.*", self._mark_account)
        return autoscaling, ec2

    def _mark_account(self, request: Any, **_: Any) -> None:
        request.headers[_ACCOUNT_HEADER] = self.account_id

    # ----------------------------------------------------------------------------------------
    # the scenario's groups

    async def create_groups(self) -> None:
        """One ASG per group with its instances spread round-robin over the group's zones."""
        for group in self.scenario.groups:
            zones = [self.scenario.full_zone(z) for z in group.zones]
            placed = await asyncio.to_thread(
                self._create_group, group.name, group.instance_type, zones, group.size
            )
            nodes = self._groups[group.name]
            for instance_id, zone in placed:
                self._add_node(nodes, instance_id, zone, join_after_s=0.0)

    def _create_group(
        self, name: str, instance_type: str, zones: list[str], size: int
    ) -> list[tuple[str, str]]:
        assert self._autoscaling is not None and self._ec2 is not None
        self._ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={"ImageId": "ami-0123456789abcdef0", "InstanceType": instance_type},  # type: ignore[typeddict-item]
        )
        self._autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
            MinSize=0,
            MaxSize=max(2 * size, size + 10),
            DesiredCapacity=0,
            AvailabilityZones=zones,
        )
        by_zone: dict[str, list[str]] = {}
        for zone in zones:
            count = spread(size, zones).count(zone)
            if count == 0:
                continue
            reservation = self._ec2.run_instances(
                ImageId="ami-0123456789abcdef0",
                MinCount=count,
                MaxCount=count,
                InstanceType=instance_type,  # type: ignore[arg-type]
                Placement={"AvailabilityZone": zone},
            )
            by_zone[zone] = [i["InstanceId"] for i in reservation["Instances"]]
        placed = [(by_zone[zone].pop(0), zone) for zone in spread(size, zones)]
        ids = [instance_id for instance_id, _ in placed]
        for chunk in range(0, len(ids), 20):  # AttachInstances takes 20 ids at most
            self._autoscaling.attach_instances(AutoScalingGroupName=name, InstanceIds=ids[chunk : chunk + 20])
        # MinSize = size: a terminate without decrement is replaced, as in a real worker ASG.
        self._autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=size, DesiredCapacity=size
        )
        return placed

    def _add_node(self, nodes: GroupNodes, instance_id: str, zone: str, *, join_after_s: float) -> str:
        name = nodes.name_new(instance_id)
        self._cluster.add_node(
            name,
            labels=node_labels(self.scenario, nodes.group, zone),
            zone=zone,
            provider_id=f"aws:///{zone}/{instance_id}",
            join_after_s=join_after_s,
            boot_seconds=nodes.group.boot_seconds,
        )
        if nodes.group.repairable:
            self._cluster.set_repairable(name, True)
        return name

    def node_of_instance(self, instance_id: str) -> str | None:
        for nodes in self._groups.values():
            if instance_id in nodes.node_of_instance:
                return nodes.node_of_instance[instance_id]
        return None

    def instance_of_node(self, node: str) -> str | None:
        for nodes in self._groups.values():
            found = nodes.instance_of_node(node)
            if found is not None:
                return found
        return None

    def _group_of_instance(self, instance_id: str) -> GroupNodes | None:
        for nodes in self._groups.values():
            if instance_id in nodes.node_of_instance:
                return nodes
        return None

    async def _sync_group(self, nodes: GroupNodes) -> None:
        """Make the group's Nodes follow its ASG: new instances join, gone instances leave.

        Serialized per group: two concurrent calls must not apply an older snapshot after a
        newer one (that would bring a terminated instance back as a new Node)."""
        assert self._autoscaling is not None
        client = self._autoscaling
        lock = self._sync_locks.setdefault(nodes.group.name, asyncio.Lock())
        async with lock:
            reply = await asyncio.to_thread(
                lambda: client.describe_auto_scaling_groups(AutoScalingGroupNames=[nodes.group.name])
            )
            groups = reply["AutoScalingGroups"]
            members = groups[0]["Instances"] if groups else []
            instances = {i["InstanceId"]: i["AvailabilityZone"] for i in members}
            for instance_id, name in list(nodes.node_of_instance.items()):
                if instance_id not in instances:
                    del nodes.node_of_instance[instance_id]
                    self._cluster.remove_node(name)
                    log.info("sim_aws_instance_gone", node=name, instance=instance_id)
            for instance_id, zone in instances.items():
                if instance_id not in nodes.node_of_instance:
                    name = self._add_node(nodes, instance_id, zone, join_after_s=nodes.group.join_seconds)
                    log.info("sim_aws_instance_launched", node=name, instance=instance_id, zone=zone)

    async def _replace_outside_terminate(self, nodes: GroupNodes, instance_id: str) -> None:
        """An ASG instance terminated through EC2: AWS's health check takes it out of the group and
        launches a replacement. moto leaves it in the group, so we detach it (which refills)."""
        assert self._autoscaling is not None
        client = self._autoscaling
        await asyncio.to_thread(
            lambda: client.detach_instances(
                AutoScalingGroupName=nodes.group.name,
                InstanceIds=[instance_id],
                ShouldDecrementDesiredCapacity=False,
            )
        )
        await self._sync_group(nodes)

    # ----------------------------------------------------------------------------------------
    # the proxy

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            call = parse_call(request.headers, body, request.query_string)
        except (ValueError, UnicodeDecodeError):
            call = AwsCall(service="", action="", params={}, instance_ids=())
        user_agent = request.headers.get("User-Agent", "")
        fault = self._take_fault(call)
        if fault is not None and fault.mode == "before":
            return await self._fail(request, call, fault, user_agent, applied=False)
        if call.action and self._throttle is not None and self._throttle.draw_cloud_throttle():
            response = throttle_response(call.service)
            self._write_audit(call, response.status, user_agent)
            log.info("sim_aws_throttled", service=call.service, action=call.action)
            return response
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers[_ACCOUNT_HEADER] = self.account_id
        steered = self._replaced_group(call)
        if steered is None:
            status, data, reply_headers = await self._forward(request, headers, body)
        else:
            # moto launches the replacement in a random zone of the group; an ASG rebalances, so
            # point the group at its emptiest zone for the call (serialized per group).
            lock = self._placement_locks.setdefault(steered.group.name, asyncio.Lock())
            async with lock:
                zones = await self._steer_replacement(steered, call.instance_ids[0])
                try:
                    status, data, reply_headers = await self._forward(request, headers, body)
                finally:
                    await self._set_zones(steered, zones)
        if status < 300:
            data = await self._effects(call, data)
        self._write_audit(call, status, user_agent)
        if fault is not None:
            return await self._fail(request, call, fault, user_agent, applied=True)
        return web.Response(status=status, body=data, headers=reply_headers)

    def _take_fault(self, call: AwsCall) -> FaultSpec | None:
        if not call.action or self._throttle is None:
            return None
        nodes = [n for n in map(self.node_of_instance, call.instance_ids) if n is not None]
        return self._throttle.take_fault("aws", call.action, instances=call.instance_ids, nodes=nodes)

    async def _fail(
        self, request: web.Request, call: AwsCall, fault: FaultSpec, user_agent: str, *, applied: bool
    ) -> web.StreamResponse:
        """Answer ``call`` with the fault's error. ``applied``: the call took effect (and was
        audited with its real answer); otherwise the audit line carries what the client got."""
        log.info(
            "sim_aws_fault", service=call.service, action=call.action, error=fault.error, mode=fault.mode
        )
        if fault.error == "timeout":
            if not applied:
                self._write_audit(call, AUDIT_NO_ANSWER, user_agent)
            await hold_until_client_gives_up(request)
            raise asyncio.CancelledError
        if fault.error == "reset":
            if not applied:
                self._write_audit(call, AUDIT_RESET, user_agent)
            reset_connection(request)
            raise asyncio.CancelledError
        response = error_response(call.service, fault.error)
        if not applied:
            self._write_audit(call, response.status, user_agent)
        return response

    async def _forward(
        self, request: web.Request, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None
        async with (
            asyncio.timeout(_UPSTREAM_TIMEOUT_S),
            self._session.request(
                request.method, f"{self._moto_url}{request.path_qs}", headers=headers, data=body
            ) as up,
        ):
            data = await up.read()
            reply_headers = {k: v for k, v in up.headers.items() if k.lower() not in _NOT_FORWARDED}
            return up.status, data, reply_headers

    def _replaced_group(self, call: AwsCall) -> GroupNodes | None:
        """The group a terminate-with-replacement call will launch an instance in, if any."""
        if call.action != "TerminateInstanceInAutoScalingGroup" or len(call.instance_ids) != 1:
            return None
        if str(call.params.get("ShouldDecrementDesiredCapacity", "")).lower() != "false":
            return None
        group = self._group_of_instance(call.instance_ids[0])
        if group is None or len(group.group.zones) < 2:
            return None
        return group

    async def _steer_replacement(self, nodes: GroupNodes, victim: str) -> list[str]:
        """Restrict the group to the zone with the fewest instances once ``victim`` is gone (its
        own zone on a tie); returns the group's zones, to restore."""
        assert self._autoscaling is not None
        client = self._autoscaling
        reply = await asyncio.to_thread(
            lambda: client.describe_auto_scaling_groups(AutoScalingGroupNames=[nodes.group.name])
        )
        group = reply["AutoScalingGroups"][0]
        zones = list(group["AvailabilityZones"])
        members = [i for i in group["Instances"] if i["InstanceId"] != victim]
        victim_zone = next(
            (i["AvailabilityZone"] for i in group["Instances"] if i["InstanceId"] == victim), None
        )
        counts = {zone: sum(1 for i in members if i["AvailabilityZone"] == zone) for zone in zones}
        target = min(zones, key=lambda zone: (counts[zone], zone != victim_zone))
        await self._set_zones(nodes, [target])
        return zones

    async def _set_zones(self, nodes: GroupNodes, zones: list[str]) -> None:
        assert self._autoscaling is not None
        client = self._autoscaling
        await asyncio.to_thread(
            lambda: client.update_auto_scaling_group(
                AutoScalingGroupName=nodes.group.name, AvailabilityZones=zones
            )
        )

    def _write_audit(self, call: AwsCall, code: int, user_agent: str) -> None:
        if self._audit is None or not call.mutating:
            return
        names: Sequence[str] = call.instance_ids or [str(call.params.get("AutoScalingGroupName", ""))]
        for name in names:
            self._audit.write(
                api="aws",
                verb=call.action,
                resource=call.service,
                name=name,
                code=code,
                user_agent=user_agent,
            )

    async def _effects(self, call: AwsCall, data: bytes) -> bytes:
        """Apply a successful call's effect on the cluster; returns the (maybe amended) body."""
        if call.service == "autoscaling" and call.mutating:
            touched = {}
            for instance_id in call.instance_ids:
                group = self._group_of_instance(instance_id)
                if group is not None:
                    touched[group.group.name] = group
            group_name = call.params.get("AutoScalingGroupName")
            if group_name in self._groups:
                touched[group_name] = self._groups[group_name]
            for nodes in touched.values():
                await self._sync_group(nodes)
        elif call.service == "ec2" and call.action == "RebootInstances":
            for instance_id in call.instance_ids:
                name = self.node_of_instance(instance_id)
                if name is not None:
                    self._cluster.reboot_node(name)
                    log.info("sim_aws_reboot", node=name, instance=instance_id)
        elif call.service == "ec2" and call.action == "StopInstances":
            for instance_id in call.instance_ids:
                name = self.node_of_instance(instance_id)
                if name is not None:
                    self._cluster.stop_kubelet(name)  # the node stops reporting: Unknown after the grace
        elif call.service == "ec2" and call.action == "StartInstances":
            for instance_id in call.instance_ids:
                name = self.node_of_instance(instance_id)
                if name is not None:
                    self._cluster.reboot_node(name)  # boots again: NotReady for bootSeconds, new bootID
        elif call.service == "ec2" and call.action == "TerminateInstances":
            for instance_id in call.instance_ids:
                group = self._group_of_instance(instance_id)
                if group is not None:
                    await self._replace_outside_terminate(group, instance_id)
        elif call.service == "ssm" and call.action == "SendCommand":
            if call.params.get("DocumentName") != "AWS-RunShellScript":
                return data  # only shell commands repair a Linux node
            return self._send_command(call, data)
        elif call.service == "ssm" and call.action == "GetCommandInvocation":
            return self._command_invocation(data)
        return data

    def _send_command(self, call: AwsCall, data: bytes) -> bytes:
        reply = json.loads(data)
        command = reply.get("Command", {})
        requested = list(call.instance_ids)
        for instance_id in requested:
            name = self.node_of_instance(instance_id)
            if name is None:
                continue
            healed = self._cluster.run_repair(name)
            self._repairs[(command.get("CommandId", ""), instance_id)] = (
                f"noderescue sim: node {name} repaired\n"
                if healed
                else f"noderescue sim: node {name} still unhealthy after the command\n"
            )
            log.info("sim_aws_repair", node=name, instance=instance_id, healed=healed)
        if requested:  # moto lists every instance of the region here; AWS lists the requested ones
            command["InstanceIds"] = requested
            command["TargetCount"] = len(requested)
        return json.dumps(reply).encode()

    def _command_invocation(self, data: bytes) -> bytes:
        reply = json.loads(data)
        output = self._repairs.get((reply.get("CommandId", ""), reply.get("InstanceId", "")))
        if output is not None:
            reply["StandardOutputContent"] = output
        return json.dumps(reply).encode()


_moto_server: Any = None
_moto_lock = threading.Lock()


def _moto_url() -> str:
    """The process's moto server, started on first use and kept: moto's state is per process
    anyway, and a stop costs half a second of werkzeug's shutdown poll."""
    global _moto_server
    with _moto_lock:
        if _moto_server is None:
            # Set before moto is imported: loading the default AMIs costs ~1.8 s on the first call.
            os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()  # a daemon thread: it ends with the process
            _moto_server = server
        host, port = _moto_server.get_host_and_port()
        return f"http://{host}:{port}"
