"""`noderescue status` against the emulator: records written through the record store (as the
daemon writes them), history in the state ConfigMap, then the command as a real process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from noderescue.adapters.kube import RecordStore, StateStore, record_to_json
from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.transport import request_json
from noderescue.config import load_config
from noderescue.core.model import RECORD_ANNOTATION, Action, HistoryEvent, Phase, Record
from noderescue.runtime import render
from noderescue.runtime.oneshot import plan_clusters
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import NODES
from tests.runtime.cli_emulator import *  # noqa: F403  (the shared fixtures, found by name)
from tests.runtime.cli_emulator import by_name, run_cli


def uid_of(cluster: SimCluster, node: str) -> str:
    obj = cluster.get_node(node)
    assert obj is not None
    return str(obj["metadata"]["uid"])


async def write_remediation_state(cluster: SimCluster, api: KubeClient, now: float) -> list[HistoryEvent]:
    """workers-1 mid-drain (replace), gpu-0 parked; three replaces in the last hour."""
    draining = Record(
        node="workers-1",
        node_uid=uid_of(cluster, "workers-1"),
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=Phase.DRAINING,
        attempt=1,
        started=now - 120,
        step_started=now - 120,
        deadline=now + 480,
        reason="KernelDeadlock=True (DockerHung) for 2m",
        provider_id="aws:///eu-west-1b/i-workers0001",
        instance_id="i-workers0001",
        cordoned_by_us=True,
    )
    parked = Record(
        node="gpu-0",
        node_uid=uid_of(cluster, "gpu-0"),
        cls="gpu",
        step=0,
        action=Action.REBOOT,
        phase=Phase.NEEDS_HUMAN,
        attempt=1,
        started=now - 3000,
        step_started=now - 3000,
        deadline=None,
        reason="reboot timed out; next step is notify",
        operation_id="reboot-i-gpu0000",
    )
    records = RecordStore(api, "noderescue")
    await records.put(draining)
    await records.put(parked)
    events = [
        HistoryEvent(now - 3000, Action.REPLACE, "workers-7", attempt_start=True),
        HistoryEvent(now - 1800, Action.REPLACE, "workers-8", attempt_start=True),
        HistoryEvent(now - 120, Action.REPLACE, "workers-1", attempt_start=True),
        HistoryEvent(now - 3000, Action.REBOOT, "gpu-0", attempt_start=True),
    ]
    await StateStore(api, "noderescue").append(events, keep_after=now - 86400)
    return events


async def test_status_json_shows_records_parked_nodes_and_rate_limit_usage(
    populated: SimCluster, api: KubeClient, config_file: Path, audit: AuditLog
) -> None:
    now = time.time()
    await write_remediation_state(populated, api, now)
    writes_before = len(audit.lines)

    code, out, err = await run_cli("status", "--config", str(config_file), "-o", "json")

    assert code == 0, err
    doc = orjson.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("noderescue.io/v1", "Status")
    (cluster,) = doc["clusters"]
    assert cluster["pause"] is None
    assert (cluster["inFlight"], cluster["maxConcurrent"]) == (1, 2)
    records = by_name(cluster["remediations"], "node")
    assert set(records) == {"workers-1", "gpu-0"}
    assert records["workers-1"] == {
        "node": "workers-1",
        "class": "workers",
        "action": "replace",
        "step": 0,
        "phase": "draining",
        "attempt": 1,
        "started": render.rfc3339(now - 120),
        "stepStarted": render.rfc3339(now - 120),
        "deadline": render.rfc3339(now + 480),
        "reason": "KernelDeadlock=True (DockerHung) for 2m",
        "instanceID": "i-workers0001",
        "operationID": None,
        "cordonedByUs": True,
    }
    assert cluster["needsHuman"] == [
        {
            "node": "gpu-0",
            "class": "gpu",
            "state": "parked",
            "reason": "reboot timed out; next step is notify",
        }
    ]
    limits = by_name(cluster["rateLimits"], "action")
    assert limits["replace"] == {
        "action": "replace",
        "used": 3,
        "max": 3,
        "per": "1h",
        "nextSlotAt": render.rfc3339(now - 3000 + 3600),
    }
    assert (limits["reboot"]["used"], limits["reboot"]["nextSlotAt"]) == (1, None)
    # workers-5 is unhealthy, but the replace window is full: held back with the slot's time.
    blocked = by_name(cluster["blocked"], "node")
    assert blocked["workers-5"]["gate"] == "rate-limit"
    assert blocked["workers-5"]["until"] == render.rfc3339(now - 3000 + 3600)
    assert len(audit.lines) == writes_before  # status is read-only


async def test_status_table_lists_each_section(
    populated: SimCluster, api: KubeClient, config_file: Path
) -> None:
    await write_remediation_state(populated, api, time.time())

    code, out, _ = await run_cli("status", "--config", str(config_file), "-o", "table")

    assert code == 0
    lines = out.splitlines()
    assert "pause: not paused" in lines
    assert "in flight: 1 (maxConcurrent 2)" in lines
    header = lines.index("remediations:") + 1
    assert lines[header].split() == [
        "NODE",
        "CLASS",
        "ACTION",
        "STEP",
        "PHASE",
        "ATTEMPT",
        "STARTED",
        "DEADLINE",
        "OPERATION",
        "CORDONED-BY-US",
    ]
    row = lines[header + 1].split()
    assert row[:6] == ["workers-1", "workers", "replace", "0", "draining", "1"]
    assert row[-2:] == ["-", "yes"]
    parked = lines[lines.index("needs a human:") + 2].split()
    assert parked[:3] == ["gpu-0", "gpu", "parked"]
    usage = {line.split()[0]: line.split()[1] for line in lines if line.startswith("  re")}
    assert usage["replace"] == "3/3" and usage["reboot"] == "1/5"


async def test_plan_continues_a_recorded_remediation(
    populated: SimCluster, api: KubeClient, config_file: Path
) -> None:
    await write_remediation_state(populated, api, time.time())
    config = load_config(config_file)

    (cluster,) = orjson.loads(render.plans_json(await plan_clusters(config, config.clusters)))["clusters"]

    nodes = by_name(cluster["nodes"])
    assert (nodes["workers-1"]["decision"], nodes["workers-1"]["action"]) == ("continue", "replace")
    assert nodes["workers-1"]["record"]["phase"] == "draining"
    assert nodes["gpu-0"]["decision"] is None and "needs a human" in nodes["gpu-0"]["why"]


async def test_a_record_forged_in_a_node_annotation_is_not_a_record(
    populated: SimCluster, config_file: Path
) -> None:
    """A kubelet may write annotations on its own Node: plan and status must not take a record
    from there (a forged replace, a far deadline) as noderescue's own."""
    now = time.time()
    forged = Record(
        node="workers-2",
        node_uid=uid_of(populated, "workers-2"),
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=Phase.ACTING,
        attempt=1,
        started=now,
        step_started=now,
        deadline=now + 10 * 365 * 86400,
        operation_id="attacker-op",
    )

    def forge(obj: dict[str, Any]) -> bool:
        obj["metadata"].setdefault("annotations", {})[RECORD_ANNOTATION] = record_to_json(forged)
        return True

    populated.store.mutate(NODES, "", "workers-2", forge)
    config = load_config(config_file)

    plans = await plan_clusters(config, config.clusters)

    (cluster,) = orjson.loads(render.plans_json(plans))["clusters"]
    assert by_name(cluster["nodes"]).get("workers-2", {}).get("record") is None
    (status,) = orjson.loads(render.status_json(plans))["clusters"]
    assert status["remediations"] == []


async def test_unreadable_record_is_reported_not_fatal(
    populated: SimCluster, api: KubeClient, config_file: Path
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "noderescue-record-workers-2",
            "labels": {"app.kubernetes.io/managed-by": "noderescue", "noderescue.io/kind": "record"},
        },
        "data": {"record": "{not json"},
    }
    await request_json(api, "POST", "/api/v1/namespaces/noderescue/configmaps", body=body)
    config = load_config(config_file)

    plans = await plan_clusters(config, config.clusters)

    (cluster,) = orjson.loads(render.status_json(plans))["clusters"]
    assert cluster["reachable"] is True
    (problem,) = cluster["unreadable"]
    assert (problem["kind"], problem["name"]) == ("record", "noderescue-record-workers-2")
    assert "unreadable record noderescue-record-workers-2: " in render.status_table(plans)
