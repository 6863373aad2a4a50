"""The executor through the real wiring (kubernetes-asyncio over HTTP to the emulated API server,
boto3 to the emulated AWS), in-process with short timings: step order, fencing, dry-run,
crash roll-forward, drain abort, identity-guard refusal."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from noderescue.adapters.cloud import (
    DryRunProvider,
    Instance,
    InstanceState,
    Operation,
    OperationKind,
    OperationStatus,
)
from noderescue.adapters.cloud.guard import Target
from noderescue.adapters.kube import (
    DryRunKubeActions,
    KubeActions,
    StateStore,
    make_api_client,
)
from noderescue.adapters.kube.cordon import cordon
from noderescue.adapters.kube.drain import DrainOutcome, ProgressCallback
from noderescue.adapters.kube.events import EventType
from noderescue.adapters.kube.record_store import LoadedRecords
from noderescue.adapters.kube.transport import MERGE_PATCH, request_json
from noderescue.core.model import (
    CORDONED_BY_ANNOTATION,
    Action,
    DrainPolicy,
    History,
    HistoryEvent,
    Pause,
    Phase,
    Record,
)
from noderescue.runtime.cluster import ClusterRuntime
from noderescue.runtime.executor import GuardedCloud
from noderescue.sim.kubeapi.resources import CORE_EVENTS
from noderescue.sim.world import World
from tests.runtime.world_runtime import (
    eventually,
    mutating_lines,
    node_events,
    running,
    seed_record,
    stored_record,
    world_config,
)

SCALE = 10.0
TERMINATE = "TerminateInstanceInAutoScalingGroup"

WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture
def world_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorldFactory:
    @contextlib.asynccontextmanager
    async def start(scenario: str, *, run_events: bool = True) -> AsyncIterator[World]:
        async with World.start(scenario, out_dir=tmp_path, time_scale=SCALE, run_events=run_events) as world:
            for key, value in world.env().items():
                monkeypatch.setenv(key, value)
            yield world

    return start


# --------------------------------------------------------------------------------------------
# recorders: pass through to the real hands, and note the order of every mutating call


@dataclass
class Journal:
    entries: list[str] = field(default_factory=list)
    before: Callable[[str], Awaitable[None]] | None = None

    async def note(self, entry: str) -> None:
        if self.before is not None:
            await self.before(entry)
        self.entries.append(entry)


class RecordingKube:
    def __init__(self, inner: KubeActions, journal: Journal) -> None:
        self.inner = inner
        self.journal = journal

    async def cordon(self, node: str) -> bool:
        await self.journal.note("cordon")
        return await self.inner.cordon(node)

    async def uncordon(self, node: str) -> bool:
        await self.journal.note("uncordon")
        return await self.inner.uncordon(node)

    async def drain(
        self, node: str, policy: DrainPolicy, *, deadline: float, on_progress: ProgressCallback | None = None
    ) -> DrainOutcome:
        await self.journal.note("drain")
        return await self.inner.drain(node, policy, deadline=deadline, on_progress=on_progress)

    async def put_record(self, record: Record) -> None:
        label = f"{record.phase}{'+op' if record.operation_id else ''}{'+intent' if record.calls else ''}"
        await self.journal.note(f"record:{label}")
        await self.inner.put_record(record)

    async def delete_record(self, node: str) -> None:
        await self.journal.note("record:clear")
        await self.inner.delete_record(node)

    async def load_records(self) -> LoadedRecords:
        return await self.inner.load_records()

    async def claim_replacement(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        return await self.inner.claim_replacement(new_node_uid, new_node, replaced_node)

    async def mirror_record(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        await self.inner.mirror_record(node, record, expected_uid=expected_uid)

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
        await self.inner.emit_event(node, node_uid, reason, message, type_=type_, once_key=once_key)

    async def append_history(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        await self.journal.note("history")
        return await self.inner.append_history(events, keep_after=keep_after)

    async def set_pause(self, pause: Pause) -> None:
        await self.inner.set_pause(pause)

    async def clear_pause(self) -> None:
        await self.inner.clear_pause()

    async def delete_node(self, node: str, *, expected_uid: str) -> None:
        await self.journal.note("delete-node")
        await self.inner.delete_node(node, expected_uid=expected_uid)


class RecordingCloud:
    def __init__(self, inner: GuardedCloud, journal: Journal) -> None:
        self.inner = inner
        self.journal = journal

    async def act(self, kind: OperationKind, target: Target, command: str = "") -> Operation:
        await self.journal.note(f"cloud:{kind}")
        return await self.inner.act(kind, target, command)

    async def resolve(self, provider_id: str) -> Instance:
        return await self.inner.resolve(provider_id)

    async def operation_status(self, op: Operation) -> OperationStatus:
        return await self.inner.operation_status(op)

    async def instance_state(self, instance: Instance) -> InstanceState:
        return await self.inner.instance_state(instance)

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        await self.journal.note(f"cloud:{call}")
        return await self.inner.follow_up(op, call)


def recorded(journal: Journal) -> Callable[[ClusterRuntime], None]:
    def prepare(runtime: ClusterRuntime) -> None:
        ex = runtime.executor
        ex.kube = RecordingKube(ex.kube, journal)
        ex.ledger._store = ex.kube
        assert ex.cloud is not None
        ex.cloud = RecordingCloud(ex.cloud, journal)

    return prepare


class SwitchableFence:
    def __init__(self) -> None:
        self.held = True

    def holds_lease(self) -> bool:
        return self.held


def node_record(world: World, name: str) -> Record | None:
    return stored_record(world, name)


def cordoned_nodes(world: World) -> list[str]:
    return [
        n
        for n in world.cluster.node_names()
        if (world.cluster.get_node(n) or {}).get("spec", {}).get("unschedulable")
    ]


def terminates(world: World) -> list[dict[str, Any]]:
    """Every terminate the cloud saw, whoever sent it."""
    return [line for line in world.audit.lines if line["verb"] == TERMINATE]


def succeeded(run: Any, cluster: str, cls: str, action: str) -> Callable[[], bool]:
    return lambda: (
        run.sample(
            "noderescue_remediations_total",
            cluster=cluster,
            **{"class": cls},
            action=action,
            result="succeeded",
        )
        == 1
    )


# --------------------------------------------------------------------------------------------


async def test_replace_writes_the_record_before_each_mutating_step(world_of: WorldFactory) -> None:
    journal = Journal()
    async with world_of("one-bad-worker") as world, running(world, prepare=recorded(journal)) as run:
        await eventually(succeeded(run, "one-bad-worker", "workers", "replace"), timeout_s=20, what="replace")
    steps = [e for e in journal.entries if e != "delete-node"]
    assert steps == [
        "history",
        "record:started",
        "record:cordoned",
        "cordon",
        "record:draining",
        "drain",
        "record:acting",
        "record:acting+intent",  # the instance id and the intent, before the call
        "cloud:replace",
        "record:acting+op+intent",  # the operation id, right after the call
        "record:verifying+op+intent",
        "record:clear",
    ]


@pytest.mark.parametrize(
    "lost_by", [pytest.param("lease", id="lease-lost"), pytest.param("pause", id="paused")]
)
async def test_a_stop_switch_thrown_mid_remediation_halts_at_the_next_step_then_it_rolls_forward(
    world_of: WorldFactory, lost_by: str
) -> None:
    journal = Journal()
    fence = SwitchableFence()
    state: list[StateStore] = []

    async def throw_switch(entry: str) -> None:
        if entry != "cordon":
            return
        if lost_by == "lease":
            fence.held = False
        else:  # a human runs `noderescue pause`: the state ConfigMap says so
            await state[0].set_pause(Pause("maintenance", since=time.time()))

    journal.before = throw_switch

    def prepare(runtime: ClusterRuntime) -> None:
        recorded(journal)(runtime)
        runtime.executor.fence = fence
        runtime.reconciler.fence = fence
        state.append(StateStore(runtime.api, runtime.settings.namespace))

    async with world_of("one-bad-worker") as world, running(world, prepare=prepare) as run:
        await eventually(lambda: "cordon" in journal.entries, timeout_s=10, what="the cordon")
        await asyncio.sleep(0.5)
        after = journal.entries[journal.entries.index("cordon") + 1 :]
        # Paused: the record says held (one write of the same phase); nothing else is done.
        assert after in ([], ["record:cordoned"]), f"nothing mutating after the switch was thrown: {after}"
        rec = node_record(world, "workers-1")
        assert rec is not None and rec.phase is Phase.CORDONED, "the record is left for later"
        assert terminates(world) == []

        journal.before = None
        fence.held = True
        await state[0].clear_pause()
        run.runtime.reconciler.wake.set()
        await eventually(succeeded(run, "one-bad-worker", "workers", "replace"), timeout_s=20, what="replace")
    assert len(terminates(world)) == 1
    assert cordoned_nodes(world) == []


async def test_dry_run_makes_zero_mutating_calls(world_of: WorldFactory) -> None:
    async with world_of("one-bad-worker") as world, running(world, dry_run=True) as run:
        cloud = run.runtime.cloud
        assert cloud is not None and isinstance(cloud.dry_run, DryRunProvider)
        recorder = cloud.dry_run
        await eventually(lambda: bool(recorder.intents), timeout_s=15, what="the replace intent")
        kube = run.runtime.kube
        assert isinstance(kube, DryRunKubeActions)
        operations = [op for op, _ in kube.calls]
        await asyncio.sleep(0.3)
    assert [(i.kind, i.instance.group) for i in recorder.intents] == [(OperationKind.REPLACE, "workers")]
    assert {"put_record", "cordon", "drain", "emit_event", "append_history"} <= set(operations)
    assert mutating_lines(world) == [], "no Kubernetes or cloud mutation by noderescue in dry-run"
    assert node_record(world, "workers-1") is None
    assert cordoned_nodes(world) == []
    assert run.sample("noderescue_leader", cluster="one-bad-worker") == 0


# --------------------------------------------------------------------------------------------
# crash roll-forward: a record left by a dead daemon, the daemon restarts


async def terminate_like_a_dead_daemon(world: World, instance_id: str) -> Operation:
    assert world.aws is not None
    client = boto3.client("autoscaling", region_name=world.scenario.region, endpoint_url=world.aws.endpoint)
    reply = await asyncio.to_thread(
        lambda: client.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=False
        )
    )
    return Operation(
        id=reply["Activity"]["ActivityId"],
        kind=OperationKind.REPLACE,
        instance_id=instance_id,
        started=time.time(),
        provider="aws",
    )


@pytest.mark.parametrize(
    ("phase", "operation_made"),
    [
        pytest.param(Phase.STARTED, False, id="started"),
        pytest.param(Phase.CORDONED, False, id="cordoned"),
        pytest.param(Phase.DRAINING, False, id="draining"),
        pytest.param(Phase.ACTING, False, id="acting-before-the-call"),
        pytest.param(Phase.ACTING, True, id="acting-operation-recorded"),
        pytest.param(Phase.VERIFYING, True, id="verifying-operation-recorded"),
    ],
)
async def test_restart_rolls_a_replace_forward_from_its_phase_never_terminating_twice(
    world_of: WorldFactory, phase: Phase, operation_made: bool
) -> None:
    async with world_of("one-bad-worker", run_events=False) as world:
        world.cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung")
        node = world.cluster.get_node("workers-1")
        assert node is not None
        instance_id = world.instance_of_node("workers-1")
        assert instance_id is not None
        now = time.time()
        rec = Record(
            node="workers-1",
            node_uid=node["metadata"]["uid"],
            cls="workers",
            step=0,
            action=Action.REPLACE,
            phase=phase,
            attempt=1,
            started=now - 1,
            step_started=now - 1,
            deadline=now + 20,
            reason="KernelDeadlock",
            provider_id=node["spec"]["providerID"],
            instance_id=instance_id if phase is Phase.ACTING or operation_made else None,
            cordoned_by_us=phase is not Phase.STARTED,
        )
        api = await make_api_client(world.kubeconfig, None)
        try:
            if phase is not Phase.STARTED:
                assert await cordon(api, "workers-1")
            if operation_made:
                op = await terminate_like_a_dead_daemon(world, instance_id)
                rec = replace(rec, operation_id=op.to_str())
        finally:
            await api.close()
        await seed_record(world, rec)

        async with running(world) as run:
            await eventually(
                succeeded(run, "one-bad-worker", "workers", "replace"), timeout_s=20, what="replace"
            )
        assert len(terminates(world)) == 1, "exactly one terminate, whoever made it"
        assert cordoned_nodes(world) == []
        assert "workers-1" not in world.cluster.node_names()


async def test_a_drain_blocked_by_a_pdb_aborts_uncordons_and_parks_the_node(world_of: WorldFactory) -> None:
    def short_drain(raw: dict[str, Any]) -> None:
        # One node per zone: the zone gate (50% of 1 allows 0) would hold every remediation.
        raw["safety"]["maxUnhealthyPerZone"] = "100%"
        raw["nodeClasses"][0]["drain"].update({"timeout": "0.5s", "onTimeout": "abort"})

    async with world_of("pdb-blocked") as world:
        config = world_config(world, short_drain)
        async with running(world, config=config):
            await eventually(
                lambda: (
                    (rec := node_record(world, "workers-0")) is not None and rec.phase is Phase.NEEDS_HUMAN
                ),
                timeout_s=20,
                what="needs-human",
            )
        reasons = node_events(world, "workers-0")
        events = [
            obj
            for obj in world.cluster.store.objects(CORE_EVENTS, "default")
            if obj.get("reason") == "DrainTimedOut"
        ]
    assert reasons[:4] == ["RemediationStarted", "Cordoned", "DrainStarted", "DrainTimedOut"]
    assert "Uncordoned" in reasons and reasons[-1] == "NeedsHuman"
    assert "ledger" in events[0]["message"], "the blocking PDB is named"
    assert cordoned_nodes(world) == []
    assert terminates(world) == []


async def test_identity_guard_refusal_parks_the_node_and_touches_no_instance(world_of: WorldFactory) -> None:
    async with world_of("one-bad-worker", run_events=False) as world:
        world.cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung")
        node = world.cluster.get_node("workers-1")
        other = world.cluster.get_node("workers-2")
        assert node is not None and other is not None
        now = time.time()
        # The record says workers-1 is another machine (e.g. the name was reused after a restore).
        rec = Record(
            node="workers-1",
            node_uid=node["metadata"]["uid"],
            cls="workers",
            step=0,
            action=Action.REPLACE,
            phase=Phase.STARTED,
            attempt=1,
            started=now,
            step_started=now,
            deadline=now + 20,
            provider_id=other["spec"]["providerID"],
        )
        await seed_record(world, rec)
        async with running(world) as run:
            await eventually(
                lambda: (r := node_record(world, "workers-1")) is not None and r.phase is Phase.NEEDS_HUMAN,
                timeout_s=20,
                what="needs-human",
            )
            # The NoderescueNeedsHuman alert reads this series.
            await eventually(
                lambda: (
                    run.sample(
                        "noderescue_nodes",
                        cluster=world.scenario.name,
                        **{"class": "workers"},
                        health="needs-human",
                    )
                    == 1
                ),
                timeout_s=10,
                what="noderescue_nodes{health=needs-human}",
            )
        parked = node_record(world, "workers-1")
        assert parked is not None and "identity guard refused" in parked.reason
        assert "NeedsHuman" in node_events(world, "workers-1")
        assert terminates(world) == []
        assert "workers-2" in world.cluster.node_names()


async def test_restart_after_a_reboot_went_out_unrecorded_does_not_reboot_twice(
    world_of: WorldFactory,
) -> None:
    # The daemon died after RebootInstances went out but before it recorded the operation id.
    # The node came back (new bootID) still unhealthy: the step must verify, not reboot again.
    async with world_of("pets-reboot", run_events=False) as world:
        node = world.cluster.get_node("gpu-0")
        assert node is not None
        boot_before = node["status"]["nodeInfo"]["bootID"]
        world.cluster.set_condition("gpu-0", "KernelDeadlock", "True", "DockerHung", survives_reboot=True)
        world.cluster.reboot_node("gpu-0")  # the call that went out before the crash
        await eventually(
            lambda: (world.cluster.get_node("gpu-0") or {})["status"]["nodeInfo"]["bootID"] != boot_before,
            timeout_s=5,
            what="the reboot to complete",
        )
        now = time.time()
        rec = Record(
            node="gpu-0",
            node_uid=node["metadata"]["uid"],
            cls="gpu",
            step=1,
            action=Action.REBOOT,
            phase=Phase.ACTING,
            attempt=1,
            started=now - 5,
            step_started=now - 1,
            deadline=now + 4,
            reason="KernelDeadlock",
            provider_id=node["spec"]["providerID"],
            instance_id=world.instance_of_node("gpu-0"),
            boot_id_before=boot_before,
            calls=("reboot",),  # its intent was recorded before the call
        )
        await seed_record(world, rec)
        async with running(world):
            await eventually(
                lambda: (r := node_record(world, "gpu-0")) is not None and r.phase is Phase.VERIFYING,
                timeout_s=10,
                what="the reboot step to go on verifying",
            )
        reboots = [line for line in world.audit.lines if line["verb"] == "RebootInstances"]
        assert reboots == [], "the reboot that already happened was not sent again"


async def test_a_cordon_we_made_without_a_record_is_released_and_a_human_cordon_is_kept(
    world_of: WorldFactory,
) -> None:
    async with world_of("one-bad-worker", run_events=False) as world:
        api = await make_api_client(world.kubeconfig, None)
        try:
            # Ours, record gone (a human deleted the annotation, or a crash of an older version).
            assert await cordon(api, "workers-2")
            # A human's cordon (no annotation of ours).
            await request_json(
                api,
                "PATCH",
                "/api/v1/nodes/workers-3",
                body={"spec": {"unschedulable": True}},
                content_type=MERGE_PATCH,
            )
            # A human uncordoned our cordon: our annotation is stale and must not claim a later
            # human cordon.
            assert await cordon(api, "workers-4")
            await request_json(
                api,
                "PATCH",
                "/api/v1/nodes/workers-4",
                body={"spec": {"unschedulable": None}},
                content_type=MERGE_PATCH,
            )
        finally:
            await api.close()

        def annotation(name: str) -> str | None:
            node = world.cluster.get_node(name) or {}
            return (node["metadata"].get("annotations") or {}).get(CORDONED_BY_ANNOTATION)

        async with running(world):
            await eventually(
                lambda: cordoned_nodes(world) == ["workers-3"] and annotation("workers-4") is None,
                timeout_s=10,
                what="our leftover cordon released, the human's kept, the stale annotation gone",
            )
        assert annotation("workers-2") is None
        assert "Uncordoned" in node_events(world, "workers-2")
        assert "Uncordoned" not in node_events(world, "workers-3")
