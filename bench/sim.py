"""Benchmark of the emulated Kubernetes API server.

Prints one JSON object:
  list_10k_s          LIST of 10,000 nodes over HTTP (GET /api/v1/nodes, whole body read), median of 3
  list_10k_parsed_s   the same plus the client's orjson.loads of the ~24 MB body (a client-side cost)
  watch_updates_per_s node updates (condition changes through SimCluster) delivered to one HTTP watcher
  rss_100k_mib        RSS of a fresh process holding a SimCluster with 100,000 nodes (and their Leases)
Targets: list_10k_s <= 1.0, watch_updates_per_s >= 1000, rss_100k_mib <= 2048.

    python bench/sim.py [--list-nodes 10000] [--updates 5000] [--rss-nodes 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import subprocess
import sys
import time

import aiohttp
import orjson
import structlog

from noderescue.sim.cluster import SimCluster


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def add_nodes(cluster: SimCluster, count: int) -> None:
    zones = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    for i in range(count):
        zone = zones[i % 3]
        cluster.add_node(
            f"workers-{i}",
            labels={"noderescue.io/class": "workers"},
            zone=zone,
            provider_id=f"aws:///{zone}/i-{i:017x}",
        )


async def bench_list(count: int) -> tuple[float, float]:
    cluster = SimCluster(lease_mode="lazy")
    add_nodes(cluster, count)
    await cluster.start()
    try:
        fetched, parsed = [], []
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                started = time.perf_counter()
                async with session.get(f"{cluster.url}/api/v1/nodes") as resp:
                    body = await resp.read()
                fetched.append(time.perf_counter() - started)
                items = orjson.loads(body)["items"]
                parsed.append(time.perf_counter() - started)
                assert len(items) == count, len(items)
        return statistics.median(fetched), statistics.median(parsed)
    finally:
        await cluster.stop()


async def bench_watch(nodes: int, updates: int) -> float:
    cluster = SimCluster(lease_mode="lazy")
    add_nodes(cluster, nodes)
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as session:
            listed = orjson.loads(await (await session.get(f"{cluster.url}/api/v1/nodes")).read())
            rv = listed["metadata"]["resourceVersion"]
            url = f"{cluster.url}/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=60"
            async with session.get(url) as resp:
                received = 0
                started = time.perf_counter()

                async def produce() -> None:
                    for i in range(updates):
                        cluster.set_condition(
                            f"workers-{i % nodes}", "KernelDeadlock", "True" if i % 2 else "False"
                        )
                        if i % 200 == 0:
                            await asyncio.sleep(0)  # the dynamics yield like any other task

                producer = asyncio.create_task(produce())
                async for line in resp.content:
                    event = orjson.loads(line)
                    assert event["type"] == "MODIFIED"
                    received += 1
                    if received == updates:
                        break
                elapsed = time.perf_counter() - started
                await producer
        return updates / elapsed
    finally:
        await cluster.stop()


def rss_child(count: int) -> None:
    """Build the 100k-node cluster in this process and print its RSS in MiB."""
    cluster = SimCluster()  # auto: leases go lazy above 2,000 nodes
    add_nodes(cluster, count)
    gc.collect()
    assert len(cluster.node_names()) == count
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                print(int(line.split()[1]) / 1024)
                return


def bench_rss(count: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(count)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list-nodes", type=int, default=10_000)
    parser.add_argument("--watch-nodes", type=int, default=1_000)
    parser.add_argument("--updates", type=int, default=5_000)
    parser.add_argument("--rss-nodes", type=int, default=100_000)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    list_s, list_parsed_s = asyncio.run(bench_list(args.list_nodes))
    result = {
        "list_10k_s": round(list_s, 4),
        "list_10k_parsed_s": round(list_parsed_s, 4),
        "watch_updates_per_s": round(asyncio.run(bench_watch(args.watch_nodes, args.updates))),
        "rss_100k_mib": round(bench_rss(args.rss_nodes), 1),
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
