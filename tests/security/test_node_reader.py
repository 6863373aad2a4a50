"""The identity guard's Node reader over the emulated API server: the target read fresh, and
every Node claiming a providerID (from the watch cache, or a paginated LIST without one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noderescue.adapters.kube.cache import NodeCache
from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.adapters.kube.nodeview import parse_time
from noderescue.runtime.node_reader import KubeNodeReader
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults

VICTIM_PID = "aws:///eu-west-1a/i-0000000000000000a"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimCluster]:
    cluster = SimCluster(audit=AuditLog(None), faults=Faults(seed=7))
    await cluster.start()
    try:
        for name, pid in [
            ("workers-0", VICTIM_PID),
            ("workers-1", "aws:///eu-west-1b/i-0000000000000000b"),
            ("attacker-0", VICTIM_PID),  # registered claiming workers-0's machine
        ]:
            cluster.add_node(name, labels={}, zone="eu-west-1a", provider_id=pid)
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def api(sim: SimCluster, tmp_path: Path) -> AsyncIterator[KubeClient]:
    sim.write_kubeconfig(tmp_path / "kubeconfig")
    client = await make_api_client(tmp_path / "kubeconfig", None, timeout_s=5.0)
    try:
        yield client
    finally:
        await client.close()


async def test_identity_includes_the_creation_time(sim: SimCluster, api: KubeClient) -> None:
    node = sim.get_node("workers-0")
    assert node is not None
    identity = await KubeNodeReader(api).get_node_identity("workers-0")
    assert identity is not None
    assert identity.uid == node["metadata"]["uid"]
    assert identity.provider_id == VICTIM_PID
    assert identity.created == parse_time(node["metadata"]["creationTimestamp"])
    assert await KubeNodeReader(api).get_node_identity("nobody") is None


async def test_claims_from_a_paginated_list(api: KubeClient) -> None:
    reader = KubeNodeReader(api)
    assert await reader.nodes_claiming(VICTIM_PID) == ["attacker-0", "workers-0"]
    assert await reader.nodes_claiming("aws:///eu-west-1c/i-0000000000000000c") == []


async def test_claims_from_the_watch_cache(api: KubeClient) -> None:
    cache = NodeCache(api, cluster="reader", freeze_gc=False)
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(10)
        reader = KubeNodeReader(api, cache)
        assert await reader.nodes_claiming(VICTIM_PID) == ["attacker-0", "workers-0"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
