"""Scenarios for the emulated cluster (DESIGN §8): the YAML model, its validation and the event runner.

    name: one-bad-worker
    provider: aws                  # aws | azure | none
    region: eu-west-1
    groups:                        # one ASG (aws) or VMSS (azure) each, named after the group
      - {name: workers, size: 6, zones: [a, b, c], labels: {noderescue.io/class: workers},
         podsPerNode: 4,           # filler pods: a PDB-less workload <group>-pods of size*podsPerNode
         joinSeconds: 5s,          # a new instance's Node joins (Ready) this long after launch
         bootSeconds: 3s,          # a reboot keeps the Node NotReady this long
         instanceType: m5.large, repairable: false,   # repairable: a repair command heals it
         pet: false}               # pets get repair -> reboot -> notify in the daemon config we
                                   # write, cattle get replace
    workloads:                     # ReplicaSet-like, rescheduled when evicted
      - {name: web, replicas: 12, namespace: default, pdb: {maxUnavailable: 1}, emptyDir: false}
    daemonsets: [{name: node-exporter, namespace: kube-system}]
    pods: [{name: debug-shell, node: workers-2}]   # bare pods (no controller) on initial nodes
    events:                        # emulated times from the start; exactly one action each
      - {at: 3s, nodes: [workers-1], condition: {type: KernelDeadlock, status: "True", reason: DockerHung}}
      - {at: 3s, zone: b, kubelet: stop}                  # or start
      - {at: 10s, nodes: [workers-2], repairable: true}   # the next repair command heals it
      - {at: 20s, api: outage, for: 15s}
      - {at: 20s, api: errors, rate: 0.2, codes: [500, 429, timeout], for: 30s}
      - {at: 20s, api: latency, latency: 300ms, for: 30s}
      - {at: 20s, cloud: throttle, rate: 0.5, for: 1m}    # no `for`: until the end
      - {at: 40s, watch: disconnect}                      # or expire (410 Gone)
      - {at: 5s, fault: {api: aws, call: RebootInstances, mode: after, error: reset, count: 1}}
                                   # a targeted fault (noderescue.sim.faults.FaultSpec): one call
                                   # of one API, failed before or after applying it

Times are emulated seconds: with ``time_scale`` X they pass X times faster in real time.

A scenario names a provider, node groups (one ASG or VMSS each, named after the group), workloads
and timed events. Nodes are named ``<group>-<index>`` from 0; a replacement takes the next index
never used in its group (a reused name is how peers terminated the wrong instance, so the
emulator never reuses one).

Zones: a group's ``zones`` are short names. On AWS ``a`` means ``<region>a`` (``eu-west-1a``); on
Azure ``1`` means ``<region>-1`` (``westeurope-1``, as AKS labels nodes); with ``provider: none``
the name is used as is. A zone that already starts with the region is taken verbatim. Events that
target ``zone:`` use the same short names.

ProviderIDs: ``aws:///<az>/<instance-id>``; ``azure:///subscriptions/<sub>/resourceGroups/<rg>/
providers/Microsoft.Compute/virtualMachineScaleSets/<ss>/virtualMachines/<id>``; with
``provider: none`` a node gets ``none:///<node-name>`` — a scheme no cloud adapter owns, so the
daemon treats such nodes as "unknown provider" (notify only), like bare-metal nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import structlog
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from noderescue import config_values
from noderescue.sim.faults import FaultSpec

log = structlog.get_logger(__name__)


def parse_duration(value: object) -> float:
    """``"90s"``, ``"1m30s"``, ``"500ms"``, ``"2h"`` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    if isinstance(value, str):
        return config_values.parse_duration(value)
    raise ValueError(f"invalid duration {value!r}")


