"""Fixtures for the emulated cluster: a SimCluster served on 127.0.0.1:0 and real clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults

# Emulated seconds run this much faster than real ones in dynamics tests (10 s lease = 0.2 s).
FAST = 50.0


def add_workers(
    cluster: SimCluster, count: int, *, zones: tuple[str, ...] = ("eu-west-1a", "eu-west-1b")
) -> list[str]:
    names = []
    for index in range(count):
        name = f"workers-{index}"
        zone = zones[index % len(zones)]
        cluster.add_node(
            name,
            labels={"noderescue.io/class": "workers"},
            zone=zone,
            provider_id=f"aws:///{zone}/i-{index:017x}",
        )
        names.append(name)
    return names


async def eventually(
    predicate: Callable[[], bool], *, timeout_s: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def status_body(exc: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error."""
    body = exc.body or b"{}"
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog(None)


@pytest.fixture
async def cluster(audit: AuditLog) -> AsyncIterator[SimCluster]:
    sim = SimCluster(time_scale=FAST, audit=audit, faults=Faults(seed=7), bookmark_interval_s=0.2)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def api(cluster: SimCluster) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration(host=cluster.url)
    async with client.ApiClient(configuration) as api_client:
        api_client.user_agent = "noderescue-tests/1"
        yield api_client


@pytest.fixture
def kubeconfig(cluster: SimCluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    cluster.write_kubeconfig(path)
    return path
