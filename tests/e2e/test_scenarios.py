"""Issue 6 acceptance, end to end: the emulated world in the test process, the daemon as a real
process (``python -m noderescue run``) talking to it over HTTP (kubernetes-asyncio, boto3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from noderescue.sim.world import World
from tests.e2e.daemon_process import DaemonProcess, daemon, eventually_async, write_world_config
from tests.runtime.world_runtime import eventually, mutating_lines, node_events

pytestmark = pytest.mark.slow

SCALE = 10.0
TERMINATE = "TerminateInstanceInAutoScalingGroup"

WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture
def world_of(tmp_path: Path) -> WorldFactory:
    @contextlib.asynccontextmanager
    async def start(scenario: str, *, run_events: bool = True) -> AsyncIterator[World]:
        async with World.start(
            scenario, out_dir=tmp_path / "world", time_scale=SCALE, run_events=run_events
        ) as w:
            yield w

    return start


def cordoned(world: World) -> list[str]:
    return [
        n
        for n in world.cluster.node_names()
        if (world.cluster.get_node(n) or {}).get("spec", {}).get("unschedulable")
    ]


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP endpoint that collects the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


def datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_one_bad_worker_is_replaced_and_the_story_is_told(
    world_of: WorldFactory, tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(notify_path))
    systemd.setblocking(False)
    async with world_of("one-bad-worker") as world, webhook_receiver() as (url, received):

        def notify(raw: dict[str, Any]) -> None:
            raw["notifications"] = [{"type": "webhook", "url": url, "events": ["started", "succeeded"]}]

        config = write_world_config(world, tmp_path / "noderescue.yaml", notify)
        before = set(world.cluster.node_names())
        env = {**world.env(), "NOTIFY_SOCKET": str(notify_path)}
        async with daemon(config, env) as proc:
            labels = {
                "cluster": "one-bad-worker",
                "class": "workers",
                "action": "replace",
                "result": "succeeded",
            }

            async def done() -> bool:
                return await proc.metric("noderescue_remediations_total", **labels) == 1

            await eventually_async(done, timeout_s=30, what="remediations_total succeeded == 1")
            status, body = await proc.get("/status")
            assert status == 200 and "one-bad-worker" in json.loads(body)["clusters"]
            ready, _ = await proc.get("/readyz")
            assert ready == 200
            await eventually(lambda: len(received) >= 2, timeout_s=5, what="the webhook notifications")
        after = set(world.cluster.node_names())
        new = after - before
        assert "workers-1" not in after, "the old Node is gone"
        assert len(new) == 1
        (joined,) = new
        conditions = (world.cluster.get_node(joined) or {})["status"]["conditions"]
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        reasons = node_events(world, "workers-1")
        for told in (
            "RemediationStarted",
            "Cordoned",
            "DrainStarted",
            "DrainSucceeded",
            "ReplacementRequested",
            "ReplacementJoined",
            "RemediationSucceeded",
        ):
            assert told in reasons, f"{told} missing from {reasons}"
        assert [line["verb"] for line in world.audit.lines if line["verb"] == TERMINATE] == [TERMINATE]
        assert cordoned(world) == []
        assert all(line.get("dry_run") is False for line in proc.logged("decision"))
    assert [(body["kind"], body["node"]) for body in received] == [
        ("started", "workers-1"),
        ("succeeded", "workers-1"),
    ]
    assert "workers-1" in received[0]["text"]
    messages = datagrams(systemd)
    systemd.close()
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=one-bad-worker: leader") for m in messages)
    assert messages[-1] == "STOPPING=1"


async def test_pets_reboot_after_a_repair_that_does_not_heal(world_of: WorldFactory, tmp_path: Path) -> None:
    def pets(raw: dict[str, Any]) -> None:
        raw["safety"]["maxUnhealthy"] = "50%"  # two pets: 40 % of 2 rounds down to 0
        for cls in raw["nodeClasses"]:
            if cls["name"] == "gpu":
                cls["drain"].update({"timeout": "1s", "onTimeout": "proceed"})

    async with world_of("pets-reboot") as world:
        boot_before = (world.cluster.get_node("gpu-0") or {})["status"]["nodeInfo"]["bootID"]
        config = write_world_config(world, tmp_path / "noderescue.yaml", pets)
        async with daemon(config, world.env()) as proc:
            await proc.wait_log("remediation_finished", node="gpu-0", result="succeeded", timeout_s=40)
        node = world.cluster.get_node("gpu-0")
        assert node is not None
        assert node["status"]["nodeInfo"]["bootID"] != boot_before
        assert not node["spec"].get("unschedulable")
        reasons = node_events(world, "gpu-0")
        assert (
            reasons.index("RepairCommandSent")
            < reasons.index("RebootIssued")
            < reasons.index("RebootVerified")
        )
        assert "Uncordoned" in reasons
        assert [line["verb"] for line in mutating_lines(world) if line["api"] == "aws"] == [
            "SendCommand",
            "RebootInstances",
        ]


async def test_dry_run_changes_nothing_and_plan_shows_the_replacement(
    world_of: WorldFactory, tmp_path: Path
) -> None:
    async with world_of("one-bad-worker") as world:
        config = write_world_config(world, tmp_path / "noderescue.yaml")
        async with daemon(config, world.env(), "--dry-run") as proc:
            await proc.wait_log("cloud_dry_run_intent", action="replace", timeout_s=30)
            assert await proc.metric("noderescue_dry_run") == 1
            plan = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "noderescue",
                "plan",
                "--config",
                str(config),
                "-o",
                "json",
                env={**os.environ, **world.env()},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await plan.communicate()
        decisions = [line for line in proc.logged("decision") if line.get("decision") == "start"]
        assert decisions and all(line["dry_run"] is True for line in decisions)
        assert mutating_lines(world) == [], "zero mutating requests with noderescue's user agent"
        assert plan.returncode == 0, err.decode()
        assert "replace" in out.decode() and "workers-1" in out.decode()


@pytest.mark.parametrize("how", [pytest.param("kill-9", id="kill-9"), pytest.param("sigterm", id="sigterm")])
async def test_a_daemon_stopped_during_the_drain_is_rolled_forward_with_one_terminate(
    world_of: WorldFactory, tmp_path: Path, how: str
) -> None:
    def slow_drain(raw: dict[str, Any]) -> None:
        for cls in raw["nodeClasses"]:
            # Pods take 2 s (20 emulated s) to terminate: the drain is long enough to stop in.
            cls["drain"].update({"gracePeriod": "20s", "timeout": "20s"})
            # A restart after kill -9 waits out the dead daemon's Lease (15 s): the step outlasts it.
            cls["ladder"][0]["timeout"] = "60s"

    async with world_of("one-bad-worker") as world:
        config = write_world_config(world, tmp_path / "noderescue.yaml", slow_drain)
        first = await DaemonProcess.start(config, world.env(), name="first")
        await first.wait_log("drain_started", node="workers-1", timeout_s=30)
        if how == "kill-9":
            await first.kill9()
        else:
            stopping = time.monotonic()
            assert await first.stop() == 0
            assert time.monotonic() - stopping < 5, "SIGTERM: the drain is a safe point, no 30 s wait"
            assert first.logged("leader_released")
        assert "workers-1" in cordoned(world), "stopped mid-drain: the cordon is still there"
        async with daemon(config, world.env(), name="second") as second:
            await second.wait_log("remediation_finished", node="workers-1", result="succeeded", timeout_s=60)
        assert second.logged("remediation_resumed"), "rolled forward from the record"
        assert len([line for line in world.audit.lines if line["verb"] == TERMINATE]) == 1
        await eventually(lambda: cordoned(world) == [], timeout_s=5, what="no node left cordoned")
