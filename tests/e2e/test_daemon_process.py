"""The daemon process itself: leader election between two daemons, a broken configuration, an
unreachable cluster, and ``noderescue demo``."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from noderescue.cli import main
from noderescue.sim.world import World
from tests.e2e.daemon_process import DaemonProcess, daemon, write_world_config
from tests.runtime.world_runtime import write_unreachable_cluster_config

pytestmark = pytest.mark.slow

SCALE = 10.0


async def test_two_daemons_exactly_one_acts_and_stopping_it_hands_over_quickly(tmp_path: Path) -> None:
    def one_at_a_time(raw: dict[str, Any]) -> None:
        raw["safety"]["maxUnhealthyPerZone"] = "100%"

    async with World.start(
        "one-bad-worker", out_dir=tmp_path / "world", time_scale=SCALE, run_events=False
    ) as world:
        config = write_world_config(world, tmp_path / "noderescue.yaml", one_at_a_time)
        first = await DaemonProcess.start(config, world.env(), name="first")
        try:
            await first.wait_log("leader_acquired", timeout_s=20)
            async with daemon(config, world.env(), name="second") as second:
                await second.wait_log("cluster_synced", timeout_s=20)
                world.cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung")
                await first.wait_log("remediation_finished", node="workers-1", timeout_s=30)
                assert second.logged("leader_acquired") == []
                assert second.logged("remediation_started") == [], "the standby acts on nothing"
                assert await second.metric("noderescue_leader", cluster="one-bad-worker") == 0

                stopped = time.monotonic()
                assert await first.stop() == 0
                await second.wait_log("leader_acquired", timeout_s=20)
                handover_s = time.monotonic() - stopped
                world.cluster.set_condition("workers-3", "KernelDeadlock", "True", "DockerHung")
                await second.wait_log("remediation_started", node="workers-3", timeout_s=20)
        finally:
            await first.stop()
    assert first.logged("leader_released"), "the Lease is given up on SIGTERM"
    assert handover_s < 20, f"handover took {handover_s:.1f}s"


async def test_run_with_a_broken_config_exits_2_listing_every_error(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c1", "provider": "aws", "aws": {"region": "eu-west-1"}}],
                "nodeClasses": [
                    {
                        "name": "workers",
                        "selector": {"matchLabels": {"a": "b"}},
                        "ladder": [{"action": "replace", "timeout": "5 minutes"}],
                    }
                ],
                "bogus": 1,
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noderescue", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 2
    assert "bogus" in text
    assert "autoScalingGroups" in text
    assert "ladder[0].timeout" in text


async def test_run_with_an_unreachable_cluster_stays_up_not_ready_and_acts_on_nothing(tmp_path: Path) -> None:
    config = write_unreachable_cluster_config(tmp_path)
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    async with daemon(config, env) as proc:
        await proc.wait_log("watch_failed", timeout_s=15)
        await asyncio.sleep(1.0)
        status, body = await proc.get("/readyz")
        assert status == 503, body
        assert b"gone" in body
        healthy, _ = await proc.get("/healthz")
        assert healthy == 200
        assert proc.proc.returncode is None, "still up"
    assert proc.proc.returncode == 0
    assert proc.logged("decision") == [], "no pass ever ran on an unsynced view"
    assert proc.logged("remediation_started") == []


async def test_demo_exits_0_within_90_seconds_with_its_summary(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noderescue", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)}, cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=95)
    took = time.monotonic() - started
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert took < 90
    assert "workers-1: replacement joined" in text
    summary = text[text.index("\nnode ") :]  # the table header starts a line
    assert "workers-1" in summary and "replace" in summary
    assert "pets-0" in summary and "repair" in summary
    assert summary.count("succeeded") == 2


async def test_run_once_does_one_pass_finishes_its_work_and_exits_0(tmp_path: Path) -> None:
    async with World.start(
        "one-bad-worker", out_dir=tmp_path / "world", time_scale=SCALE, run_events=False
    ) as world:
        world.cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung")
        config = write_world_config(world, tmp_path / "noderescue.yaml")
        proc = await DaemonProcess.start(config, world.env(), "--once", name="once")
        async with asyncio.timeout(40):
            code = await proc.proc.wait()
        await proc.stop()
    assert code == 0, proc.tail()
    assert len(proc.logged("decision", decision="start")) == 1, "exactly one pass"
    assert proc.logged("remediation_finished", node="workers-1", result="succeeded")
    assert "workers-1" not in world.cluster.node_names()


def test_demo_without_the_sim_extra_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # import moto -> ImportError
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'noderescue[sim]'" in err and "moto" in err
