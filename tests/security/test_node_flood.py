"""A node flooding its own Node with huge strings does not grow the daemon.

The emulated cluster runs in a process of its own, so the resident memory measured here is the
watch cache's (and its client's) alone. The flood goes through the real HTTP API: one node
patches its status 300 times, each time with a new 1 MB condition reason (a kubelet may write
any status of its own Node, up to the API server's object size limit)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from noderescue.adapters.kube.cache import NodeCache, release_free_heap
from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.adapters.kube.nodeview import CUT_MARK, MAX_REASON
from noderescue.adapters.kube.transport import request_json
from noderescue.metrics import METRICS

NODE = "flooder-0"
PATCHES = 300
REASON_BYTES = 1_000_000  # under the emulator's (aiohttp's) 1 MiB request body limit
RSS_GROWTH_LIMIT = 48 * 1024 * 1024  # before the caps: ~290 MiB


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Path]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.security.emulator_process", str(tmp_path), NODE],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None, "the emulator process died"
            assert time.monotonic() < deadline, "the emulator process did not start"
            time.sleep(0.05)
        yield tmp_path / "kubeconfig"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def api(emulator: Path) -> AsyncIterator[KubeClient]:
    client = await make_api_client(emulator, None, timeout_s=10.0)
    try:
        yield client
    finally:
        await client.close()


async def patch_reason(api: KubeClient, index: int) -> str:
    reason = f"Flood{index:04d}" + "x" * REASON_BYTES
    body = {
        "status": {
            "conditions": [
                {
                    "type": "FloodCondition",
                    "status": "True",
                    "reason": reason,
                    "message": "m" * 1000,
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                }
            ]
        }
    }
    await request_json(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        body=body,
        content_type="application/strategic-merge-patch+json",
    )
    return reason


def flood_reason(cache: NodeCache) -> str | None:
    view = cache.get(NODE)
    cond = view.condition("FloodCondition") if view is not None else None
    return cond.reason if cond is not None else None


async def wait_for_reason(cache: NodeCache, prefix: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (flood_reason(cache) or "").startswith(prefix):
        assert time.monotonic() < deadline, (
            f"the cache never saw {prefix} (has {(flood_reason(cache) or '')[:20]!r})"
        )
        await asyncio.sleep(0.02)


def settled_rss() -> int:
    gc.collect()
    release_free_heap()
    return rss_bytes()


async def test_a_flood_of_huge_condition_reasons_keeps_memory_flat(api: KubeClient) -> None:
    cache = NodeCache(api, cluster="flood", freeze_gc=False, inactivity_s=10.0, backoff_base_s=0.05)
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(20)
        cut_before = (
            METRICS.registry.get_sample_value(
                "noderescue_node_fields_truncated_total", {"cluster": "flood", "field": "reason"}
            )
            or 0.0
        )
        # Warm up: the first huge events size the client's buffers once.
        for index in range(10):
            await patch_reason(api, index)
        await wait_for_reason(cache, "Flood0009")
        before = settled_rss()
        started = time.monotonic()
        for index in range(10, 10 + PATCHES):
            await patch_reason(api, index)
        await wait_for_reason(cache, f"Flood{9 + PATCHES:04d}")
        after = settled_rss()
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    kept = flood_reason(cache)
    assert kept is not None and len(kept) == MAX_REASON + 1 and kept.endswith(CUT_MARK)
    growth = after - before
    print(f"RSS growth after {PATCHES} 1 MB reasons: {growth / 2**20:.1f} MiB in {elapsed:.1f} s")
    assert growth < RSS_GROWTH_LIMIT, f"grew {growth / 2**20:.0f} MiB"
    cut_after = METRICS.registry.get_sample_value(
        "noderescue_node_fields_truncated_total", {"cluster": "flood", "field": "reason"}
    )
    assert cut_after is not None and cut_after - cut_before >= PATCHES
