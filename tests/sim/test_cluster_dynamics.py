"""Kubelets, the node lifecycle controller, workloads and PDBs of the emulated cluster."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch

from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import LEASES, PODS
from tests.sim.conftest import FAST, add_workers, eventually


def ready_status(cluster: SimCluster, name: str) -> str | None:
    node = cluster.get_node(name)
    if node is None:
        return None
    return str(next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"))


def condition(cluster: SimCluster, name: str, ctype: str) -> dict[str, Any] | None:
    node = cluster.get_node(name) or {"status": {"conditions": []}}
    return next((c for c in node["status"]["conditions"] if c["type"] == ctype), None)


def pods_on(cluster: SimCluster, node: str) -> list[dict[str, Any]]:
    return [p for p in cluster.store.objects(PODS) if p["spec"].get("nodeName") == node]


def renew_time(cluster: SimCluster, name: str) -> str:
    lease = cluster.store.get(LEASES, "kube-node-lease", name)
    assert lease is not None
    return str(lease["spec"]["renewTime"])


async def test_stopped_kubelet_goes_unknown_after_the_grace_period(cluster: SimCluster) -> None:
    add_workers(cluster, 2)
    cluster.add_workload("web", replicas=2)
    cluster.stop_kubelet("workers-0")
    frozen = renew_time(cluster, "workers-0")
    await asyncio.sleep(20 / FAST)  # half the 40 s grace: still Ready (only the lease is stale)
    assert ready_status(cluster, "workers-0") == "True"
    await eventually(
        lambda: ready_status(cluster, "workers-0") == "Unknown", timeout_s=2, what="Ready=Unknown"
    )
    node = cluster.get_node("workers-0")
    assert node is not None
    assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    assert condition(cluster, "workers-0", "Ready")["reason"] == "NodeStatusUnknown"  # type: ignore[index]
    assert condition(cluster, "workers-0", "MemoryPressure")["status"] == "Unknown"  # type: ignore[index]
    assert renew_time(cluster, "workers-0") == frozen
    assert all(
        next(c["status"] for c in p["status"]["conditions"] if c["type"] == "Ready") == "False"
        for p in pods_on(cluster, "workers-0")
    )
    # The healthy kubelet kept renewing meanwhile.
    assert renew_time(cluster, "workers-1") > frozen
    cluster.start_kubelet("workers-0")
    assert ready_status(cluster, "workers-0") == "True"
    assert "taints" not in (cluster.get_node("workers-0") or {})["spec"]


async def test_reboot_changes_boot_id_and_clears_what_a_reboot_clears(cluster: SimCluster) -> None:
    cluster.add_node(
        "pet-0", labels={}, zone="eu-west-1a", provider_id="aws:///eu-west-1a/i-1", boot_seconds=10
    )
    cluster.set_condition("pet-0", "KernelDeadlock", "True", "DockerHung", "task docker:7 blocked")
    cluster.set_condition("pet-0", "DiskBadBlock", "True", "BadBlocks", "sda", survives_reboot=True)
    boot_before = (cluster.get_node("pet-0") or {})["status"]["nodeInfo"]["bootID"]
    cluster.reboot_node("pet-0")
    assert ready_status(cluster, "pet-0") == "False"
    await eventually(lambda: ready_status(cluster, "pet-0") == "True", timeout_s=2, what="boot")
    node = cluster.get_node("pet-0")
    assert node is not None
    assert node["status"]["nodeInfo"]["bootID"] != boot_before
    assert condition(cluster, "pet-0", "KernelDeadlock")["status"] == "False"  # type: ignore[index]
    assert condition(cluster, "pet-0", "DiskBadBlock")["status"] == "True"  # type: ignore[index]


@pytest.mark.parametrize(
    ("repairable", "healed"),
    [pytest.param(True, True, id="repairable-heals"), pytest.param(False, False, id="not-repairable")],
)
async def test_repair_command_heals_only_repairable_nodes(
    cluster: SimCluster, repairable: bool, healed: bool
) -> None:
    add_workers(cluster, 1)
    cluster.set_condition("workers-0", "KernelDeadlock", "True", "DockerHung")
    cluster.stop_kubelet("workers-0")
    cluster.set_repairable("workers-0", repairable)
    assert cluster.run_repair("workers-0") is healed
    expected_deadlock = "False" if healed else "True"
    assert condition(cluster, "workers-0", "KernelDeadlock")["status"] == expected_deadlock  # type: ignore[index]
    state = cluster.node_state("workers-0")
    assert state is not None and state.kubelet_running is healed


async def test_removed_node_goes_unknown_then_disappears_and_pods_reschedule(cluster: SimCluster) -> None:
    add_workers(cluster, 3)
    cluster.add_daemonset("kube-proxy")
    cluster.add_workload("web", replicas=6, pdb_max_unavailable=1)
    assert len(pods_on(cluster, "workers-0")) == 3  # 2 web + 1 kube-proxy
    cluster.remove_node("workers-0")
    assert ready_status(cluster, "workers-0") == "Unknown"
    assert cluster.node_by_provider_id("aws:///eu-west-1a/i-00000000000000000") is None
    await eventually(lambda: cluster.get_node("workers-0") is None, timeout_s=2, what="node deletion")
    assert cluster.store.get(LEASES, "kube-node-lease", "workers-0") is None
    assert pods_on(cluster, "workers-0") == []

    def web_running() -> int:
        return sum(
            1
            for p in cluster.store.objects(PODS)
            if p["metadata"]["labels"].get("app") == "web"
            and p["spec"].get("nodeName") in ("workers-1", "workers-2")
        )

    await eventually(lambda: web_running() == 6, timeout_s=2, what="rescheduling")
    await eventually(
        lambda: (cluster.pdb_status("web-pdb") or {}).get("currentHealthy") == 6,
        timeout_s=2,
        what="pods ready",
    )


async def test_node_joins_after_delay_and_gets_daemonset_pods(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    cluster.add_daemonset("kube-proxy")
    cluster.add_node(
        "late-0", labels={}, zone="eu-west-1c", provider_id="aws:///eu-west-1c/i-late", join_after_s=10
    )
    assert cluster.get_node("late-0") is None
    await eventually(lambda: ready_status(cluster, "late-0") == "True", timeout_s=2, what="join")
    assert cluster.node_by_provider_id("aws:///eu-west-1c/i-late") == "late-0"
    ds_pods = pods_on(cluster, "late-0")
    assert [p["metadata"]["ownerReferences"][0]["kind"] for p in ds_pods] == ["DaemonSet"]
    assert cluster.node_names() == ["late-0", "workers-0"]


async def test_evicted_pods_come_back_on_schedulable_nodes_only(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 3)
    cluster.add_workload("web", replicas=3)
    core = client.CoreV1Api(api)
    await core.patch_node("workers-1", {"spec": {"unschedulable": True}})
    victim = pods_on(cluster, "workers-0")[0]["metadata"]["name"]
    await core.create_namespaced_pod_eviction(
        victim, "default", client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace="default"))
    )
    await eventually(
        lambda: (
            len([p for p in cluster.store.objects(PODS) if not p["metadata"].get("deletionTimestamp")]) == 3
        ),
        timeout_s=3,
        what="replacement",
    )
    placements = sorted(
        p["spec"].get("nodeName") for p in cluster.store.objects(PODS) if p["metadata"]["name"] != victim
    )
    assert "workers-1" in placements  # the pod that was already there stays
    assert placements.count("workers-1") == 1  # but nothing new lands on the cordoned node


@pytest.mark.parametrize(
    ("max_unavailable", "min_available", "expected"),
    [
        pytest.param(
            1, None, {"currentHealthy": 4, "desiredHealthy": 3, "disruptionsAllowed": 1}, id="max-1"
        ),
        pytest.param(
            "50%", None, {"currentHealthy": 4, "desiredHealthy": 2, "disruptionsAllowed": 2}, id="max-50pct"
        ),
        pytest.param(
            None, "75%", {"currentHealthy": 4, "desiredHealthy": 3, "disruptionsAllowed": 1}, id="min-75pct"
        ),
        pytest.param(
            None, 4, {"currentHealthy": 4, "desiredHealthy": 4, "disruptionsAllowed": 0}, id="min-all"
        ),
        pytest.param(
            0, None, {"currentHealthy": 4, "desiredHealthy": 4, "disruptionsAllowed": 0}, id="max-0"
        ),
    ],
)
async def test_pdb_status(
    cluster: SimCluster,
    max_unavailable: int | str | None,
    min_available: int | str | None,
    expected: dict[str, int],
) -> None:
    add_workers(cluster, 2)
    cluster.add_workload(
        "web", replicas=4, pdb_max_unavailable=max_unavailable, pdb_min_available=min_available
    )
    status = cluster.pdb_status("web-pdb")
    assert status is not None
    assert {k: status[k] for k in expected} == expected
    assert status["expectedPods"] == 4


async def test_pdb_counts_pods_on_a_dead_node_as_unhealthy(cluster: SimCluster) -> None:
    add_workers(cluster, 2)
    cluster.add_workload("web", replicas=4, pdb_max_unavailable=1)
    cluster.stop_kubelet("workers-0")
    await eventually(
        lambda: (cluster.pdb_status("web-pdb") or {}).get("currentHealthy") == 2, timeout_s=3, what="pdb"
    )
    assert (cluster.pdb_status("web-pdb") or {})["disruptionsAllowed"] == 0


async def test_leases_renew_eagerly_in_small_clusters(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    first = renew_time(cluster, "workers-0")
    await eventually(lambda: renew_time(cluster, "workers-0") > first, timeout_s=2, what="renewal")


async def test_leases_renew_lazily_when_read_in_large_mode() -> None:
    sim = SimCluster(time_scale=FAST, lease_mode="lazy")
    await sim.start()
    try:
        add_workers(sim, 3)
        before = renew_time(sim, "workers-0")
        await asyncio.sleep(25 / FAST)
        writes_before = sim.store.rv
        assert renew_time(sim, "workers-0") == before  # nobody read through the API: no writes
        assert sim.store.rv == writes_before
        async with client.ApiClient(client.Configuration(host=sim.url)) as api:
            lease = await client.CoordinationV1Api(api).read_namespaced_lease("workers-0", "kube-node-lease")
        assert lease.spec.renew_time.isoformat() > before.replace("Z", "+00:00")
        sim.stop_kubelet("workers-1")
        stopped_at = renew_time(sim, "workers-1")
        await asyncio.sleep(25 / FAST)
        async with client.ApiClient(client.Configuration(host=sim.url)) as api:
            leases = await client.CoordinationV1Api(api).list_namespaced_lease("kube-node-lease")
        by_name = {item.metadata.name: item.spec.renew_time for item in leases.items}
        assert by_name["workers-1"].isoformat() == stopped_at.replace("Z", "+00:00")
    finally:
        await sim.stop()


async def test_methods_called_from_another_thread_run_on_the_loop(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    results: list[bool] = []

    def cloud_thread() -> None:
        cluster.set_repairable("workers-0", True)
        cluster.set_condition("workers-0", "KernelDeadlock", "True")
        results.append(cluster.run_repair("workers-0"))

    thread = threading.Thread(target=cloud_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert results == [True]
    assert condition(cluster, "workers-0", "KernelDeadlock")["status"] == "False"  # type: ignore[index]


async def test_admin_endpoint_drives_nodes(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 1)
    async with aiohttp.ClientSession() as session:
        url = f"{cluster.url}/_sim/nodes/workers-0/condition"
        async with session.post(url, json={"type": "ReadonlyFilesystem", "status": "True"}) as resp:
            assert resp.status == 200
        async with session.post(f"{cluster.url}/_sim/nodes/workers-0/explode", json={}) as resp:
            assert resp.status == 400
    assert condition(cluster, "workers-0", "ReadonlyFilesystem")["status"] == "True"  # type: ignore[index]


async def test_pods_wait_pending_until_nodes_join_then_bind(cluster: SimCluster) -> None:
    cluster.add_workload("web", replicas=4, pdb_max_unavailable=1)
    pending = cluster.store.objects(PODS)
    assert [p["status"]["phase"] for p in pending] == ["Pending"] * 4
    cluster.add_node("w-0", labels={}, zone="eu-west-1a", provider_id="aws:///eu-west-1a/i-0", join_after_s=5)
    cluster.add_node("w-1", labels={}, zone="eu-west-1b", provider_id="aws:///eu-west-1b/i-1", join_after_s=5)
    await eventually(
        lambda: (cluster.pdb_status("web-pdb") or {}).get("currentHealthy") == 4,
        timeout_s=3,
        what="pods running",
    )
    pods = cluster.store.objects(PODS)
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(p["metadata"]["name"] for p in pending)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["w-0", "w-0", "w-1", "w-1"]


async def test_pods_of_a_dead_kubelet_stay_terminating_until_it_returns(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    cluster.add_bare_pod("solo", "workers-0")
    cluster.stop_kubelet("workers-0")
    core = client.CoreV1Api(api)
    await core.delete_namespaced_pod("solo", "default", grace_period_seconds=1)
    await asyncio.sleep(5 / FAST)
    pod = cluster.store.get(PODS, "default", "solo")
    assert pod is not None and pod["metadata"]["deletionTimestamp"]
    cluster.start_kubelet("workers-0")
    assert cluster.store.get(PODS, "default", "solo") is None


async def test_lazy_leases_are_swept_while_someone_watches_them() -> None:
    sim = SimCluster(time_scale=FAST, lease_mode="lazy", lazy_lease_refresh_s=3.0)
    await sim.start()
    try:
        add_workers(sim, 3)
        async with client.ApiClient(client.Configuration(host=sim.url)) as lease_api:
            coordination = client.CoordinationV1Api(lease_api)
            rv = (await coordination.list_namespaced_lease("kube-node-lease")).metadata.resource_version
            renewed: set[str] = set()
            async with watch.Watch() as w:
                async for event in w.stream(
                    coordination.list_namespaced_lease,
                    "kube-node-lease",
                    resource_version=rv,
                    timeout_seconds=3,
                ):
                    renewed.add(event["object"].metadata.name)
                    if len(renewed) == 3:
                        break
        assert renewed == {"workers-0", "workers-1", "workers-2"}
    finally:
        await sim.stop()


async def test_conditions_set_before_join_appear_when_the_node_joins(cluster: SimCluster) -> None:
    cluster.add_node(
        "late-0", labels={}, zone="eu-west-1a", provider_id="aws:///eu-west-1a/i-l", join_after_s=5
    )
    cluster.set_condition("late-0", "KernelDeadlock", "True", "DockerHung")
    assert cluster.get_node("late-0") is None
    await eventually(lambda: cluster.get_node("late-0") is not None, timeout_s=2, what="join")
    assert condition(cluster, "late-0", "KernelDeadlock")["status"] == "True"  # type: ignore[index]


async def test_a_name_reused_before_the_node_gc_gets_a_fresh_node(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    cluster.add_bare_pod("old-pod", "workers-0")
    old_uid = (cluster.get_node("workers-0") or {})["metadata"]["uid"]
    cluster.remove_node("workers-0")
    cluster.add_node("workers-0", labels={}, zone="eu-west-1b", provider_id="aws:///eu-west-1b/i-new")
    node = cluster.get_node("workers-0")
    assert node is not None
    assert node["metadata"]["uid"] != old_uid
    assert ready_status(cluster, "workers-0") == "True"
    assert cluster.store.get(PODS, "default", "old-pod") is None
    await asyncio.sleep(10 / FAST)  # the old node's GC comes and must leave the new node alone
    assert (cluster.get_node("workers-0") or {})["metadata"]["uid"] == node["metadata"]["uid"]
    assert cluster.node_by_provider_id("aws:///eu-west-1b/i-new") == "workers-0"
    assert cluster.node_by_provider_id("aws:///eu-west-1a/i-00000000000000000") is None
