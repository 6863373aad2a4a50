"""The KubeActions implementations: the dry-run recorder makes no mutating request at all."""

from __future__ import annotations

import time

import pytest

from noderescue.adapters.kube.actions import DryRunKubeActions, KubeActions, KubeAdapter
from noderescue.adapters.kube.client import KubeClient
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
    await actions.write_record("n1", record, expected_uid=uid)
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
        "write_record",
        "append_history",
        "emit_event",
        "cordon",
        "drain",
        "set_pause",
        "clear_pause",
        "uncordon",
        "write_record",
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
    assert {line["userAgent"] for line in audit.lines} == {"noderescue/0.1.0"}
    assert sim.get_node("n1") is None


async def test_delete_node_refuses_another_uid(sim: SimCluster, api: KubeClient, node_uid: str) -> None:
    from noderescue.adapters.kube.errors import Conflict

    with pytest.raises(Conflict):
        await KubeAdapter(api, state_namespace="default").delete_node("n1", expected_uid="not-" + node_uid)
    assert sim.get_node("n1") is not None
