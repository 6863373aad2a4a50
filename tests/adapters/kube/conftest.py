"""An in-process emulated cluster on 127.0.0.1:0 and a real kubernetes-asyncio client for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog(None)


@pytest.fixture
def faults() -> Faults:
    return Faults(seed=7)


@pytest.fixture
def time_scale() -> float:
    """Emulated seconds per real second; a module overrides this fixture to speed kubelets up."""
    return 1.0


@pytest.fixture
async def sim(audit: AuditLog, faults: Faults, time_scale: float) -> AsyncIterator[SimCluster]:
    cluster = SimCluster(time_scale=time_scale, audit=audit, faults=faults)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
def kubeconfig(sim: SimCluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    sim.write_kubeconfig(path)
    return path


async def new_client(kubeconfig: Path, timeout_s: float = 2.0) -> KubeClient:
    return await make_api_client(kubeconfig, None, timeout_s=timeout_s)


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await new_client(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
