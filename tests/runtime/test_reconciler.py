"""The reconciler with the real runtime wiring against the emulated world, in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from noderescue.adapters.kube.drain import DrainOutcome, ProgressCallback
from noderescue.adapters.kube.events import EventType
from noderescue.adapters.kube.record_store import LoadedRecords
from noderescue.adapters.notify.webhook import Notification
from noderescue.config import parse_config
from noderescue.core.model import (
    Condition,
    DecisionKind,
    DrainPolicy,
    History,
    HistoryEvent,
    NodeView,
    Pause,
    Record,
)
from noderescue.metrics import Metrics
from noderescue.runtime.announce import Announcer
from noderescue.runtime.executor import Executor, Fence
from noderescue.runtime.reconciler import Reconciler
from noderescue.sim.world import World
from tests.runtime.world_runtime import eventually, mutating_lines, node_events, running, world_config

SCALE = 10.0

WorldFactory = Callable[[str], AbstractAsyncContextManager[World]]


@pytest.fixture
def world_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorldFactory:
    """Start a scenario's world; its env (AWS endpoint and fake credentials) is the test's env."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start(scenario: str) -> AsyncIterator[World]:
        async with World.start(scenario, out_dir=tmp_path, time_scale=SCALE) as world:
            for key, value in world.env().items():
                monkeypatch.setenv(key, value)
            yield world

    return start


async def test_one_bad_worker_is_cordoned_drained_replaced_and_the_old_node_goes(
    world_of: WorldFactory,
) -> None:
    async with world_of("one-bad-worker") as world:
        before = set(world.cluster.node_names())
        async with running(world) as run:
            await eventually(
                lambda: (
                    run.sample(
                        "noderescue_remediations_total",
                        cluster="one-bad-worker",
                        **{"class": "workers"},
                        action="replace",
                        result="succeeded",
                    )
                    == 1
                ),
                timeout_s=20,
                what="the replace to succeed",
            )
        nodes = set(world.cluster.node_names())
    assert "workers-1" not in nodes
    assert len(nodes - before) == 1
    reasons = node_events(world, "workers-1")
    assert reasons[:2] == ["RemediationStarted", "Cordoned"]
    assert "DrainSucceeded" in reasons and "ReplacementRequested" in reasons
    assert reasons[-1] == "RemediationSucceeded"
    terminates = [
        line for line in mutating_lines(world) if line["verb"] == "TerminateInstanceInAutoScalingGroup"
    ]
    assert len(terminates) == 1


async def test_azure_worker_is_reimaged_in_place_and_uncordoned(world_of: WorldFactory) -> None:
    async with world_of("azure-workers") as world:
        boot_before = (world.cluster.get_node("workers-2") or {})["status"]["nodeInfo"]["bootID"]
        async with running(world) as run:
            await eventually(
                lambda: (
                    run.sample(
                        "noderescue_remediations_total",
                        cluster="azure-workers",
                        **{"class": "workers"},
                        action="replace",
                        result="succeeded",
                    )
                    == 1
                ),
                timeout_s=20,
                what="the reimage to succeed",
            )
        node = world.cluster.get_node("workers-2")
    assert node is not None, "reimaged in place: the Node stays"
    assert node["status"]["nodeInfo"]["bootID"] != boot_before
    assert not node["spec"].get("unschedulable")
    assert [line["verb"] for line in mutating_lines(world) if line["api"] == "azure"] == ["reimage"]
    reasons = node_events(world, "workers-2")
    assert (
        reasons.index("ReplacementRequested")
        < reasons.index("ReplacementJoined")
        < reasons.index("Uncordoned")
    )


def pets_drain_proceeds(raw: dict[str, object]) -> None:
    """A NotReady pet's pods never finish terminating (no kubelet to confirm): the pets' drain
    gives up quickly and proceeds to the reboot, as an SRE would configure pets. Two pets: a
    maxUnhealthy of 40% would allow none (rounded down), so 50%."""
    raw["safety"]["maxUnhealthy"] = "50%"  # type: ignore[index]
    for cls in raw["nodeClasses"]:  # type: ignore[attr-defined]
        if cls["name"] == "gpu":
            cls["drain"].update({"timeout": "1s", "onTimeout": "proceed"})


