"""Scenarios: the built-ins load, errors are path-precise, events run in order at scaled times."""

from __future__ import annotations

import asyncio
import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as kube

from noderescue.config import parse_config
from noderescue.sim import scenario as scenario_module
from noderescue.sim.faults import Faults, FaultSignal
from noderescue.sim.kubeapi.resources import PODS
from noderescue.sim.scenario import (
    EventRunner,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
)
from noderescue.sim.world import World
from tests.sim.recording_cluster import RecordingCluster

BASE: dict[str, Any] = {
    "name": "t",
    "provider": "aws",
    "region": "eu-west-1",
    "groups": [{"name": "workers", "size": 4, "zones": ["a", "b"]}],
    "workloads": [{"name": "web", "replicas": 2, "pdb": {"maxUnavailable": 1}}],
    "events": [
        {"at": "1s", "nodes": ["workers-0"], "kubelet": "stop"},
        {"at": "2s", "zone": "b", "condition": {"type": "KernelDeadlock", "status": "True"}},
        {"at": "3s", "api": "outage", "for": "5s"},
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at a dotted path (list indices as numbers) replaced; DELETE removes it."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return data


DELETE = object()


def test_the_required_built_in_scenarios_ship() -> None:
    required = {
        "one-bad-worker",
        "pets-reboot",
        "zone-outage",
        "azure-workers",
        "pdb-blocked",
        "api-outage",
        "large",
        "demo",
    }
    assert required <= set(builtin_scenarios())


@pytest.mark.parametrize("name", builtin_scenarios())
def test_every_built_in_scenario_loads(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.events, "a built-in scenario without events shows nothing"


def test_base_scenario_is_valid() -> None:
    scenario = parse_scenario(BASE)
    assert [e.action for e in scenario.events] == ["kubelet", "condition", "api"]
    assert scenario.events[2].for_ == 5.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            with_change("events.2.at", "5 minutes"),
            "events[2].at: invalid duration '5 minutes'",
            id="duration",
        ),
        pytest.param(
            with_change("groups.0.sizee", 3),
            "groups[0].sizee: Extra inputs are not permitted",
            id="unknown-key",
        ),
        pytest.param(
            with_change("provider", "gcp"),
            "provider: Input should be 'aws', 'azure' or 'none'",
            id="provider",
        ),
        pytest.param(
            with_change("groups.0.size", -1),
            "groups[0].size: Input should be greater than or equal to 0",
            id="negative-size",
        ),
        pytest.param(
            with_change("groups.0.name", "Workers_1"),
            "groups[0].name: String should match pattern",
            id="group-name",
        ),
        pytest.param(
            with_change("workloads.0.pdb", {"maxUnavailable": 1, "minAvailable": 1}),
            "workloads[0].pdb: give exactly one of maxUnavailable, minAvailable",
            id="pdb-both",
        ),
        pytest.param(
            with_change("events.0.repairable", True),
            "events[0]: give exactly one action of condition, kubelet, repairable, api, cloud, watch, "
            "fault "
            "(got kubelet, repairable)",
            id="two-actions",
        ),
        pytest.param(
            with_change("events.0.nodes", DELETE),
            "events[0]: a kubelet event targets exactly one of nodes, zone",
            id="no-target",
        ),
        pytest.param(
            with_change("events.2.for", DELETE),
            "events[2]: an api outage needs 'for'",
            id="outage-without-for",
        ),
        pytest.param(
            with_change("events.2", {"at": 1, "cloud": "throttle", "rate": 1.5}),
            "events[2].rate: Input should be less than or equal to 1",
            id="rate",
        ),
        pytest.param(
            with_change("events.2", {"at": 1, "cloud": "throttle"}),
            "events[2]: cloud throttle needs 'rate'",
            id="throttle-without-rate",
        ),
        pytest.param(
            with_change("events.2", {"at": 1, "watch": "expire", "nodes": ["workers-0"]}),
            "events[2]: an watch event applies to the whole cluster: no nodes or zone",
            id="targeted-watch",
        ),
        pytest.param(
            with_change("events.1.condition.status", "Maybe"),
            "events[1].condition.status: Input should be 'True', 'False' or 'Unknown'",
            id="status",
        ),
        pytest.param(
            with_change("events.0.nodes", ["db-0"]),
            "events[0].nodes[0]: 'db-0' is not <group>-<index> of a group",
            id="unknown-node",
        ),
        pytest.param(
            with_change("events.1.zone", "z"), "events[1].zone: no group has zone 'z'", id="unknown-zone"
        ),
        pytest.param(
            with_change("pods", [{"name": "debug", "node": "workers-9"}]),
            "pods[0].node: 'workers-9' is not one of the initial nodes",
            id="bare-pod-node",
        ),
        pytest.param(
            with_change(
                "groups", [{"name": "w", "size": 1}, {"name": "x", "size": 1}, {"name": "w", "size": 2}]
            ),
            "groups[2].name: duplicate group name 'w'",
            id="duplicate-group",
        ),
        pytest.param(with_change("groups", []), "groups: List should have at least 1 item", id="no-groups"),
        pytest.param(
            with_change("events.2", {"at": 1, "api": "latency"}),
            "events[2]: 'latency' goes with api: latency, and api: latency needs it",
            id="latency-without-value",
        ),
        pytest.param(
            with_change("events.2", {"at": 1, "api": "outage", "for": "1s", "codes": [500]}),
            "events[2]: 'codes' is only for api: errors",
            id="codes-on-outage",
        ),
    ],
)
def test_validation_errors_name_the_path(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert any(error.startswith(expected) for error in caught.value.errors), caught.value.errors


def test_every_error_is_reported_at_once() -> None:
    data = with_change("events.2.at", "soon")
    data["groups"][0]["size"] = "many"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert len(caught.value.errors) == 2
    assert "invalid scenario" in caught.value.render()


def test_yaml_booleans_are_condition_statuses() -> None:
    scenario = parse_scenario(with_change("events.1.condition.status", True))
    assert scenario.events[1].condition is not None and scenario.events[1].condition.status == "True"


def test_unknown_name_lists_the_built_ins() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario("no-such-scenario")
    assert "one-bad-worker" in caught.value.errors[0] and "azure-workers" in caught.value.errors[0]


def test_a_scenario_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nprovider: none\ngroups: [{name: n, size: 1}]\nevents: [{at: 1s, watch: expire}]\n"
    )
    assert load_scenario(str(path)).name == "mine"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not YAML"):
        load_scenario(str(path))


