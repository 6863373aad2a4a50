"""The KubeActions implementations: the dry-run recorder makes no mutating request at all."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from noderescue import failpoints
from noderescue.adapters.kube.actions import DryRunKubeActions, KubeActions, KubeAdapter
from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.records import StaleRecord
from noderescue.core.model import Action, DrainPolicy, HistoryEvent, Pause, Phase, Record
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster


def mutating_requests(audit: AuditLog) -> list[tuple[str, str, str | None]]:
    return [(line["verb"], line["resource"], line["subresource"]) for line in audit.lines]


async def exercise(actions: KubeActions, uid: str) -> None:
    """Every mutating operation the runtime uses, on node n1."""
    record = Record(
        node="n1",
        node_uid=uid,
        cls="workers",
        step=0,
        action=Action.REBOOT,
        phase=Phase.CORDONED,
        attempt=1,
        started=1.0,
        step_started=1.0,
        deadline=100.0,
        cordoned_by_us=True,
    )
    await actions.put_record(record)
    await actions.mirror_record("n1", record, expected_uid=uid)
    await actions.write_record("n1", record, expected_uid=uid)
    assert await actions.claim_replacement("uid-new", "n2", "n1") is True
    assert await actions.claim_replacement("uid-new", "n2", "n0") is False
    loaded = await actions.load_records()
    assert loaded.records == {"n1": record}
    assert set(loaded.claims) == {"uid-new"}
    await actions.append_history(
        [HistoryEvent(ts=time.time(), action=Action.REBOOT, node="n1")], keep_after=0.0
    )
    await actions.emit_event("n1", uid, "Cordoned", "cordoned for reboot")
    assert await actions.cordon("n1") is True
    outcome = await actions.drain("n1", DrainPolicy(grace_period_s=0), deadline=time.time() + 10)
    assert outcome.ok, outcome
    await actions.set_pause(Pause(reason="test", since=1.0))
    await actions.clear_pause()
    await actions.uncordon("n1")
    await actions.write_record("n1", None, expected_uid=uid)
    await actions.delete_record("n1")
    await actions.mirror_record("n1", None, expected_uid=uid)
    assert await actions.prune_claims(set(), older_than=time.time() + 1) == 1
    loaded = await actions.load_records()
    assert loaded.records == {} and loaded.claims == {}
    await actions.delete_node("n1", expected_uid=uid)


@pytest.fixture
def node_uid(sim: SimCluster) -> str:
    sim.add_node("n1", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-1")
    sim.add_workload("web", replicas=2)
    sim.add_node("n2", labels={}, zone="b", provider_id="aws:///eu-west-1b/i-2")
    node = sim.get_node("n1")
    assert node is not None
    return str(node["metadata"]["uid"])


async def test_dry_run_makes_zero_mutating_requests(
    sim: SimCluster, api: KubeClient, audit: AuditLog, node_uid: str
) -> None:
    dry = DryRunKubeActions(api, state_namespace="default")
    await exercise(dry, node_uid)
    assert mutating_requests(audit) == []
    assert [op for op, _ in dry.calls] == [
        "put_record",
        "mirror_record",
        "write_record",
        "claim_replacement",
        "claim_replacement",
        "append_history",
        "emit_event",
        "cordon",
        "drain",
        "set_pause",
        "clear_pause",
        "uncordon",
        "write_record",
        "delete_record",
        "mirror_record",
        "prune_claims",
        "delete_node",
    ]
    assert sim.get_node("n1") is not None


async def test_the_real_adapter_does_mutate_with_our_user_agent(
    sim: SimCluster, api: KubeClient, audit: AuditLog, node_uid: str
) -> None:
    """The counterpart of the dry-run test: the same script against the real adapter is seen."""
    await exercise(KubeAdapter(api, state_namespace="default"), node_uid)
    seen = mutating_requests(audit)
    assert ("create", "pods", "eviction") in seen
    assert ("delete", "nodes", None) in seen
    assert {
        ("create", "configmaps", None),
        ("update", "configmaps", None),
        ("delete", "configmaps", None),
    } <= set(seen)
    assert {line["userAgent"] for line in audit.lines} == {"noderescue/0.1.0"}
    assert sim.get_node("n1") is None


async def test_delete_node_refuses_another_uid(sim: SimCluster, api: KubeClient, node_uid: str) -> None:
    from noderescue.adapters.kube.errors import Conflict

    with pytest.raises(Conflict):
        await KubeAdapter(api, state_namespace="default").delete_node("n1", expected_uid="not-" + node_uid)
    assert sim.get_node("n1") is not None


async def test_dry_run_records_lie_over_the_real_store_which_it_only_reads(
    api: KubeClient, audit: AuditLog, node_uid: str
) -> None:
    stored = Record(
        node="n1",
        node_uid=node_uid,
        cls="workers",
        step=0,
        action=Action.REBOOT,
        phase=Phase.ACTING,
        attempt=1,
        started=1.0,
        step_started=1.0,
        deadline=100.0,
        calls=("reboot",),
    )
    real = KubeAdapter(api, state_namespace="default")
    await real.put_record(stored)
    assert await real.claim_replacement("uid-x", "n2", "n9") is True
    before = len(audit.lines)

    dry = DryRunKubeActions(api, state_namespace="default")
    assert (await dry.load_records()).records == {"n1": stored}
    with pytest.raises(StaleRecord):  # the same refusal a real run would meet
        await dry.put_record(replace(stored, phase=Phase.CORDONED))
    assert await dry.claim_replacement("uid-x", "n2", "n1") is False
    await dry.delete_record("n1")
    assert (await dry.load_records()).records == {}
    assert len(audit.lines) == before
    assert (await real.load_records()).records == {"n1": stored}


async def test_every_mutating_call_of_the_adapter_passes_its_failpoints(
    api: KubeClient, node_uid: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    failpoints.arm("", trace=str(trace))
    try:
        await exercise(KubeAdapter(api, state_namespace="default"), node_uid)
    finally:
        failpoints.arm("")
    reached = trace.read_text().split()
    expected = {
        f"{name}.{when}"
        for name in (
            "kube.record.put",
            "kube.record.mirror",
            "kube.claim",
            "kube.history.append",
            "kube.cordon",
            "kube.drain",
            "kube.pause.set",
            "kube.pause.clear",
            "kube.uncordon",
            "kube.record.delete",
            "kube.claim.delete",
            "kube.node.delete",
        )
        for when in ("before", "after")
    }
    assert set(reached) == expected
    for name in expected:
        if name.endswith(".before"):
            after = name.removesuffix(".before") + ".after"
            assert reached.index(name) < reached.index(after), name


async def test_an_armed_failpoint_stops_the_call_at_that_instruction(
    sim: SimCluster, api: KubeClient, node_uid: str
) -> None:
    failpoints.arm("kube.node.delete.before=raise")
    try:
        with pytest.raises(failpoints.FailpointError):
            await KubeAdapter(api, state_namespace="default").delete_node("n1", expected_uid=node_uid)
    finally:
        failpoints.arm("")
    assert sim.get_node("n1") is not None
