"""`noderescue plan` against the in-process emulator (the cluster of ``cli_emulator.populate``):
real subprocesses where the command line matters (exit codes, stdout/stderr), the async entry
points in-process for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from noderescue.adapters.kube.client import KubeClient
from noderescue.config import Config, load_config
from noderescue.runtime import render
from noderescue.runtime.oneshot import plan_clusters, read_cluster
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from tests.runtime.cli_emulator import *  # noqa: F403  (the shared fixtures, found by name)
from tests.runtime.cli_emulator import by_name, label_excluded, our_writes, run_cli, write_config

# ------------------------------------------------------------------------------------------------
# The command line, end to end
# ------------------------------------------------------------------------------------------------


async def test_plan_json_shows_replacement_short_circuit_and_excluded_node(
    populated: SimCluster, config_file: Path, audit: AuditLog
) -> None:
    label_excluded(populated, "workers-5")

    # No -o: stdout is a pipe, so the default is JSON.
    code, out, err = await run_cli("plan", "--config", str(config_file))

    assert code == 0, err
    doc = orjson.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("noderescue.io/v1", "Plan")
    (cluster,) = doc["clusters"]
    assert cluster["reachable"] is True and cluster["nodeCount"] == 13
    nodes = by_name(cluster["nodes"])
    assert len(nodes) == 13  # -o json lists every node, healthy ones included

    bad = nodes["workers-1"]
    assert (bad["health"], bad["decision"], bad["action"]) == ("unhealthy", "start", "replace")
    assert any(r.startswith("KernelDeadlock=True (DockerHung)") for r in bad["reasons"])

    for gpu in ("gpu-0", "gpu-1"):
        assert nodes[gpu]["decision"] == "skip"
        assert nodes[gpu]["action"] == "reboot"  # what it would do were the gate open
        assert nodes[gpu]["blocked"]["gate"] == "short-circuit"
    assert {"scope": "class/gpu", "gate": "short-circuit"}.items() <= by_name(cluster["tripped"], "scope")[
        "class/gpu"
    ].items()

    excluded = nodes["workers-5"]
    assert (excluded["decision"], excluded["blocked"]["gate"]) == ("skip", "excluded")
    assert nodes["workers-4"]["health"] == "pending" and nodes["workers-4"]["pendingUntil"]
    assert nodes["infra-0"]["class"] is None and "unmatched" in nodes["infra-0"]["why"]
    assert nodes["workers-0"] == {
        "name": "workers-0",
        "class": "workers",
        "health": "healthy",
        "reasons": [],
        "pendingUntil": None,
        "decision": None,
        "action": None,
        "step": None,
        "blocked": None,
        "why": "",
        "record": None,
    }
    # Read-only: not one mutating request from us in the emulator's audit log.
    assert our_writes(audit) == []


async def test_plan_table_orders_actions_blocked_pending_then_summarises_healthy(
    populated: SimCluster, config_file: Path
) -> None:
    label_excluded(populated, "workers-5")

    code, out, _ = await run_cli("plan", "--config", str(config_file), "-o", "table")

    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    table = lines[header + 1 :]
    order = [line.split()[0] for line in table if line and not line.startswith("healthy:")]
    assert order == ["workers-1", "gpu-0", "gpu-1", "workers-5", "workers-4", "infra-0"]
    assert lines[-1] == "healthy: 7 (gpu 1, workers 6)"
    assert "class/gpu  short-circuit" in out
    # Columns are aligned: every cell of the DECISION column starts at the same offset.
    column = lines[header].index("DECISION")
    assert all(line[column:].split()[0] in {"start", "skip", "-"} for line in table[:6])


async def test_plan_of_unreachable_cluster_exits_1_with_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    config = write_config(tmp_path / "noderescue.yaml", {"gone": kubeconfig})

    code, out, err = await run_cli("plan", "--config", str(config), "-o", "json")

    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith("noderescue: cluster gone unreachable: ")
    assert "Traceback" not in err
    (cluster,) = orjson.loads(out)["clusters"]
    assert cluster["reachable"] is False and cluster["nodes"] == []


@pytest.mark.parametrize(
    ("args", "stderr_has"),
    [
        pytest.param(("--cluster", "nope"), "no cluster named 'nope'", id="unknown-cluster"),
        pytest.param(("-o", "yaml"), "invalid choice", id="bad-output-format"),
    ],
)
async def test_plan_usage_errors_exit_2(config_file: Path, args: tuple[str, ...], stderr_has: str) -> None:
    code, _, err = await run_cli("plan", "--config", str(config_file), *args)
    assert code == 2
    assert stderr_has in err
    assert "Traceback" not in err


async def test_plan_with_broken_config_exits_2_listing_errors(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("clusters: []\nnodeClasses: [{name: x, selector: {}, ladder: [explode]}]\n")
    code, out, err = await run_cli("plan", "--config", str(config))
    assert code == 2
    assert out == ""
    assert "clusters" in err and "ladder" in err


# ------------------------------------------------------------------------------------------------
# In process: the one-shot read and the plan document
# ------------------------------------------------------------------------------------------------


def load(config_file: Path) -> Config:
    return load_config(config_file)


async def test_read_cluster_merges_leases_and_sends_only_reads(
    populated: SimCluster, api: KubeClient, audit: AuditLog
) -> None:
    read = await read_cluster(api, cluster="emu", namespace="noderescue")
    names = [n.name for n in read.snapshot.nodes]
    assert names == sorted(names) and len(names) == 13
    assert all(n.lease_renew is not None for n in read.snapshot.nodes)  # the kubelets' Leases
    assert read.snapshot.synced_at == read.read_at and read.snapshot.pause is None
    assert read.records == {} and read.skipped == ()
    assert our_writes(audit) == []


async def test_plan_json_is_stable_for_the_same_cluster(populated: SimCluster, config_file: Path) -> None:
    config = load(config_file)
    first = render.plans_json(await plan_clusters(config, config.clusters))
    second = render.plans_json(await plan_clusters(config, config.clusters))

    def without_times(text: str) -> Any:
        doc = orjson.loads(text)
        for cluster in doc["clusters"]:
            cluster["readAt"] = cluster["nextWakeup"] = None
            for node in cluster["nodes"]:
                node["reasons"] = [r.rsplit(" for ", 1)[0] for r in node["reasons"]]
                node["why"] = ""
                node["pendingUntil"] = None
            for decision in cluster["decisions"]:
                decision["reason"] = ""
        return doc

    assert without_times(first) == without_times(second)
    cluster = orjson.loads(first)["clusters"][0]
    assert list(cluster) == [
        "name",
        "reachable",
        "error",
        "readAt",
        "nodeCount",
        "pause",
        "unreadable",
        "nextWakeup",
        "counts",
        "tripped",
        "decisions",
        "nodes",
    ]
    assert {"class": "gpu", "health": "unhealthy", "nodes": 2} in cluster["counts"]
    assert [d["node"] for d in cluster["decisions"]] == sorted(d["node"] for d in cluster["decisions"])


KUBECONFIG_TEMPLATE = """\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: '{server}'}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: {context}
"""


@pytest.mark.parametrize(
    ("server", "context", "error_has"),
    [
        pytest.param("http://127.0.0.1:9", "c", "Cannot connect", id="connection-refused"),
        pytest.param("http://127.0.0.1:9", "missing", "missing", id="kubeconfig-context-missing"),
    ],
)
async def test_unreadable_cluster_is_an_error_line_not_an_exception(
    populated: SimCluster, kubeconfig: Path, tmp_path: Path, server: str, context: str, error_has: str
) -> None:
    broken = tmp_path / "broken-kubeconfig"
    broken.write_text(KUBECONFIG_TEMPLATE.format(server=server, context=context))
    config = load_config(write_config(tmp_path / "two.yaml", {"emu": kubeconfig, "broken": broken}))

    emu, bad = await plan_clusters(config, config.clusters, timeout_s=5.0)

    assert emu.error is None and emu.plan is not None  # the other cluster is still planned
    assert bad.plan is None and bad.error is not None
    assert error_has in bad.error and "\n" not in bad.error