@pytest.mark.parametrize(
    ("provider", "region", "zone", "label"),
    [
        pytest.param("aws", "eu-west-1", "b", "eu-west-1b", id="aws"),
        pytest.param("azure", "westeurope", "2", "westeurope-2", id="azure"),
        pytest.param("none", "local", "rack-1", "rack-1", id="none"),
        pytest.param("aws", "eu-west-1", "eu-west-1c", "eu-west-1c", id="already-full"),
    ],
)
def test_zone_names(provider: str, region: str, zone: str, label: str) -> None:
    scenario = parse_scenario(
        {"name": "z", "provider": provider, "region": region, "groups": [{"name": "g", "size": 1}]}
    )
    assert scenario.full_zone(zone) == label


@pytest.mark.parametrize("nodes", [pytest.param(n, id=str(n)) for n in (1, 7, 5000)])
def test_scaled_keeps_the_total(nodes: int) -> None:
    scenario = load_scenario("pets-reboot").scaled(nodes)
    assert sum(g.size for g in scenario.groups) == nodes


async def test_runner_applies_events_in_order_at_scaled_times() -> None:
    data = {
        "name": "timing",
        "provider": "aws",
        "groups": [{"name": "workers", "size": 4, "zones": ["a", "b"]}],
        "events": [  # listed out of order on purpose
            {"at": "3s", "watch": "expire"},
            {"at": "0s", "nodes": ["workers-0"], "kubelet": "stop"},
            {"at": "1s", "zone": "b", "condition": {"type": "KernelDeadlock", "status": "True"}},
            {"at": "2s", "cloud": "throttle", "rate": 0.5, "for": "1500ms"},
            {"at": "2s", "api": "outage", "for": "10s"},
            {"at": "4s", "nodes": ["workers-0"], "repairable": True},
            {"at": "4s", "nodes": ["workers-0"], "kubelet": "start"},
        ],
    }
    scenario = parse_scenario(data)
    cluster = RecordingCluster()
    for index in range(4):
        zone = scenario.full_zone("ab"[index % 2])
        labels = {"topology.kubernetes.io/zone": zone}
        cluster.add_node(f"workers-{index}", labels=labels, zone=zone, provider_id="x")
    faults = Faults(seed=1)
    signals: list[tuple[float, FaultSignal]] = []
    loop = asyncio.get_running_loop()
    faults.subscribe(lambda signal: signals.append((loop.time(), signal)))
    scale = 20.0  # 1 emulated second = 50 ms
    runner = EventRunner(scenario, cluster, faults, time_scale=scale)
    start = loop.time()
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(2.2 / scale)
    assert faults.cloud_throttle_rate == 0.5 and faults.in_outage()
    await task
    elapsed = [(round((t - start) * scale, 1), e.action) for t, e in runner.applied]
    assert [a for _, a in elapsed] == [
        "kubelet",
        "condition",
        "cloud",
        "api",
        "watch",
        "repairable",
        "kubelet",
    ]
    expected_at = [0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    for (at, _), want in zip(elapsed, expected_at, strict=True):
        assert want <= at <= want + 0.6, elapsed  # never early; late by at most 30 ms real
    assert cluster.conditions == {
        "workers-1": {"KernelDeadlock": "True"},
        "workers-3": {"KernelDeadlock": "True"},
    }
    assert cluster.stopped_kubelets == set() and cluster.repairable == {"workers-0"}
    assert faults.cloud_throttle_rate == 0.0  # switched off after its 1.5 s
    assert faults.outage_remaining_s() > 0  # 10 s emulated = 0.5 s real, still on
    assert [s for _, s in signals] == ["outage", "force_410"]


async def test_runner_switches_api_errors_and_latency_on_and_off() -> None:
    scenario = parse_scenario(
        {
            "name": "api",
            "provider": "none",
            "groups": [{"name": "n", "size": 1}],
            "events": [
                {"at": "0s", "api": "errors", "rate": 0.3, "codes": [429, "timeout"], "for": "2s"},
                {"at": "1s", "api": "latency", "latency": "400ms", "for": "2s"},
            ],
        }
    )
    faults = Faults(seed=1)
    scale = 20.0
    runner = EventRunner(scenario, RecordingCluster(), faults, time_scale=scale)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(1.5 / scale)
    assert (faults.api_error_rate, faults.api_error_codes) == (0.3, (429, "timeout"))
    assert faults.latency_s == pytest.approx(0.4 / scale)
    await asyncio.sleep(1.0 / scale)  # 2.5 s: errors over, latency still on
    assert faults.api_error_rate == 0.0 and faults.latency_s > 0
    await task  # the runner ends after the last switch-off
    assert faults.latency_s == 0.0


async def test_world_without_cloud_applies_events_to_the_real_cluster(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "plain",
            "provider": "none",
            "region": "local",
            "groups": [
                {
                    "name": "metal",
                    "size": 3,
                    "zones": ["r1", "r2"],
                    "labels": {"noderescue.io/class": "metal"},
                    "podsPerNode": 2,
                }
            ],
            "daemonsets": [{"name": "node-exporter"}],
            "pods": [{"name": "debug-shell", "node": "metal-2"}],
            "events": [
                {"at": "1s", "nodes": ["metal-1"], "condition": {"type": "KernelDeadlock", "status": "True"}}
            ],
        }
    )
    async with World.start(scenario, out_dir=tmp_path, time_scale=20) as world:
        assert world.aws is None and world.azure is None
        assert world.cluster.node_names() == ["metal-0", "metal-1", "metal-2"]
        node = world.cluster.get_node("metal-1")
        assert node is not None
        assert node["spec"]["providerID"] == "none:///metal-1"
        assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "r2"
        assert world.events is not None
        await asyncio.wait_for(_until(lambda: len(world.events.applied) == 1 if world.events else False), 2.0)
        node = world.cluster.get_node("metal-1")
        assert node is not None
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["KernelDeadlock"] == "True"
        bare = world.cluster.store.get(PODS, "default", "debug-shell")
        assert bare is not None and bare["spec"]["nodeName"] == "metal-2"
        assert world.env() == {"KUBECONFIG": str(tmp_path / "kubeconfig")}
        config = parse_config(world.config_file.read_text(), str(world.config_file))
        assert [c.name for c in config.node_classes] == ["metal"]
        assert [s.action.value for s in config.node_classes[0].ladder] == ["notify"]


