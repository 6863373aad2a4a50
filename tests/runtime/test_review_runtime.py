"""Review findings on the daemon's loop and executor, against fakes (fast, no world)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from noderescue.adapters.cloud import (
    CloudUnavailable,
    Instance,
    InstanceNotFound,
    InstanceState,
    Operation,
    OperationKind,
    OperationStatus,
    Target,
)
from noderescue.adapters.kube import record_from_json, record_to_json
from noderescue.adapters.kube.drain import DrainOutcome, ProgressCallback
from noderescue.adapters.kube.events import EventType
from noderescue.adapters.kube.record_store import Claim, LoadedRecords
from noderescue.config import load_config, parse_config
from noderescue.core.model import (
    Action,
    DrainPolicy,
    History,
    HistoryEvent,
    NodeView,
    Pause,
    Phase,
    Record,
)
from noderescue.metrics import Metrics
from noderescue.runtime.announce import Announcer
from noderescue.runtime.app import EXIT_FAILURE, run_daemon
from noderescue.runtime.cluster import LeaderTimings, RuntimeOptions
from noderescue.runtime.executor import Executor, ExecutorTimings
from noderescue.runtime.reconciler import Reconciler
from tests.runtime.test_reconciler import FakeCache, FakeNotifier, worker
from tests.runtime.world_runtime import eventually, write_unreachable_cluster_config

CONFIG = """
clusters:
  - {name: c1, provider: aws, aws: {region: eu-west-1, autoScalingGroups: [workers]}}
safety: {maxUnhealthy: 40%, maxUnhealthyPerZone: 100%, staleAfter: 1h}
nodeClasses:
  - name: workers
    selector: {matchLabels: {noderescue.io/class: workers}}
    rules: [{type: KernelDeadlock, status: ["True"], for: 1s}]
    ladder: [{action: replace, timeout: 1h}]
  - name: pets
    selector: {matchLabels: {noderescue.io/class: pets}}
    rules: [{type: KernelDeadlock, status: ["True"], for: 1s}]
    ladder: [{action: notify}]
