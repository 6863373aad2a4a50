"""Benchmark: initial sync of the watch cache against N emulated nodes (default 100,000).

The emulated API server runs in a child process (so the parent's RSS is the cache's), holding N
realistic Nodes (the emulator's own manifests) and their kube-node-lease Leases, without kubelets.
The parent measures ``NodeCache`` from start to ``wait_synced`` (both lists, over HTTP), the RSS
growth that leaves behind, and — as the baseline — plain ``orjson.loads`` + slim-view
construction of the very same response bytes, fetched again after the sync.

Prints one JSON object: nodes, sync_s, baseline_s, ratio, rss_growth_mib (targets: ratio <= 2.0,
rss_growth_mib <= 300).

    python bench/watch.py [--nodes 100000] [--page-size 20000]

``raw_fetch_s`` (diagnostic) is the time to fetch the same pages again without parsing: the
emulator answers each ``continue`` page by sorting and filtering the whole collection, so its
cost grows with nodes x pages and dominates ``sync_s`` at small page sizes (page 5000: ~20 s of
~22 s). Pages of 20,000 keep it in proportion; the cache's own work then overlaps with it
(the next page is requested before the current one is parsed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson


def quiet_logs() -> None:
    """Warnings and worse, to stderr: stdout carries the URL (child) and the result (parent)."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------ the child: a server


async def serve(nodes: int) -> None:
    from noderescue.sim import manifests
    from noderescue.sim.kubeapi.resources import LEASES, NAMESPACES, NODES
    from noderescue.sim.kubeapi.server import KubeApiServer
    from noderescue.sim.kubeapi.store import Store

    store = Store(window=1000)
    store.create(NAMESPACES, manifests.namespace(manifests.NODE_LEASE_NAMESPACE))
    store.create(NAMESPACES, manifests.namespace("default"))
    now = time.time()
    for i in range(nodes):
        zone = "eu-west-1" + "abc"[i % 3]
        name = f"workers-{i}"
        node = store.create(
            NODES,
            manifests.node(
                name,
                labels={"noderescue.io/class": "workers"},
                zone=zone,
                provider_id=f"aws:///{zone}/i-{i:017x}",
                index=i,
            ),
        )
        store.create(LEASES, manifests.lease(name, node["metadata"]["uid"], now))
    server = KubeApiServer(store)
    url = await server.start()
    print(url, flush=True)
    # Run until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


# ------------------------------------------------------------------------------ the parent: the cache


def write_kubeconfig(url: str, path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": {"server": url}}],
        "users": [{"name": "sim", "user": {"token": "bench"}}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim"}}],
        "current-context": "sim",
    }
    path.write_bytes(orjson.dumps(config))  # JSON is YAML


async def raw_pages(api: object, path: str, page_size: int) -> list[bytes]:
    from noderescue.adapters.kube.transport import open_response

    pages: list[bytes] = []
    query = {"limit": str(page_size)}
    while True:
        resp = await open_response(api, "GET", path, query=query)  # type: ignore[arg-type]
        try:
            body = await resp.read()
        finally:
            resp.release()
        pages.append(body)
        token = orjson.loads(body).get("metadata", {}).get("continue")
        if not token:
            return pages
        query["continue"] = token


def baseline(node_pages: list[bytes], lease_pages: list[bytes]) -> tuple[float, int]:
    from noderescue.adapters.kube.nodeview import lease_renew_from_json, node_view_from_json

    gc.collect()
    started = time.perf_counter()
    count = 0
    first_seen = time.time()
    for page in node_pages:
        for item in orjson.loads(page)["items"]:
            node_view_from_json(item, first_seen=first_seen)
            count += 1
    for page in lease_pages:
        for item in orjson.loads(page)["items"]:
            lease_renew_from_json(item)
    return time.perf_counter() - started, count


async def measure(url: str, nodes: int, page_size: int, freeze_gc: bool) -> dict[str, object]:
    from noderescue.adapters.kube.cache import NodeCache
    from noderescue.adapters.kube.client import make_api_client

    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        write_kubeconfig(url, kubeconfig)
        api = await make_api_client(kubeconfig, None, timeout_s=120)
    try:
        gc.collect()
        rss_before = rss_mib()
        cache = NodeCache(api, page_size=page_size, freeze_gc=freeze_gc)
        started = time.perf_counter()
        task = asyncio.create_task(cache.run())
        await cache.wait_synced(1800)
        sync_s = time.perf_counter() - started
        rss_growth = rss_mib() - rss_before
        synced = len(cache.snapshot())
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        gc.unfreeze()
        del cache
        fetch_started = time.perf_counter()
        node_pages = await raw_pages(api, "/api/v1/nodes", page_size)
        lease_pages = await raw_pages(
            api, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", page_size
        )
        fetch_s = time.perf_counter() - fetch_started
    finally:
        await api.close()
    baseline_s, parsed = baseline(node_pages, lease_pages)
    if synced != nodes or parsed != nodes:
        raise SystemExit(f"expected {nodes} nodes, cache had {synced}, baseline parsed {parsed}")
    return {
        "nodes": nodes,
        "sync_s": round(sync_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(sync_s / baseline_s, 3),
        "rss_growth_mib": round(rss_growth, 1),
        "page_size": page_size,
        "freeze_gc": freeze_gc,
        # Diagnostics: the same pages fetched again without parsing (server + transfer).
        "raw_fetch_s": round(fetch_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=20000)
    parser.add_argument("--no-freeze-gc", action="store_true", help="keep the collector on the views")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    if args.serve:
        asyncio.run(serve(args.nodes))
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--nodes", str(args.nodes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url:
            raise SystemExit("the emulator did not start")
        result = asyncio.run(measure(url, args.nodes, args.page_size, not args.no_freeze_gc))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
