"""`noderescue pause` / `resume`: the durable stop switch in the `noderescue-state` ConfigMap, seen
by `plan` as the pause gate; real processes against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from noderescue.adapters.kube import StateStore
from noderescue.adapters.kube.client import KubeClient
from noderescue.core.model import Pause
from noderescue.runtime.operator import pause_cluster, resume_cluster
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from tests.runtime.cli_emulator import *  # noqa: F403  (the shared fixtures, found by name)
from tests.runtime.cli_emulator import by_name, our_writes, populate, run_cli, write_config


async def plan_doc(config: Path, *extra: str) -> list[dict[str, Any]]:
    code, out, err = await run_cli("plan", "--config", str(config), "-o", "json", *extra)
    assert code == 0, err
    clusters: list[dict[str, Any]] = orjson.loads(out)["clusters"]
    return clusters


def configmap_writes(audit: AuditLog) -> list[tuple[str, str]]:
    return [(w["verb"], w["name"]) for w in our_writes(audit) if w["resource"] == "configmaps"]


@pytest.mark.slow
async def test_pause_then_plan_shows_the_gate_and_resume_clears_it(
    populated: SimCluster, config_file: Path, audit: AuditLog, api: KubeClient
) -> None:
    code, out, err = await run_cli("pause", "--config", str(config_file), "--reason", "CHG-42 kernel rollout")
    assert code == 0, err
    assert out.startswith("cluster emu: paused (since ")
    assert out.rstrip().endswith(": CHG-42 kernel rollout")
    # The ConfigMap did not exist: pause created it, with our User-Agent in the audit log.
    assert configmap_writes(audit) == [("create", "noderescue-state")]
    _, pause = await StateStore(api, "noderescue").load()
    assert pause is not None and pause.reason == "CHG-42 kernel rollout"

    (cluster,) = await plan_doc(config_file)
    assert cluster["pause"]["reason"] == "CHG-42 kernel rollout"
    assert [(t["scope"], t["gate"]) for t in cluster["tripped"]] == [
        ("cluster", "pause"),
        ("class/gpu", "short-circuit"),
    ]
    bad = by_name(cluster["nodes"])["workers-1"]
    assert (bad["decision"], bad["blocked"]["gate"]) == ("skip", "pause")
    assert "CHG-42 kernel rollout" in bad["blocked"]["reason"]

    code, out, _ = await run_cli("resume", "--config", str(config_file))
    assert code == 0
    assert out == "cluster emu: resumed (was paused: CHG-42 kernel rollout)\n"

    (cluster,) = await plan_doc(config_file)
    assert cluster["pause"] is None
    assert [t["gate"] for t in cluster["tripped"]] == ["short-circuit"]  # only class gpu's, as before
    assert by_name(cluster["nodes"])["workers-1"]["decision"] == "start"
    assert configmap_writes(audit) == [("create", "noderescue-state"), ("update", "noderescue-state")]


@pytest.fixture
async def second_sim() -> AsyncIterator[SimCluster]:
    cluster = SimCluster(audit=AuditLog(None))
    await cluster.start()
    try:
        populate(cluster)
        yield cluster
    finally:
        await cluster.stop()


@pytest.mark.slow
async def test_pause_defaults_to_every_cluster_and_cluster_flag_narrows(
    populated: SimCluster, second_sim: SimCluster, kubeconfig: Path, tmp_path: Path
) -> None:
    second_kubeconfig = tmp_path / "second-kubeconfig"
    second_sim.write_kubeconfig(second_kubeconfig)
    config = write_config(tmp_path / "two.yaml", {"emu": kubeconfig, "other": second_kubeconfig})

    code, out, _ = await run_cli("pause", "--config", str(config), "--reason", "freeze")
    assert code == 0
    assert sorted(line.split(":")[0] for line in out.splitlines()) == ["cluster emu", "cluster other"]

    code, out, _ = await run_cli("resume", "--config", str(config), "--cluster", "other")
    assert code == 0
    assert out.startswith("cluster other: resumed")

    paused = {c["name"]: c["pause"] for c in await plan_doc(config)}
    assert paused["emu"] is not None and paused["emu"]["reason"] == "freeze"
    assert paused["other"] is None


@pytest.mark.parametrize(
    ("before", "reason", "changed", "after_reason", "after_since"),
    [
        pytest.param(None, "drill", True, "drill", 1000.0, id="pause-from-running"),
        pytest.param(Pause("drill", 500.0), "drill", False, "drill", 500.0, id="same-reason-no-write"),
        pytest.param(Pause("drill", 500.0), "outage", True, "outage", 500.0, id="new-reason-keeps-since"),
    ],
)
async def test_pause_cluster_outcomes(
    sim: SimCluster,
    api: KubeClient,
    audit: AuditLog,
    before: Pause | None,
    reason: str,
    changed: bool,
    after_reason: str,
    after_since: float,
) -> None:
    store = StateStore(api, "noderescue")
    if before is not None:
        await store.set_pause(before)
    writes = len(our_writes(audit))

    outcome = await pause_cluster(api, "emu", "noderescue", reason, now=1000.0)

    assert outcome.changed is changed
    assert outcome.before == before
    assert outcome.after == Pause(after_reason, after_since)
    assert (await store.load())[1] == Pause(after_reason, after_since)
    assert len(our_writes(audit)) == writes + (1 if changed else 0)


async def test_resume_of_a_running_cluster_writes_nothing(
    sim: SimCluster, api: KubeClient, audit: AuditLog
) -> None:
    outcome = await resume_cluster(api, "emu", "noderescue")
    assert (outcome.changed, outcome.before, outcome.after) == (False, None, None)
    assert outcome.describe() == "cluster emu: not paused; nothing to resume"
    assert our_writes(audit) == []


async def test_pause_with_missing_namespace_says_how_to_fix(
    sim: SimCluster, kubeconfig: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "noderescue.yaml", {"emu": kubeconfig})
    config.write_text(config.read_text().replace("provider: aws", "namespace: ops-tools\n    provider: aws"))

    code, out, err = await run_cli("pause", "--config", str(config))

    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("noderescue: cluster emu: ")
    assert "kubectl create namespace ops-tools" in err