async def _until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - polling the cluster's state, nothing to wait on
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------------
# The built-in scenarios set up what they describe (read through the real Kubernetes client)
# ------------------------------------------------------------------------------------------------

FAST = 50.0


def node_condition(world: World, node: str, type_: str) -> str | None:
    obj = world.cluster.get_node(node)
    if obj is None:
        return None
    return next((c["status"] for c in obj["status"]["conditions"] if c["type"] == type_), None)


async def eventually(predicate: Any, *, within_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within_s}s: {what}")
        await asyncio.sleep(0.02)


async def test_one_bad_worker_scenario(tmp_path: Path) -> None:
    async with World.start("one-bad-worker", out_dir=tmp_path, time_scale=FAST) as world:
        assert len(world.cluster.node_names()) == 6
        await eventually(
            lambda: node_condition(world, "workers-1", "KernelDeadlock") == "True",
            within_s=2.0,
            what="deadlock",
        )
        healthy = [n for n in world.cluster.node_names() if n != "workers-1"]
        assert all(node_condition(world, n, "KernelDeadlock") is None for n in healthy)


async def test_pdb_blocked_scenario_puts_an_unevictable_pod_on_the_bad_node(tmp_path: Path) -> None:
    async with World.start("pdb-blocked", out_dir=tmp_path, time_scale=FAST) as world:
        configuration = kube.Configuration(host=world.cluster.url)
        async with kube.ApiClient(configuration) as api:
            core = kube.CoreV1Api(api)
            pods = await core.list_namespaced_pod(
                "default", label_selector="app=ledger", field_selector="spec.nodeName=workers-0"
            )
            assert len(pods.items) >= 1
            pdb = await kube.PolicyV1Api(api).read_namespaced_pod_disruption_budget("ledger-pdb", "default")
            assert pdb.status.disruptions_allowed == 0