@pytest.mark.slow
async def test_pets_reboot_repairs_first_then_reboots_verifies_boot_id_and_uncordons(
    world_of: WorldFactory,
) -> None:
    async with world_of("pets-reboot") as world:
        boot_before = world.cluster.get_node("gpu-0")["status"]["nodeInfo"]["bootID"]  # type: ignore[index]
        config = world_config(world, pets_drain_proceeds)
        async with running(world, config=config) as run:
            await eventually(
                lambda: (
                    run.sample(
                        "noderescue_remediations_total",
                        cluster="pets-reboot",
                        **{"class": "gpu"},
                        action="reboot",
                        result="succeeded",
                    )
                    == 1
                ),
                timeout_s=30,
                what="the reboot to succeed",
            )
            escalated = run.sample(
                "noderescue_remediations_total",
                cluster="pets-reboot",
                **{"class": "gpu"},
                action="repair",
                result="escalated",
            )
        assert escalated == 1, "the repair step is counted as escalated"
        node = world.cluster.get_node("gpu-0")
    assert node is not None
    assert node["status"]["nodeInfo"]["bootID"] != boot_before
    assert not node["spec"].get("unschedulable"), "uncordoned after the verified reboot"
    assert "noderescue.io/remediation" not in node["metadata"].get("annotations", {})
    reasons = node_events(world, "gpu-0")
    assert reasons.index("RepairCommandSent") < reasons.index("Escalated") < reasons.index("RebootIssued")
    assert reasons.index("RebootIssued") < reasons.index("RebootVerified") < reasons.index("Uncordoned")
    verbs = [line["verb"] for line in mutating_lines(world) if line["api"] == "aws"]
    assert verbs == ["SendCommand", "RebootInstances"]


# --------------------------------------------------------------------------------------------
# The loop's own logic, against a fake cache and state (no world: fast)


class FakeCache:
    def __init__(self, nodes: tuple[NodeView, ...]) -> None:
        self.nodes = nodes
        self.changed = asyncio.Event()
        self.reachable = True

    @property
    def synced_at(self) -> float:
        return time.time()

    def snapshot(self) -> tuple[NodeView, ...]:
        return self.nodes

    def get(self, name: str) -> NodeView | None:
        return next((n for n in self.nodes if n.name == name), None)


class FakeState:
    async def load(self) -> tuple[History, Pause | None]:
        return History(), None


class Standby:
    def holds_lease(self) -> bool:
        return False


@dataclass
class FakeKube:
    """KubeActions that only remembers Events (the loop itself writes nothing else)."""

    events: list[tuple[str, str]] = field(default_factory=list)

    async def cordon(self, node: str) -> bool:
        raise AssertionError("not expected")

    async def uncordon(self, node: str) -> bool:
        raise AssertionError("not expected")

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome:
        raise AssertionError("not expected")

    malformed: dict[str, str] = field(default_factory=dict)

    async def load_records(self) -> LoadedRecords:
        return LoadedRecords(malformed=dict(self.malformed))

    async def put_record(self, record: Record) -> None:
        raise AssertionError("not expected")

    async def delete_record(self, node: str) -> None:
        raise AssertionError("not expected")

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        raise AssertionError("not expected")

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        raise AssertionError("not expected")

    async def emit_event(
        self,
        node: str,
        node_uid: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        once_key: str | None = None,
    ) -> None:
        self.events.append((node, reason))

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        raise AssertionError("not expected")

    async def set_pause(self, pause: Pause) -> None:
        raise AssertionError("not expected")

    async def clear_pause(self) -> None:
        raise AssertionError("not expected")

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        raise AssertionError("not expected")


@dataclass
class FakeNotifier:
    sent: list[Notification] = field(default_factory=list)

    def notify(self, event: Notification) -> bool:
        self.sent.append(event)
        return True


CONFIG = """
clusters:
  - {name: c1, provider: aws, aws: {region: eu-west-1, autoScalingGroups: [workers]}}
safety: {maxUnhealthy: 40%, maxUnhealthyPerZone: 100%}
nodeClasses:
  - name: workers
    selector: {matchLabels: {noderescue.io/class: workers}}
    rules: [{type: KernelDeadlock, status: ["True"], for: 1s}]
    ladder: [{action: replace, timeout: 1m}]
"""


def worker(index: int, *, bad_since: float | None = None) -> NodeView:
    now = time.time()
    conditions = [Condition("Ready", "True", last_transition=now - 3600)]
    if bad_since is not None:
        conditions.append(Condition("KernelDeadlock", "True", "DockerHung", last_transition=bad_since))
    return NodeView(
        name=f"workers-{index}",
        uid=f"uid-{index}",
        labels={"noderescue.io/class": "workers"},
        zone="eu-west-1a",
        provider_id=f"aws:///eu-west-1a/i-{index}",
        conditions=tuple(conditions),
        lease_renew=now,
        boot_id="boot",
        created=now - 3600,
    )


