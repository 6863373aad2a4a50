"""Benchmark: drain a node with 110 pods, noderescue's drain vs the real ``kubectl drain``.

One emulated cluster (in process, ``time_scale`` 100 so the pods' 30 s grace period is 0.3 s),
two nodes and a 110-replica workload without a blocking PDB. The runs alternate between the two
tools and between the two nodes: each drain pushes the 110 pods to the other node (the
workload recreates them there), the drained node is uncordoned, and the next drain empties the
other node. Each run is timed end to end as a user sees it: cordon + evict + wait until the pods
are gone (kubectl: the whole process, discovery included).

Prints one JSON object: pods, noderescue_s, kubectl_s (medians), ratio (target <= 1.0), runs.

    python bench/drain.py [--runs 5] [--pods 110]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import structlog

KUBECTL = Path(sys.executable).parent / "kubectl"


async def pods_on(api: object, node: str) -> list[dict[str, object]]:
    from noderescue.adapters.kube.transport import list_all

    items, _ = await list_all(api, "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})  # type: ignore[arg-type]
    return items


async def wait_for_pods(api: object, node: str, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pods = await pods_on(api, node)
        running = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")  # type: ignore[attr-defined]
            and p["status"].get("phase") == "Running"  # type: ignore[attr-defined]
        ]
        if len(running) == count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{node}: {len(running)} of {count} pods running after {timeout_s} s")
        await asyncio.sleep(0.05)


async def drain_with_noderescue(api: object, node: str) -> None:
    from noderescue.adapters.kube.cordon import cordon
    from noderescue.adapters.kube.drain import drain_node
    from noderescue.core.model import DrainPolicy

    await cordon(api, node)  # type: ignore[arg-type]
    outcome = await drain_node(api, node, DrainPolicy(timeout_s=120), deadline=time.time() + 120)  # type: ignore[arg-type]
    if not outcome.ok:
        raise SystemExit(f"noderescue drain failed: {outcome}")


async def drain_with_kubectl(kubeconfig: Path, node: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"kubectl drain failed ({process.returncode}): {stderr.decode()[-2000:]}")


async def uncordon_plain(api: object, node: str) -> None:
    from noderescue.adapters.kube.transport import MERGE_PATCH, request_json

    # Whoever cordoned it (kubectl leaves no annotation): clear both marks for the next run.
    body = {"spec": {"unschedulable": None}, "metadata": {"annotations": {"noderescue.io/cordoned-by": None}}}
    await request_json(api, "PATCH", f"/api/v1/nodes/{node}", body=body, content_type=MERGE_PATCH)  # type: ignore[arg-type]


async def run(runs: int, pods: int) -> dict[str, object]:
    from noderescue.adapters.kube.client import make_api_client
    from noderescue.sim.cluster import SimCluster

    timings: dict[str, list[float]] = {"noderescue": [], "kubectl": []}
    async with SimCluster(time_scale=100.0) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            sim.write_kubeconfig(kubeconfig)
            api = await make_api_client(kubeconfig, None, timeout_s=30)
            try:
                nodes = ["drain-a", "drain-b"]
                sim.add_node(nodes[0], labels={}, zone="a", provider_id="aws:///eu-west-1a/i-a")
                sim.add_workload("web", replicas=pods)
                sim.add_node(nodes[1], labels={}, zone="b", provider_id="aws:///eu-west-1b/i-b")
                await wait_for_pods(api, nodes[0], pods)
                for i in range(2 * runs):
                    tool = ("noderescue", "kubectl")[i % 2]
                    source, target = nodes[i % 2], nodes[(i + 1) % 2]
                    started = time.perf_counter()
                    if tool == "noderescue":
                        await drain_with_noderescue(api, source)
                    else:
                        await drain_with_kubectl(kubeconfig, source)
                    timings[tool].append(time.perf_counter() - started)
                    if await pods_on(api, source):
                        raise SystemExit(f"{tool} left pods on {source}")
                    await uncordon_plain(api, source)
                    await wait_for_pods(api, target, pods)
            finally:
                await api.close()
    noderescue_s = statistics.median(timings["noderescue"])
    kubectl_s = statistics.median(timings["kubectl"])
    return {
        "pods": pods,
        "noderescue_s": round(noderescue_s, 3),
        "kubectl_s": round(kubectl_s, 3),
        "ratio": round(noderescue_s / kubectl_s, 3),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=110)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(orjson.dumps(asyncio.run(run(args.runs, args.pods))).decode())


if __name__ == "__main__":
    main()
