"""Freshness comes from data, never from an open connection: hanging watches, EOF storms,
the progress probe, and recovery through a relist (the emulator's watch fault modes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from noderescue.adapters.kube.cache import NodeCache
from noderescue.adapters.kube.client import KubeClient
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults
from tests.adapters.kube.conftest import eventually
from tests.adapters.kube.test_cache import add_nodes, converged, view_of

STALE_AFTER_S = 2.0
PROBE_S = STALE_AFTER_S / 3


@pytest.fixture
def time_scale() -> float:
    # Kubelets renew their Lease every second, so the store's revision keeps moving; bookmarks
    # come every 5 emulated seconds (0.5 s), well within staleAfter.
    return 10.0


def probing_cache(api: KubeClient, **overrides: float) -> NodeCache:
    options: dict[str, float] = {
        "inactivity_s": 0.5,  # the watchdog re-opens a silent watch often: that must not confirm
        "backoff_base_s": 0.5,
        "backoff_max_s": 2.0,
        "stale_after_s": STALE_AFTER_S,
        "bookmark_interval_s": 0.5,
        **overrides,
    }
    return NodeCache(api, cluster="test", page_size=2, freeze_gc=False, **options)  # type: ignore[arg-type]


@asynccontextmanager
async def running(cache: NodeCache) -> AsyncIterator[NodeCache]:
    task = asyncio.create_task(cache.run(), name="cache-under-test")
    try:
        yield cache
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def age(cache: NodeCache) -> float:
    synced = cache.synced_at
    return float("inf") if synced is None else time.time() - synced


def stale(cache: NodeCache) -> bool:
    return not cache.reachable or age(cache) > STALE_AFTER_S


async def test_a_hanging_watch_turns_the_view_stale_then_a_relist_recovers(
    sim: SimCluster, faults: Faults, api: KubeClient
) -> None:
    names = add_nodes(sim, 3)
    async with running(probing_cache(api)) as cache:
        await cache.wait_synced(5.0)
        await eventually(lambda: converged(cache, sim), what="initial convergence")
        await eventually(lambda: age(cache) < 0.5, what="a fresh view")
        relists = cache.relists

        hung_at = time.time()
        faults.set_watch_fault("hang")
        sim.set_condition(names[0], "KernelDeadlock", "True", reason="DockerHung")  # not delivered
        # Watches stay open (and the watchdog re-opens them) but deliver nothing: within
        # staleAfter plus a probe interval the view must be stale.
        deadline = hung_at + STALE_AFTER_S + PROBE_S + 0.5
        went_stale_at = None
        while time.time() < deadline + 1.0:
            if stale(cache):
                went_stale_at = time.time()
                break
            await asyncio.sleep(0.02)
        assert went_stale_at is not None, "a hanging watch kept the view fresh"
        assert went_stale_at <= deadline, f"stale only {went_stale_at - hung_at:.2f}s after the hang"
        synced = cache.synced_at
        assert synced is not None and synced <= hung_at + 0.3, "freshness advanced without data"
        # Silent past the bookmark interval too: the watches are frozen and restarted.
        await eventually(lambda: cache.frozen_watches >= 1, timeout_s=3.0, what="the freeze")

        # The frozen watch is restarted from a list (lists still work during the hang): the
        # change the watch never delivered arrives, and the view is fresh again.
        await eventually(
            lambda: (view := view_of(cache, names[0])) is not None
            and view.condition("KernelDeadlock") is not None,
            timeout_s=5.0,
            what="the relist after the freeze",
        )
        assert cache.relists > relists
        await eventually(lambda: not stale(cache), timeout_s=3.0, what="fresh after the relist")

        faults.set_watch_fault(None)
        sim.set_condition(names[1], "ReadonlyFilesystem", "True")
        await eventually(lambda: converged(cache, sim), timeout_s=5.0, what="convergence after the hang")
        await eventually(lambda: age(cache) < 1.0, timeout_s=5.0, what="fresh after the hang")


async def test_an_eof_storm_is_paced_and_the_view_recovers(
    sim: SimCluster, faults: Faults, api: KubeClient
) -> None:
    names = add_nodes(sim, 2)
    async with running(probing_cache(api, backoff_base_s=0.05, backoff_max_s=0.3)) as cache:
        await cache.wait_synced(5.0)
        await eventually(lambda: converged(cache, sim), what="initial convergence")
        before = dict(sim.server.watch_requests)
        faults.set_watch_fault("eof")
        storm_s = 2.0
        await asyncio.sleep(storm_s)
        faults.set_watch_fault(None)
        opened = {k: v - before.get(k, 0) for k, v in sim.server.watch_requests.items()}
        for plural in ("nodes", "leases"):
            # Never more than a few re-opens per second per stream (today: thousands).
            assert 1 <= opened.get(plural, 0) <= 5 * storm_s + 1, opened

        sim.set_condition(names[0], "KernelDeadlock", "True")
        await eventually(lambda: converged(cache, sim), timeout_s=5.0, what="convergence after the storm")
        await eventually(lambda: age(cache) < 1.0, timeout_s=5.0, what="fresh after the storm")


async def test_the_probe_keeps_a_quiet_healthy_stream_fresh(sim: SimCluster, api: KubeClient) -> None:
    """Nodes do not change; leases do, so the store's revision runs ahead of the node watch
    between its bookmarks. The probe keeps the quiet stream fresh and does not freeze it."""
    add_nodes(sim, 2)
    async with running(probing_cache(api, inactivity_s=30.0)) as cache:
        await cache.wait_synced(5.0)
        worst = 0.0
        for _ in range(40):  # 4 s: two staleAfters
            await asyncio.sleep(0.1)
            worst = max(worst, age(cache))
        assert worst < STALE_AFTER_S, f"a quiet healthy stream looked stale ({worst:.2f}s old)"
        assert cache.frozen_watches == 0
        assert cache.probes >= 4
        assert cache.reachable


async def test_the_probe_answers_limit_one_lists_through_the_real_client(
    sim: SimCluster, api: KubeClient
) -> None:
    add_nodes(sim, 3)
    cache = probing_cache(api)
    async with running(cache):
        await cache.wait_synced(5.0)
        probes = cache.probes
        await cache.probe()
        assert cache.probes == probes + 1 and cache.reachable
        await sim.stop()
        await cache.probe()
        assert not cache.reachable, "a probe without an answer means the API server is unreachable"