def reconciler_for(
    nodes: tuple[NodeView, ...], *, fence: Fence | None = None, notifier: FakeNotifier | None = None
) -> tuple[Reconciler, FakeKube, Metrics]:
    config = parse_config(CONFIG)
    policy = config.policy("c1")
    cache = FakeCache(nodes)
    kube = FakeKube()
    metrics = Metrics(CollectorRegistry())
    executor = Executor(
        cluster="c1",
        policy=policy,
        kube=kube,
        cloud=None,
        nodes=cache,
        metrics=metrics,
        fence=fence,
        announcer=Announcer("c1", kube, [notifier] if notifier else [], dry_run=False),
    )
    reconciler = Reconciler(
        cluster="c1",
        policy=policy,
        cache=cache,
        state=FakeState(),
        executor=executor,
        metrics=metrics,
        fence=fence,
        dry_run=False,
    )
    return reconciler, kube, metrics


async def test_a_standby_plans_and_reports_metrics_but_starts_nothing() -> None:
    nodes = (worker(0, bad_since=time.time() - 60), worker(1), worker(2), worker(3), worker(4))
    reconciler, kube, metrics = reconciler_for(nodes, fence=Standby())
    result = await reconciler.run_pass()
    await reconciler.close()
    assert [d.kind for d in result.plan.decisions] == [DecisionKind.START], "the plan is made"
    assert reconciler.executor.worker_count == 0, "but not acted on"
    assert kube.events == []
    sample = metrics.registry.get_sample_value
    assert sample("noderescue_nodes", {"cluster": "c1", "class": "workers", "health": "unhealthy"}) == 1
    assert sample("noderescue_nodes", {"cluster": "c1", "class": "workers", "health": "healthy"}) == 4
    assert sample("noderescue_leader", {"cluster": "c1"}) == 0


async def test_a_tripped_short_circuit_is_told_once_not_every_pass() -> None:
    bad = time.time() - 60
    nodes = (
        worker(0, bad_since=bad),
        worker(1, bad_since=bad),
        worker(2, bad_since=bad),
        worker(3),
        worker(4),
    )
    notifier = FakeNotifier()
    reconciler, kube, metrics = reconciler_for(nodes, fence=Standby(), notifier=notifier)
    reconciler.fence = None  # leader-less: acts (and tells) like a leader
    told_first_pass: list[Notification] = []
    for _ in range(3):
        await reconciler.run_pass()
        await asyncio.sleep(0.01)  # let the background Events go out
        told_first_pass = told_first_pass or list(notifier.sent)
    await reconciler.close()
    assert notifier.sent == told_first_pass, "nothing new on later passes"
    assert [n.kind for n in notifier.sent] == ["shortCircuit", "shortCircuit"]
    assert sorted(n.message.split(":")[0] for n in notifier.sent) == ["class/workers", "cluster"]
    assert sorted(kube.events) == [(f"workers-{i}", "ShortCircuit") for i in range(3)]
    sample = metrics.registry.get_sample_value
    assert sample("noderescue_short_circuit", {"cluster": "c1", "class": "workers"}) == 1
    assert (
        sample("noderescue_gate_blocked", {"cluster": "c1", "class": "workers", "gate": "short-circuit"}) == 3
    )
    assert reconciler.executor.worker_count == 0


async def test_a_malformed_record_object_is_skipped_and_the_node_planned_without_it() -> None:
    reconciler, kube, _ = reconciler_for((worker(0), worker(1)), fence=Standby())
    kube.malformed["noderescue-record-workers-0"] = "record is not JSON"
    reconciler.standby_refresh_s = 0.0
    with capture_logs() as logs:
        result = await reconciler.run_pass()
        await reconciler.run_pass()
    await reconciler.close()
    assert result.records == {}
    assert [line["event"] for line in logs if line["event"] == "record_malformed_skipped"] == [
        "record_malformed_skipped"
    ], "logged once, not every pass"


async def test_the_loop_sleeps_until_the_plans_wakeup_instead_of_polling() -> None:
    # KernelDeadlock for 1 s is needed; it started 0.6 s ago: pending until 0.4 s from now.
    nodes = (worker(0, bad_since=time.time() - 0.6), worker(1), worker(2), worker(3), worker(4))
    reconciler, _, _ = reconciler_for(nodes, fence=Standby())
    reconciler.safety_replan_s = 60.0
    reconciler.policy = replace(
        reconciler.policy, safety=replace(reconciler.policy.safety, stale_after_s=3600.0)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop), name="reconciler-under-test")
    await asyncio.sleep(1.0)
    stop.set()
    await task
    assert reconciler.passes == 2, "one pass at start, one when the rule's `for` elapsed"
    assert reconciler.last is not None
    assert [d.kind for d in reconciler.last.plan.decisions] == [DecisionKind.START]