def _status_string(value: object) -> object:
    # YAML 1.1 reads a bare True/False as a boolean; conditions carry the strings.
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
ConditionStatus = Annotated[Literal["True", "False", "Unknown"], BeforeValidator(_status_string)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodDisruptionBudget(_Model):
    max_unavailable: int | str | None = Field(default=None, alias="maxUnavailable")
    min_available: int | str | None = Field(default=None, alias="minAvailable")

    @model_validator(mode="after")
    def _exactly_one(self) -> PodDisruptionBudget:
        if (self.max_unavailable is None) == (self.min_available is None):
            raise ValueError("give exactly one of maxUnavailable, minAvailable")
        return self


class Group(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    size: Annotated[int, Field(ge=0)]
    zones: Annotated[list[str], Field(min_length=1)] = ["a"]
    labels: dict[str, str] = {}
    pods_per_node: Annotated[int, Field(ge=0, alias="podsPerNode")] = 0
    join_seconds: Annotated[Duration, Field(alias="joinSeconds")] = 5.0
    boot_seconds: Annotated[Duration, Field(alias="bootSeconds")] = 3.0
    instance_type: str = Field(default="m5.large", alias="instanceType")
    # Whether a repair command heals the group's nodes (events can flip single nodes later).
    repairable: bool = False
    # Pets are repaired and rebooted in place; cattle are replaced (the daemon config we write).
    pet: bool = False


class Workload(_Model):
    name: str
    replicas: Annotated[int, Field(ge=0)]
    namespace: str = "default"
    pdb: PodDisruptionBudget | None = None
    empty_dir: bool = Field(default=False, alias="emptyDir")


class DaemonSet(_Model):
    name: str
    namespace: str = "kube-system"


class BarePod(_Model):
    """A pod no controller owns, pinned to one of the initial nodes (drain refuses it without force)."""

    name: str
    node: str
    namespace: str = "default"


class ConditionChange(_Model):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""


_NODE_ACTIONS = ("condition", "kubelet", "repairable")
_GLOBAL_ACTIONS = ("api", "cloud", "watch", "fault")


class Event(_Model):
    """One timed change. Exactly one action; node actions target ``nodes`` or ``zone``."""

    at: Duration
    nodes: list[str] | None = None
    zone: str | None = None
    condition: ConditionChange | None = None
    kubelet: Literal["stop", "start"] | None = None
    repairable: bool | None = None
    api: Literal["outage", "errors", "latency"] | None = None
    cloud: Literal["throttle"] | None = None
    watch: Literal["disconnect", "expire"] | None = None
    fault: FaultSpec | None = None  # its duration ('for' inside it) is in emulated seconds
    for_: Duration | None = Field(default=None, alias="for")
    rate: Rate | None = None
    latency: Duration | None = None
    # HTTP codes (or "timeout": never answered) that api errors draw from; default 500.
    codes: list[Literal[429, 500, 503, 504, "timeout"]] | None = None

    @property
    def action(self) -> str:
        for name in (*_NODE_ACTIONS, *_GLOBAL_ACTIONS):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated events have an action")

    @model_validator(mode="after")
    def _shape(self) -> Event:
        actions = [name for name in (*_NODE_ACTIONS, *_GLOBAL_ACTIONS) if getattr(self, name) is not None]
        if len(actions) != 1:
            raise ValueError(
                "give exactly one action of condition, kubelet, repairable, api, cloud, watch, fault"
                + (f" (got {', '.join(actions)})" if actions else "")
            )
        action = actions[0]
        targeted = self.nodes is not None or self.zone is not None
        if action in _NODE_ACTIONS:
            if (self.nodes is None) == (self.zone is None):
                raise ValueError(f"a {action} event targets exactly one of nodes, zone")
            if self.for_ is not None or self.rate is not None:
                raise ValueError(f"a {action} event takes no 'for' or 'rate'")
        elif targeted:
            raise ValueError(f"an {action} event applies to the whole cluster: no nodes or zone")
        if self.api == "outage" and self.for_ is None:
            raise ValueError("an api outage needs 'for'")
        if self.api == "outage" and self.rate is not None:
            raise ValueError("an api outage takes no 'rate'")
        if self.codes is not None and self.api != "errors":
            raise ValueError("'codes' is only for api: errors")
        if (self.api == "latency") != (self.latency is not None):
            raise ValueError("'latency' goes with api: latency, and api: latency needs it")
        if (self.api == "errors" or self.cloud is not None) and self.rate is None:
            raise ValueError(f"{'api errors' if self.api else 'cloud throttle'} needs 'rate'")
        if self.watch is not None and (self.for_ is not None or self.rate is not None):
            raise ValueError("a watch event takes no 'for' or 'rate'")
        if self.fault is not None and (self.for_ is not None or self.rate is not None):
            raise ValueError("a fault event takes 'for' and 'rate' inside its fault")
        return self


class Scenario(_Model):
    name: str
    description: str = ""
    provider: Literal["aws", "azure", "none"]
    region: str = "eu-west-1"
    groups: Annotated[list[Group], Field(min_length=1)]
    workloads: list[Workload] = []
    daemonsets: list[DaemonSet] = []
    pods: list[BarePod] = []
    events: list[Event] = []

    def full_zone(self, zone: str) -> str:
        """The zone label value of a short zone name (see the module docstring)."""
        if self.provider == "none" or zone.startswith(self.region):
            return zone
        if self.provider == "azure":
            return f"{self.region}-{zone}"
        return f"{self.region}{zone}"

    def scaled(self, nodes: int) -> Scenario:
        """The same scenario with ``nodes`` nodes in all, shared by the groups in proportion to
        their sizes (the largest group takes the rounding remainder)."""
        weights = [g.size for g in self.groups]
        if not any(weights):
            weights = [1] * len(self.groups)
        sizes = [w * nodes // sum(weights) for w in weights]
        sizes[weights.index(max(weights))] += nodes - sum(sizes)
        groups = [g.model_copy(update={"size": s}) for g, s in zip(self.groups, sizes, strict=True)]
        return self.model_copy(update={"groups": groups})


class ScenarioError(Exception):
    """A scenario that does not load; ``errors`` are ``path: message`` lines."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = list(errors)

    def render(self) -> str:
        return "\n".join([f"invalid scenario {self.source}:", *(f"  {e}" for e in self.errors)])


def _error_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[", "constrained-")) or part in ("str", "int", "float"):
            # pydantic names union/validator branches in locations; they are not YAML keys.
            continue
        else:
            path += f".{part}" if path else part
    return path


def _messages(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        path = _error_path(err["loc"])
        lines.append(f"{path}: {message}" if path else message)
    return list(dict.fromkeys(lines))


def _cross_check(scenario: Scenario) -> list[str]:
    """What refers to something that does not exist, each with its path."""
    errors = []
    names = [g.name for g in scenario.groups]
    for index, name in enumerate(names):
        if names.index(name) != index:
            errors.append(f"groups[{index}].name: duplicate group name {name!r}")
    sizes = {g.name: g.size for g in scenario.groups}
    for index, pod in enumerate(scenario.pods):
        group, _, number = pod.node.rpartition("-")
        if group not in sizes or not number.isdigit() or int(number) >= sizes[group]:
            errors.append(f"pods[{index}].node: {pod.node!r} is not one of the initial nodes")
    zones = {z for g in scenario.groups for z in g.zones}
    for index, event in enumerate(scenario.events):
        for position, node in enumerate(event.nodes or ()):
            group, _, number = node.rpartition("-")
            if group not in sizes or not number.isdigit():
                errors.append(
                    f"events[{index}].nodes[{position}]: {node!r} is not <group>-<index> of a group"
                )
        if event.zone is not None and event.zone not in zones:
            errors.append(f"events[{index}].zone: no group has zone {event.zone!r}")
    return errors


def parse_scenario(data: object, *, source: str = "<scenario>") -> Scenario:
    """Validate a scenario's raw data; ScenarioError lists every problem with its path."""
    if not isinstance(data, dict):
        raise ScenarioError(source, ["the scenario must be a mapping"])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, _messages(exc)) from None
    errors = _cross_check(scenario)
    if errors:
        raise ScenarioError(source, errors)
    return scenario


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``noderescue/sim/scenarios``."""
    folder = resources.files("noderescue.sim") / "scenarios"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    if name_or_path in builtin_scenarios():
        text = (resources.files("noderescue.sim") / "scenarios" / f"{name_or_path}.yaml").read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioError(
                name_or_path,
                [f"no such built-in scenario or file; built-in: {', '.join(builtin_scenarios())}"],
            )
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(name_or_path, [f"not YAML: {exc}"]) from None
    return parse_scenario(data, source=name_or_path)


# --------------------------------------------------------------------------------------------
# Seams the scenario drives: the emulated cluster and its fault switches
# --------------------------------------------------------------------------------------------


class NodeControl(Protocol):
    """What events and the clouds do to nodes (implemented by ``SimCluster``)."""

    def set_condition(
        self, name: str, type: str, status: str, reason: str = "", message: str = ""
    ) -> None: ...
    def stop_kubelet(self, name: str) -> None: ...
    def start_kubelet(self, name: str) -> None: ...
    def set_repairable(self, name: str, repairable: bool = True) -> None: ...
    def node_names(self) -> list[str]: ...
    def get_node(self, name: str) -> dict[str, Any] | None: ...


class ClusterEffects(NodeControl, Protocol):
    """What the emulated clouds do to the cluster when an instance changes."""

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        zone: str,
        provider_id: str,
        join_after_s: float = 0.0,
        boot_seconds: float = 3.0,
    ) -> None: ...
    def remove_node(self, name: str, *, after_s: float = 0.0) -> None: ...
    def reboot_node(self, name: str) -> None: ...
    def run_repair(self, name: str) -> bool: ...


class AuditSink(Protocol):
    """Where cloud calls are recorded (``AuditLog``)."""

    def write(
        self,
        *,
        api: str,
        verb: str,
        resource: str,
        name: str,
        namespace: str | None = None,
        subresource: str | None = None,
        code: int,
        user_agent: str,
    ) -> None: ...


class ThrottleSwitch(Protocol):
    """The cloud half of ``Faults``: whether to throttle this call, the Retry-After to send, and
    the targeted fault to apply to it, if any."""

    retry_after_s: int

    def draw_cloud_throttle(self) -> bool: ...

    def take_fault(
        self,
        api: Literal["kubernetes", "aws", "azure"],
        call: str,
        *,
        instances: Collection[str] = (),
        nodes: Collection[str] = (),
    ) -> FaultSpec | None: ...


class FaultControl(ThrottleSwitch, Protocol):
    """The fault switches events flip (``Faults``; its times are real seconds)."""

    cloud_throttle_rate: float
    latency_s: float

    def add_fault(self, spec: FaultSpec, *, for_s: float | None = None) -> int: ...

    def api_outage(self, for_s: float) -> None: ...
    def set_api_errors(self, rate: float, codes: tuple[int | Literal["timeout"], ...] = (500,)) -> None: ...
    def watch_disconnect_now(self) -> None: ...
    def force_410_now(self) -> None: ...


ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


def node_labels(scenario: Scenario, group: Group, zone: str) -> dict[str, str]:
    """A new node's labels: the group's, plus the well-known topology and instance-type labels."""
    return {
        **group.labels,
        ZONE_LABEL: zone,
        REGION_LABEL: scenario.region,
        INSTANCE_TYPE_LABEL: group.instance_type,
        "noderescue.io/sim-group": group.name,
    }


def spread(size: int, zones: Sequence[str]) -> list[str]:
    """Zones of a group's ``size`` initial nodes, round-robin (node i is in ``zones[i % n]``)."""
    return [zones[i % len(zones)] for i in range(size)]


def event_targets(event: Event, scenario: Scenario, nodes: NodeControl) -> list[str]:
    """Node names an event applies to now (a zone is resolved against the current nodes)."""
    if event.nodes is not None:
        return list(event.nodes)
    if event.zone is None:
        return []
    zone = scenario.full_zone(event.zone)
    targets = []
    for name in nodes.node_names():
        node = nodes.get_node(name)
        if node is not None and node.get("metadata", {}).get("labels", {}).get(ZONE_LABEL) == zone:
            targets.append(name)
    return targets


@dataclass(slots=True)
class EventRunner:
    """Applies a scenario's events at their times (emulated seconds / ``time_scale`` real seconds).

    Timed faults (``for``) are switched off again by the runner itself. ``applied`` records what
    ran, in order, with the loop time it ran at.
    """

    scenario: Scenario
    nodes: NodeControl
    faults: FaultControl
    time_scale: float = 1.0
    applied: list[tuple[float, Event]] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        resets: list[tuple[float, Callable[[], None]]] = []
        for event in sorted(self.scenario.events, key=lambda e: e.at):
            await self._run_resets_until(start + event.at / self.time_scale, resets)
            try:
                self._apply(event, resets)
            except Exception:  # one broken event (a node that left meanwhile) must not end the scenario
                log.exception("sim_event_failed", at=event.at, action=event.action)
            self.applied.append((loop.time(), event))
        await self._run_resets_until(float("inf"), resets)

    async def _run_resets_until(
        self, deadline: float, resets: list[tuple[float, Callable[[], None]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while resets and min(resets, key=lambda r: r[0])[0] <= deadline:
            due = min(resets, key=lambda r: r[0])
            await asyncio.sleep(max(0.0, due[0] - loop.time()))
            resets.remove(due)
            due[1]()
        if deadline != float("inf"):
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    def _apply(self, event: Event, resets: list[tuple[float, Callable[[], None]]]) -> None:
        loop = asyncio.get_running_loop()
        action = event.action
        log.info("sim_event", at=event.at, action=action, nodes=event.nodes, zone=event.zone)
        if action in _NODE_ACTIONS:
            for name in event_targets(event, self.scenario, self.nodes):
                self._apply_to_node(event, name)
            return
        if event.api == "outage":
            assert event.for_ is not None
            self.faults.api_outage(event.for_ / self.time_scale)
        elif event.api == "errors":
            assert event.rate is not None
            self.faults.set_api_errors(event.rate, tuple(event.codes or (500,)))
            if event.for_ is not None:
                resets.append(
                    (loop.time() + event.for_ / self.time_scale, lambda: self.faults.set_api_errors(0.0))
                )
        elif event.api == "latency":
            assert event.latency is not None
            self.faults.latency_s = event.latency / self.time_scale
            if event.for_ is not None:
                resets.append((loop.time() + event.for_ / self.time_scale, self._end_latency))
        elif event.cloud == "throttle":
            assert event.rate is not None
            self.faults.cloud_throttle_rate = event.rate
            if event.for_ is not None:
                resets.append((loop.time() + event.for_ / self.time_scale, self._end_cloud_throttle))
        elif event.fault is not None:
            spec = event.fault
            self.faults.add_fault(spec, for_s=None if spec.for_ is None else spec.for_ / self.time_scale)
        elif event.watch == "disconnect":
            self.faults.watch_disconnect_now()
        elif event.watch == "expire":
            self.faults.force_410_now()

    def _end_latency(self) -> None:
        self.faults.latency_s = 0.0

    def _end_cloud_throttle(self) -> None:
        self.faults.cloud_throttle_rate = 0.0

    def _apply_to_node(self, event: Event, name: str) -> None:
        if self.nodes.get_node(name) is None:
            log.warning("sim_event_node_missing", node=name, action=event.action)
            return
        if event.condition is not None:
            c = event.condition
            self.nodes.set_condition(name, c.type, c.status, c.reason, c.message)
        elif event.kubelet == "stop":
            self.nodes.stop_kubelet(name)
        elif event.kubelet == "start":
            self.nodes.start_kubelet(name)
        elif event.repairable is not None:
            self.nodes.set_repairable(name, event.repairable)


# --------------------------------------------------------------------------------------------
# Node naming shared by the clouds
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class GroupNodes:
    """Instance id <-> node name bookkeeping for one ASG/VMSS; indices are never reused."""

    group: Group
    next_index: int = 0
    node_of_instance: dict[str, str] = field(default_factory=dict)

    def name_new(self, instance_id: str) -> str:
        name = f"{self.group.name}-{self.next_index}"
        self.next_index += 1
        self.node_of_instance[instance_id] = name
        return name

    def instance_of_node(self, node: str) -> str | None:
        for instance, name in self.node_of_instance.items():
            if name == node:
                return instance
        return None
