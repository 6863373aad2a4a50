"""At most once, from the outside: the daemon as a real process, killed with -9 and restarted;
the emulator's audit log and cluster state are the witnesses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from noderescue.sim.kubeapi.resources import CORE_EVENTS
from noderescue.sim.scenario import load_scenario
from noderescue.sim.world import World
from tests.e2e.daemon_process import DaemonProcess, eventually_async, write_world_config

pytestmark = pytest.mark.slow

SCALE = 10.0
TERMINATE = "TerminateInstanceInAutoScalingGroup"

SLOW_JOIN = """
name: slow-join
description: Six AWS workers whose replacements take a minute to join.
provider: aws
region: eu-west-1
groups:
  - {name: workers, size: 6, zones: [a, b, c], labels: {noderescue.io/class: workers},
     podsPerNode: 2, joinSeconds: 60s, bootSeconds: 3s}
workloads:
  - {name: web, replicas: 6, pdb: {maxUnavailable: 1}}
events: []
"""


def _terminates(world: World) -> list[dict[str, Any]]:
    return [line for line in world.audit.lines if line["verb"] == TERMINATE]


def _one_at_a_time(raw: dict[str, Any]) -> None:
    raw["safety"]["maxConcurrent"] = 1
    raw["safety"]["maxUnhealthyPerZone"] = "100%"


async def test_a_replace_whose_node_is_gone_keeps_its_slot_across_a_kill_and_is_verified(
    tmp_path: Path,
) -> None:
    """The replaced Node disappears right after the terminate; the daemon dies before the
    replacement joins. The restarted daemon still knows the remediation: it holds the only
    ``maxConcurrent`` slot (the second bad node waits for the first replacement to join) and it
    is verified and told once."""
    (tmp_path / "slow-join.yaml").write_text(SLOW_JOIN)
    scenario = load_scenario(str(tmp_path / "slow-join.yaml"))
    async with World.start(scenario, out_dir=tmp_path / "world", time_scale=SCALE, run_events=False) as world:
        config = write_world_config(world, tmp_path / "noderescue.yaml", _one_at_a_time)
        world.cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung")
        world.cluster.set_condition("workers-3", "KernelDeadlock", "True", "DockerHung")
        first = await DaemonProcess.start(config, world.env(), name="first")
        try:

            async def terminated_and_gone() -> bool:
                return len(_terminates(world)) == 1 and "workers-1" not in world.cluster.node_names()

            await eventually_async(terminated_and_gone, timeout_s=30, what="the first terminate")
        finally:
            await first.kill9()
        killed_at = time.time()
        second = await DaemonProcess.start(config, world.env(), name="second")
        try:
            replacement: list[str] = []

            async def joined() -> bool:
                fresh = [n for n in world.cluster.node_names() if n not in {f"workers-{i}" for i in range(6)}]
                replacement[:] = fresh
                return bool(fresh)

            await eventually_async(joined, timeout_s=30, what="the first replacement to join")
            joined_at = time.time()
            terminates = _terminates(world)
            assert len(terminates) == 1, (
                f"a second terminate went out {terminates[-1]['ts'] - killed_at:.1f}s after the restart, "
                "before the first replacement joined: the in-flight replace was forgotten"
            )

            async def second_terminated() -> bool:
                return len(_terminates(world)) == 2

            await eventually_async(second_terminated, timeout_s=30, what="the second node's replace")
            assert _terminates(world)[1]["name"] != terminates[0]["name"]

            async def first_told() -> bool:
                return _succeeded_events(world, "workers-1") >= 1

            await eventually_async(first_told, timeout_s=30, what="the first replace to be verified")
            await asyncio.sleep(1.0)
            assert _succeeded_events(world, "workers-1") == 1, "the end is told once"
            assert joined_at >= killed_at
        finally:
            await second.stop()


def _succeeded_events(world: World, node: str) -> int:
    total = 0
    for event in world.cluster.store.objects(CORE_EVENTS, "default"):
        involved = event.get("involvedObject") or {}
        if involved.get("name") == node and event.get("reason") == "RemediationSucceeded":
            total += int(event.get("count") or 1)
    return total
