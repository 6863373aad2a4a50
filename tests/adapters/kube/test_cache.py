"""The watch cache against the emulator: sync, convergence through faults, freshness, wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from noderescue.adapters.kube.cache import NodeCache
from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.transport import request_json
from noderescue.core.model import NodeView
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults
from tests.adapters.kube.conftest import eventually

ZONES = ("a", "b", "c")


@pytest.fixture
def time_scale() -> float:
    return 10.0  # kubelets renew their Lease every second


def add_nodes(sim: SimCluster, count: int, prefix: str = "workers") -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for i, name in enumerate(names):
        zone = ZONES[i % 3]
        sim.add_node(
            name,
            labels={"noderescue.io/class": "workers"},
            zone=zone,
            provider_id=f"aws:///eu-west-1{zone}/i-{i:04d}",
        )
    return names


def fast_cache(api: KubeClient, inactivity_s: float = 3.0) -> NodeCache:
    return NodeCache(
        api,
        cluster="test",
        page_size=2,
        freeze_gc=False,
        inactivity_s=inactivity_s,
        backoff_base_s=0.05,
        backoff_max_s=0.3,
    )


@pytest.fixture
async def running_cache(api: KubeClient) -> AsyncIterator[NodeCache]:
    cache = fast_cache(api)
    task = asyncio.create_task(cache.run(), name="cache-under-test")
    try:
        yield cache
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def view_of(cache: NodeCache, name: str) -> NodeView | None:
    return next((v for v in cache.snapshot() if v.name == name), None)


def converged(cache: NodeCache, sim: SimCluster) -> bool:
    """The cache holds exactly the emulator's nodes with the same uid and conditions."""
    views = {v.name: v for v in cache.snapshot()}
    if set(views) != set(sim.node_names()):
        return False
    for name, view in views.items():
        node = sim.get_node(name)
        if node is None or node["metadata"]["uid"] != view.uid:
            return False
        statuses = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        if statuses != {c.type: c.status for c in view.conditions}:
            return False
        if bool(node.get("spec", {}).get("unschedulable")) != view.unschedulable:
            return False
    return True


async def test_initial_sync_pages_through_the_list_and_merges_leases(
    sim: SimCluster, running_cache: NodeCache
) -> None:
    names = add_nodes(sim, 5)  # page_size=2: three pages
    await running_cache.wait_synced(5.0)
    await eventually(lambda: converged(running_cache, sim), what="cache to hold the 5 nodes")
    await eventually(
        lambda: all(v.lease_renew is not None for v in running_cache.snapshot()),
        what="lease renewals merged into the views",
    )
    view = view_of(running_cache, names[1])
    assert view is not None
    assert view.zone == "b"
    assert view.provider_id == "aws:///eu-west-1b/i-0001"
    assert view.first_seen is not None
    assert running_cache.synced_at is not None
    assert running_cache.reachable


async def test_converges_through_disconnects_410s_and_relists(
    sim: SimCluster, faults: Faults, running_cache: NodeCache
) -> None:
    names = add_nodes(sim, 4)
    await running_cache.wait_synced(5.0)
    await eventually(lambda: converged(running_cache, sim), what="initial convergence")
    relists_before = running_cache.relists

    faults.watch_disconnect_now()
    sim.set_condition(names[0], "KernelDeadlock", "True", reason="DockerHung")
    await eventually(lambda: converged(running_cache, sim), what="convergence after a disconnect")

    faults.force_410_now()
    sim.remove_node(names[1])
    add_nodes(sim, 1, prefix="late")
    await eventually(lambda: converged(running_cache, sim), what="convergence after a forced 410")
    assert running_cache.relists > relists_before, "a 410 must lead to a relist"

    view = view_of(running_cache, names[0])
    assert view is not None and view.condition("KernelDeadlock") is not None