async def test_api_outage_scenario_takes_the_api_away_for_a_while(tmp_path: Path) -> None:
    async with World.start("api-outage", out_dir=tmp_path, time_scale=FAST) as world:
        await eventually(world.faults.in_outage, within_s=2.0, what="the outage")
        assert node_condition(world, "workers-2", "KernelDeadlock") == "True"  # the bad node came first
        await eventually(lambda: not world.faults.in_outage(), within_s=2.0, what="the end of the outage")


async def test_azure_workers_scenario_reimage_clears_the_readonly_filesystem(tmp_path: Path) -> None:
    async with World.start("azure-workers", out_dir=tmp_path, time_scale=FAST) as world:
        await eventually(
            lambda: node_condition(world, "workers-2", "ReadonlyFilesystem") == "True",
            within_s=2.0,
            what="ro fs",
        )
        assert world.azure is not None
        env = world.env()
        assert world.instance_of_node("workers-2") == "2"
        node = world.cluster.get_node("workers-2")
        assert node is not None and node["spec"]["providerID"] == world.azure.provider_id("workers", "2")
        assert env["AZURE_CA_BUNDLE"] == str(tmp_path / "azure-ca.pem")


@pytest.mark.parametrize("name", [n for n in builtin_scenarios() if n != "large"])
async def test_every_built_in_world_writes_a_valid_daemon_config(tmp_path: Path, name: str) -> None:
    async with World.start(name, out_dir=tmp_path, time_scale=FAST, run_events=False) as world:
        config = parse_config(world.config_file.read_text(), str(world.config_file))
        assert [c.name for c in config.node_classes] == [g.name for g in world.scenario.groups]
        for group, node_class in zip(world.scenario.groups, config.node_classes, strict=True):
            actions = [s.action.value for s in node_class.ladder]
            assert actions == (["repair", "reboot", "notify"] if group.pet else ["replace"])
            # a pet's dead kubelet never confirms pod deletion: its reboot goes on after the drain
            assert node_class.drain.on_timeout == ("proceed" if group.pet else "abort")
            for step in node_class.ladder:
                if step.action.value in ("reboot", "replace"):  # the step's clock includes the drain
                    assert step.timeout is not None and step.timeout > node_class.drain.timeout
            node = world.cluster.get_node(f"{group.name}-0")
            assert node is not None and node_class.selector.to_core().matches(node["metadata"]["labels"])


async def test_large_world_resizes(tmp_path: Path) -> None:
    async with World.start("large", out_dir=tmp_path, time_scale=FAST, nodes=300, run_events=False) as world:
        assert len(world.cluster.node_names()) == 300


def test_the_documented_example_is_a_valid_scenario() -> None:
    doc = scenario_module.__doc__ or ""
    example = doc.split("\n\n", 1)[1].split("\n\nTimes are emulated", 1)[0]
    scenario = parse_scenario(yaml.safe_load(textwrap.dedent(example)))
    assert [e.action for e in scenario.events] == [
        "condition", "kubelet", "repairable", "api", "api", "api", "cloud", "watch", "fault",
    ]  # fmt: skip
    assert scenario.pods[0].node == "workers-2"