"""


@dataclass
class SwitchState:
    """The state ConfigMap: a pause a test can throw and lift; counts the reads."""

    pause: Pause | None = None
    loads: int = 0
    history: History = field(default_factory=History)

    async def load(self) -> tuple[History, Pause | None]:
        self.loads += 1
        return self.history, self.pause


@dataclass
class WritingKube:
    """KubeActions that applies record writes to the fake cache and notes every call."""

    cache: FakeCache
    calls: list[str] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)  # the record store
    claims: dict[str, Claim] = field(default_factory=dict)

    def _set_record(self, node: str, record: Record | None) -> None:
        text = record_to_json(record) if record is not None else None
        self.cache.nodes = tuple(
            replace(n, record_json=text) if n.name == node else n for n in self.cache.nodes
        )
        self.cache.changed.set()

    async def cordon(self, node: str) -> bool:
        self.calls.append("cordon")
        return True

    async def uncordon(self, node: str) -> bool:
        self.calls.append("uncordon")
        return True

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome:
        self.calls.append("drain")
        return DrainOutcome(node, ok=True)

    async def put_record(self, record: Record) -> None:
        self.calls.append(f"record:{record.phase}")
        self.records[record.node] = record
        self._set_record(record.node, record)  # the mirror, for the tests' eyes only

    async def delete_record(self, node: str) -> None:
        self.calls.append("record:clear")
        self.records.pop(node, None)
        self._set_record(node, None)

    async def load_records(self) -> LoadedRecords:
        return LoadedRecords(records=dict(self.records), claims=dict(self.claims))

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        held = self.claims.get(new_node_uid)
        if held is not None:
            return held.replaced_node == replaced_node
        self.claims[new_node_uid] = Claim(new_node_uid, new_node, replaced_node, time.time())
        return True

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        pass

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
        self.calls.append(f"event:{reason}")

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        self.calls.append("history")
        return History(tuple(events))

    async def set_pause(self, pause: Pause) -> None:
        raise AssertionError("not expected")

    async def clear_pause(self) -> None:
        raise AssertionError("not expected")

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        self.calls.append("delete-node")
        self.cache.nodes = tuple(n for n in self.cache.nodes if n.name != node)
        self.cache.changed.set()


@dataclass
class Loop:
    reconciler: Reconciler
    cache: FakeCache
    kube: WritingKube
    state: SwitchState
    notifier: FakeNotifier


@dataclass
class GoneCloud:
    """A cloud in which the instance behind every node is gone already (terminated by the
    crashed daemon's call, a spot reclaim or a human)."""

    acts: list[str] = field(default_factory=list)

    async def act(self, kind: OperationKind, target: Target, command: str = "") -> Operation:
        self.acts.append(f"{kind} {target.instance_id}")
        raise InstanceNotFound(f"instance {target.instance_id} does not exist (or is terminated)")

    async def resolve(self, provider_id: str) -> Instance:
        raise InstanceNotFound(f"{provider_id} does not exist (or is terminated)")

    async def operation_status(self, op: Operation) -> OperationStatus:
        raise AssertionError("no operation was made")

    async def instance_state(self, instance: Instance) -> InstanceState:
        return InstanceState.TERMINATED


def loop_for(nodes: tuple[NodeView, ...], *, pause: Pause | None, cloud: GoneCloud | None = None) -> Loop:
    config = parse_config(CONFIG)
    policy = config.policy("c1")
    cache = FakeCache(nodes)
    kube = WritingKube(cache)
    # Records the tests put on nodes are the ones a daemon wrote to the store before it died,
    # with the history events that admitted them.
    seeded = [record_from_json(n.record_json, n.name) for n in nodes if n.record_json is not None]
    kube.records = {rec.node: rec for rec in seeded}
    admitted = tuple(
        HistoryEvent(rec.step_started, rec.action, rec.node, attempt_start=rec.step == 0) for rec in seeded
    )
    state = SwitchState(pause, history=History(admitted))
    notifier = FakeNotifier()
    metrics = Metrics(CollectorRegistry())
    wake = asyncio.Event()
    executor = Executor(
        cluster="c1",
        policy=policy,
        kube=kube,
        cloud=cloud,
        nodes=cache,
        metrics=metrics,
        announcer=Announcer("c1", kube, [notifier], dry_run=False),
        timings=ExecutorTimings(poll_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.2),
        on_worker_done=wake.set,
    )
    reconciler = Reconciler(
        cluster="c1",
        policy=policy,
        cache=cache,
        state=state,
        executor=executor,
        metrics=metrics,
        fence=None,
        dry_run=False,
        wake=wake,
        safety_replan_s=60.0,
    )
    executor.recheck = reconciler.recheck
    return Loop(reconciler, cache, kube, state, notifier)


async def run_for(loop: Loop, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.reconciler.run(stop), name="reconciler-under-test")
    await asyncio.sleep(seconds)
    stop.set()
    await task
    await loop.reconciler.executor.shutdown(1.0)


def pet(index: int, *, bad_since: float | None = None) -> NodeView:
    return replace(
        worker(index, bad_since=bad_since),
        name=f"pets-{index}",
        uid=f"pet-uid-{index}",
        labels={"noderescue.io/class": "pets"},
    )


def in_flight(node: NodeView, phase: Phase, *, instance_id: str | None = None) -> NodeView:
    now = time.time()
    rec = Record(
        node=node.name,
        node_uid=node.uid,
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=phase,
        attempt=1,
        started=now - 5,
        step_started=now - 5,
        deadline=now + 3600,
        reason="KernelDeadlock",
        provider_id=node.provider_id,
        cordoned_by_us=phase is not Phase.STARTED,
        instance_id=instance_id,
        # Acting with the instance known: the crash came around the call, its intent recorded.
        calls=("replace",) if phase is Phase.ACTING and instance_id else (),
    )
    return replace(node, record_json=record_to_json(rec))


PAUSE = Pause("maintenance", since=0.0)


async def test_a_pause_holding_an_in_flight_remediation_does_not_spin_the_loop() -> None:
    # The planner continues in-flight records while paused; the worker halts at its first guard.
    # A worker's end wakes the loop, which must not restart the worker at once, pass after pass.
    bad = time.time() - 60
    nodes = (in_flight(worker(0, bad_since=bad), Phase.CORDONED), *(worker(i) for i in range(1, 5)))
    loop = loop_for(nodes, pause=PAUSE)
    await run_for(loop, 1.0)
    assert loop.reconciler.passes <= 3, f"{loop.reconciler.passes} passes in 1 s while paused"
    assert loop.state.loads <= 6, f"{loop.state.loads} state ConfigMap reads in 1 s while paused"
    # Held, said once: the record says so (one write) and one RemediationHeld Event.
    assert loop.kube.calls == ["record:cordoned", "event:RemediationHeld"], "nothing else while paused"


async def test_a_lifted_pause_resumes_the_in_flight_remediation_without_a_nudge() -> None:
    bad = time.time() - 60
    nodes = (in_flight(worker(0, bad_since=bad), Phase.CORDONED), *(worker(i) for i in range(1, 5)))
    loop = loop_for(nodes, pause=PAUSE)
    loop.reconciler.paused_recheck_s = 0.3
    loop.reconciler.executor.timings = replace(loop.reconciler.executor.timings, halted_retry_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.reconciler.run(stop), name="reconciler-under-test")
    try:
        await asyncio.sleep(0.5)
        assert loop.kube.calls == ["record:cordoned", "event:RemediationHeld"], "held, said once"
        loop.state.pause = None  # `noderescue resume` writes the ConfigMap; nothing else wakes us
        await eventually(lambda: "cordon" in loop.kube.calls, timeout_s=2.0, what="the cordon after resume")
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("pause", [pytest.param(None, id="running"), pytest.param(PAUSE, id="paused")])
async def test_a_notify_only_class_tells_humans_once_even_while_paused(pause: Pause | None) -> None:
    # DESIGN §4: telling humans is allowed while paused (the planner decides needs-human).
    nodes = (
        pet(0, bad_since=time.time() - 60),
        *(pet(i) for i in range(1, 5)),
        *(worker(i) for i in range(5)),
    )
    loop = loop_for(nodes, pause=pause)
    await run_for(loop, 1.0)
    assert loop.kube.calls == ["record:needs-human", "event:NeedsHuman"]
    assert [n.kind for n in loop.notifier.sent] == ["needsHuman"]
    assert loop.reconciler.passes <= 3, f"{loop.reconciler.passes} passes in 1 s"


async def test_one_new_node_verifies_one_replacement_not_every_replace_in_flight() -> None:
    # Two replaces of the class are in flight; one replacement has joined so far. Capacity is
    # restored for one of them only: the other must keep waiting for its own replacement.
    bad = time.time() - 60
    joined = replace(worker(9), created=time.time())
    nodes = (
        in_flight(worker(0, bad_since=bad), Phase.VERIFYING),
        in_flight(worker(1, bad_since=bad), Phase.VERIFYING),
        *(worker(i) for i in range(2, 6)),
        joined,
    )
    loop = loop_for(nodes, pause=None)
    waiting: list[str] = []

    async def watch() -> None:
        await asyncio.sleep(0.45)
        waiting.extend(n for n in ("workers-0", "workers-1") if loop.reconciler.executor.busy(n))

    await asyncio.gather(run_for(loop, 0.5), watch())
    assert loop.kube.calls.count("delete-node") == 1, loop.kube.calls
    assert loop.kube.calls.count("event:ReplacementJoined") == 1, loop.kube.calls
    assert len(waiting) == 1, "the other replace still waits for its own replacement"


@pytest.mark.parametrize(
    ("phase", "instance_id"),
    [
        pytest.param(Phase.DRAINING, None, id="drained-then-gone"),
        pytest.param(Phase.ACTING, None, id="acting-before-resolve"),
        pytest.param(Phase.ACTING, "i-0", id="acting-crashed-around-the-call"),
    ],
)
async def test_a_replace_whose_instance_is_gone_already_goes_on_to_verify_the_replacement(
    phase: Phase, instance_id: str | None
) -> None:
    # The instance to replace no longer exists: nothing to terminate (and nothing to retry until
    # the step times out and the node is parked); the replacement is what is left to verify.
    bad = time.time() - 60
    nodes = (
        in_flight(worker(0, bad_since=bad), phase, instance_id=instance_id),
        *(worker(i) for i in range(1, 5)),
    )
    cloud = GoneCloud()
    loop = loop_for(nodes, pause=None, cloud=cloud)
    await run_for(loop, 0.5)
    assert cloud.acts == [], "nothing to act on"
    node = loop.cache.get("workers-0")
    assert node is not None and node.record_json is not None
    rec = record_from_json(node.record_json, "workers-0")
    assert rec.phase is Phase.VERIFYING, "waiting for the replacement"


class RecoveringCache(FakeCache):
    """A watch cache whose view was stale (API server outage) and is confirmed fresh again
    without any Node having changed: nothing sets ``changed``."""

    def __init__(self, nodes: tuple[NodeView, ...]) -> None:
        super().__init__(nodes)
        self.confirmed = time.time() - 3600
        self.reachable = False

    @property
    def synced_at(self) -> float:
        return self.confirmed


async def test_the_loop_notices_a_view_fresh_again_without_a_node_change() -> None:
    bad = time.time() - 60
    nodes = (worker(0, bad_since=bad), *(worker(i) for i in range(1, 5)))
    loop = loop_for(nodes, pause=None)
    cache = RecoveringCache(nodes)
    loop.reconciler.cache = cache
    loop.reconciler.executor.nodes = cache
    loop.reconciler.stale_recheck_s = 0.2
    loop.kube.cache = cache
    stop = asyncio.Event()
    task = asyncio.create_task(loop.reconciler.run(stop), name="reconciler-under-test")
    try:
        await asyncio.sleep(0.3)
        assert loop.kube.calls == [], "a stale view acts on nothing"
        cache.confirmed, cache.reachable = time.time() + 3600, True
        await eventually(lambda: "history" in loop.kube.calls, timeout_s=2.0, what="the remediation to start")
    finally:
        stop.set()
        await task
        await loop.reconciler.executor.shutdown(1.0)


def with_operation(node: NodeView, operation_id: str) -> NodeView:
    assert node.record_json is not None
    rec = record_from_json(node.record_json, node.name)
    return replace(
        node, record_json=record_to_json(replace(rec, operation_id=operation_id, instance_id="i-0"))
    )


async def test_an_unreadable_recorded_operation_parks_the_node_and_never_repeats_the_call() -> None:
    bad = time.time() - 60
    acting = with_operation(in_flight(worker(0, bad_since=bad), Phase.ACTING), "terminate-123")
    cloud = GoneCloud()
    loop = loop_for((acting, *(worker(i) for i in range(1, 5))), pause=None, cloud=cloud)
    await run_for(loop, 0.5)
    assert cloud.acts == [], "an operation was made: never again"
    node = loop.cache.get("workers-0")
    assert node is not None and node.record_json is not None
    rec = record_from_json(node.record_json, "workers-0")
    assert rec.phase is Phase.NEEDS_HUMAN
    assert "operation" in rec.reason


class BrokenStatusCloud(GoneCloud):
    async def operation_status(self, op: Operation) -> OperationStatus:
        raise RuntimeError("a bug in the provider")


async def test_a_worker_that_keeps_failing_unexpectedly_does_not_spin_the_loop() -> None:
    bad = time.time() - 60
    op = Operation(id="a-1", kind=OperationKind.REPLACE, instance_id="i-0", started=bad, provider="aws")
    acting = with_operation(in_flight(worker(0, bad_since=bad), Phase.ACTING), op.to_str())
    loop = loop_for((acting, *(worker(i) for i in range(1, 5))), pause=None, cloud=BrokenStatusCloud())
    await run_for(loop, 1.0)
    assert loop.reconciler.passes <= 3, f"{loop.reconciler.passes} passes in 1 s"


async def test_a_halted_node_that_goes_away_leaves_no_wakeup_in_the_past() -> None:
    bad = time.time() - 60
    nodes = (in_flight(worker(0, bad_since=bad), Phase.CORDONED), *(worker(i) for i in range(1, 5)))
    loop = loop_for(nodes, pause=PAUSE)
    loop.reconciler.executor.timings = replace(loop.reconciler.executor.timings, halted_retry_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.reconciler.run(stop), name="reconciler-under-test")
    try:
        await asyncio.sleep(0.3)  # halted by the pause
        loop.cache.nodes = loop.cache.nodes[1:]  # the Node is deleted: no decision about it any more
        loop.cache.changed.set()
        await asyncio.sleep(0.2)
        passes = loop.reconciler.passes
        await asyncio.sleep(1.0)
        assert loop.reconciler.passes - passes <= 2, f"{loop.reconciler.passes - passes} passes in 1 s"
    finally:
        stop.set()
        await task
        await loop.reconciler.executor.shutdown(1.0)


async def test_run_once_against_an_unreachable_cluster_reports_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `run --once` from cron: a pass that never happened is a runtime failure (exit 1), not 0.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    config = load_config(write_unreachable_cluster_config(tmp_path))
    options = RuntimeOptions(
        executor=ExecutorTimings(stop_grace_s=1.0),
        leader=LeaderTimings(lease_duration_s=0.5, renew_deadline_s=0.3, retry_period_s=0.1),
    )
    async with asyncio.timeout(10):
        code = await run_daemon(config, once=True, metrics=Metrics(CollectorRegistry()), options=options)
    assert code == EXIT_FAILURE


class UnavailableCloud(GoneCloud):
    async def resolve(self, provider_id: str) -> Instance:
        raise CloudUnavailable("503 from the cloud, past the provider's deadline")


async def test_sigterm_does_not_wait_out_a_workers_retry_backoff() -> None:
    # SIGTERM: the running step reaches its safe point; a worker waiting to retry is at one.
    bad = time.time() - 60
    nodes = (in_flight(worker(0, bad_since=bad), Phase.ACTING), *(worker(i) for i in range(1, 5)))
    loop = loop_for(nodes, pause=None, cloud=UnavailableCloud())
    executor = loop.reconciler.executor
    executor.timings = replace(executor.timings, retry_initial_s=20.0, retry_max_s=20.0)
    await loop.reconciler.run_pass()
    await eventually(lambda: executor.busy("workers-0"), timeout_s=1.0, what="the worker")
    await asyncio.sleep(0.2)  # it failed once and waits to retry
    started = time.monotonic()
    with capture_logs() as logs:
        await executor.shutdown(grace_s=5.0)
    await loop.reconciler.close()
    assert time.monotonic() - started < 1.0, "the grace period was waited out"
    assert "workers_cancelled_at_shutdown" not in [line["event"] for line in logs]
