"""Benchmark: one planning pass over 100,000 nodes in 10 classes, 2% unhealthy.

Prints one JSON object: {"nodes", "plan_s", "baseline_s", "ratio"}. ``plan_s`` is the median of
5 passes; ``baseline_s`` the median of 5 loops that only touch every node's conditions (the least
any health check must do), measured in the same run so the ratio survives a noisy machine.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time

import orjson

from noderescue.core.model import (
    Action,
    Condition,
    ConditionRule,
    History,
    LeaseRule,
    NodeClass,
    NodeView,
    Policy,
    Quantity,
    RateLimit,
    Safety,
    Selector,
    Snapshot,
    Step,
)
from noderescue.core.planner import plan

NOW = 1_800_000_000.0
NPD_TYPES = (
    "KernelDeadlock",
    "ReadonlyFilesystem",
    "FrequentKubeletRestart",
    "FrequentContainerdRestart",
    "CorruptDockerOverlay2",
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
)


def build_policy(classes: int) -> Policy:
    node_classes = tuple(
        NodeClass(
            name=f"class-{i}",
            selector=Selector(match_labels=(("noderescue.io/class", f"class-{i}"),)),
            rules=(
                ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),
                ConditionRule("KernelDeadlock", frozenset({"True"}), 60.0),
                ConditionRule("ReadonlyFilesystem", frozenset({"True"}), 60.0),
                LeaseRule(120.0),
            ),
            ladder=(Step(Action.REPAIR, 300.0, command="true"), Step(Action.REPLACE, 900.0)),
            max_unavailable=Quantity(10, percent=True),
        )
        for i in range(classes)
    )
    safety = Safety(
        max_unhealthy=Quantity(40, percent=True),
        max_concurrent=50,
        rate_limits=(RateLimit(Action.REPLACE, 30, 3600.0), RateLimit(Action.REPAIR, 100, 3600.0)),
    )
    return Policy("bench", "aws", safety, node_classes)


def build_nodes(count: int, classes: int, unhealthy_share: float, seed: int = 7) -> tuple[NodeView, ...]:
    rnd = random.Random(seed)
    nodes = []
    for i in range(count):
        bad = rnd.random() < unhealthy_share
        conditions = [
            Condition(
                "Ready", "False" if bad else "True", "KubeletNotReady" if bad else "KubeletReady", NOW - 3600
            )
        ]
        conditions += [Condition(t, "False", "NoProblem", NOW - 86400) for t in NPD_TYPES]
        zone = "abc"[i % 3]
        nodes.append(
            NodeView(
                name=f"node-{i:06d}",
                uid=f"uid-{i}",
                labels={
                    "noderescue.io/class": f"class-{i % classes}",
                    "topology.kubernetes.io/zone": f"eu-west-1{zone}",
                    "kubernetes.io/hostname": f"node-{i:06d}",
                    "node.kubernetes.io/instance-type": "m6i.large",
                },
                zone=f"eu-west-1{zone}",
                provider_id=f"aws:///eu-west-1{zone}/i-{i:017x}",
                conditions=tuple(conditions),
                lease_renew=NOW - rnd.uniform(0, 10),
                boot_id=f"boot-{i}",
                created=NOW - 86400 * 30,
                first_seen=NOW - 86400,
            )
        )
    return tuple(nodes)


def baseline(nodes: tuple[NodeView, ...]) -> int:
    touched = 0
    for node in nodes:
        for cond in node.conditions:
            if cond.status == "True":
                touched += 1
    return touched


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    policy = build_policy(args.classes)
    nodes = build_nodes(args.nodes, args.classes, 0.02)
    snapshot = Snapshot(nodes=nodes, synced_at=NOW - 1)
    gc.freeze()  # a long-lived heap, as in the daemon after its initial list

    result = plan(snapshot, {}, History(), policy, NOW)
    plan_s = median_time(lambda: plan(snapshot, {}, History(), policy, NOW), args.repeats)
    baseline_s = median_time(lambda: baseline(nodes), args.repeats)
    starts = sum(1 for d in result.decisions if d.kind == "start")
    print(
        orjson.dumps(
            {
                "nodes": args.nodes,
                "classes": args.classes,
                "unhealthy": result.counts
                and sum(v for (_, h), v in result.counts.items() if h == "unhealthy"),
                "starts": starts,
                "plan_s": round(plan_s, 4),
                "baseline_s": round(baseline_s, 4),
                "ratio": round(plan_s / baseline_s, 2),
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