@pytest.mark.slow
async def test_outage_freezes_freshness_then_converges(
    sim: SimCluster, faults: Faults, api: KubeClient
) -> None:
    names = add_nodes(sim, 3)
    cache = fast_cache(api, inactivity_s=1.0)
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(5.0)
        await eventually(lambda: converged(cache, sim), what="initial convergence")

        faults.api_outage(3.0)
        await eventually(lambda: not cache.reachable, what="the cache to notice the outage")
        frozen = cache.synced_at
        assert frozen is not None
        sim.set_condition(names[2], "ReadonlyFilesystem", "True")
        await asyncio.sleep(1.0)
        assert cache.synced_at == frozen, "freshness must not advance while the API is down"

        await eventually(lambda: converged(cache, sim), timeout_s=10.0, what="convergence after the outage")
        await eventually(
            lambda: (cache.synced_at or 0) > frozen and cache.reachable, what="freshness to advance again"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_wakes_on_health_changes_not_on_heartbeats(sim: SimCluster, running_cache: NodeCache) -> None:
    names = add_nodes(sim, 2)
    await running_cache.wait_synced(5.0)
    await eventually(
        lambda: (
            converged(running_cache, sim) and all(v.lease_renew is not None for v in running_cache.snapshot())
        ),
        what="initial convergence with leases",
    )
    renewed = {v.name: v.lease_renew for v in running_cache.snapshot()}
    running_cache.changed.clear()
    await eventually(
        lambda: any(v.lease_renew != renewed[v.name] for v in running_cache.snapshot()),
        what="a lease heartbeat",
    )
    assert not running_cache.changed.is_set(), "a heartbeat must not wake the reconciler"

    sim.set_condition(names[0], "KernelDeadlock", "True", reason="DockerHung")
    await asyncio.wait_for(running_cache.changed.wait(), 5.0)


async def test_wait_synced_times_out_without_a_server(api: KubeClient, sim: SimCluster) -> None:
    await sim.stop()  # nothing listens any more
    cache = fast_cache(api)
    task = asyncio.create_task(cache.run())
    try:
        with pytest.raises(TimeoutError):
            await cache.wait_synced(0.5)
        assert not cache.reachable
        assert cache.synced_at is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_malformed_node_is_skipped_and_the_rest_stays_current(
    sim: SimCluster, api: KubeClient, running_cache: NodeCache
) -> None:
    names = add_nodes(sim, 2)
    await running_cache.wait_synced(5.0)
    broken = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "broken"},
        "status": {"conditions": [{"type": "Ready"}]},  # no status: cannot be judged
    }
    await request_json(api, "POST", "/api/v1/nodes", body=broken)
    sim.set_condition(names[0], "KernelDeadlock", "True")
    await eventually(
        lambda: (
            (view := view_of(running_cache, names[0])) is not None
            and view.condition("KernelDeadlock") is not None
        ),
        what="the change after the malformed node",
    )
    assert view_of(running_cache, "broken") is None
    assert running_cache.skipped_malformed >= 1


async def test_converges_while_the_api_fails_at_random(
    sim: SimCluster, faults: Faults, running_cache: NodeCache
) -> None:
    names = add_nodes(sim, 4)
    await running_cache.wait_synced(5.0)
    faults.set_api_errors(0.3, (500, 503, 429))
    faults.force_410_now()  # the relist itself has to get through the errors
    sim.set_condition(names[3], "ReadonlyFilesystem", "True")
    sim.remove_node(names[0])
    await eventually(lambda: converged(running_cache, sim), timeout_s=10.0, what="convergence under errors")


async def test_the_inactivity_watchdog_reopens_a_silent_watch_without_confirming_it(
    api: KubeClient, sim: SimCluster, faults: Faults
) -> None:
    """A watch that is open but silent is re-opened after inactivity_s; neither the open
    connection nor the re-open is freshness (the probe is switched off here: data only)."""
    add_nodes(sim, 2)
    cache = NodeCache(
        api, cluster="test", page_size=2, freeze_gc=False, inactivity_s=0.8, probe_interval_s=3600.0
    )
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(5.0)
        faults.set_watch_fault("hang")
        await asyncio.sleep(0.2)  # what was in flight lands
        frozen = cache.synced_at
        opened = sum(sim.server.watch_requests.values())
        await asyncio.sleep(2.0)
        assert sum(sim.server.watch_requests.values()) >= opened + 4, "the watchdog must re-open"
        assert cache.synced_at == frozen, "an open (or re-opened) watch is not freshness"
        faults.set_watch_fault(None)
        await eventually(
            lambda: (cache.synced_at or 0) > (frozen or 0), what="data to confirm the view again"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
