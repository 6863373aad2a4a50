"""The emulator's watch fault modes: hang (accepted, nothing delivered) and eof (an empty 200),
switched by Faults, by scenario events and through /_sim/faults."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults
from noderescue.sim.scenario import EventRunner, ScenarioError, parse_scenario
from tests.sim.conftest import add_workers
from tests.sim.recording_cluster import RecordingCluster

WATCH = "/api/v1/nodes?watch=true&allowWatchBookmarks=true&timeoutSeconds=30"


async def test_hang_accepts_then_delivers_nothing_and_eof_ends_at_once(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    async with aiohttp.ClientSession() as http:
        cluster.faults.set_watch_fault("hang")
        async with http.get(cluster.url + WATCH) as resp:
            assert resp.status == 200
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.6):  # bookmarks come every 0.2 s here, when healthy
                    await resp.content.readline()

        cluster.faults.set_watch_fault("eof")
        async with http.get(cluster.url + WATCH) as resp:
            assert resp.status == 200
            async with asyncio.timeout(2):
                assert await resp.read() == b""
        # Lists are not affected.
        async with http.get(cluster.url + "/api/v1/nodes?limit=1") as resp:
            assert resp.status == 200 and len((await resp.json())["items"]) == 1

        cluster.faults.set_watch_fault(None)
        async with http.get(cluster.url + WATCH) as resp:
            async with asyncio.timeout(2):
                assert b'"ADDED"' in await resp.content.readline()
    assert cluster.server.watch_requests["nodes"] == 3


async def test_a_watch_open_when_the_hang_starts_freezes_and_thaws(cluster: SimCluster) -> None:
    add_workers(cluster, 1)
    async with aiohttp.ClientSession() as http, http.get(cluster.url + WATCH) as resp:
        await resp.content.readline()  # the ADDED of the node
        cluster.faults.set_watch_fault("hang", for_s=0.8)
        cluster.add_node("late", labels={}, zone="eu-west-1a", provider_id="aws:///eu-west-1a/i-late")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await resp.content.readline()
        async with asyncio.timeout(3):  # the timed fault ends by itself: delivery resumes
            line = await resp.content.readline()
        assert b"late" in line


async def test_the_admin_endpoint_switches_watch_faults(cluster: SimCluster) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            cluster.url + "/_sim/faults", json={"watch_fault": "hang", "watch_fault_for_s": 30}
        ) as resp:
            state = await resp.json()
        assert state["watch_fault"] == "hang" and 29 < state["watch_fault_remaining_s"] <= 30
        async with http.post(cluster.url + "/_sim/faults", json={"watch_fault": None}) as resp:
            assert (await resp.json())["watch_fault"] is None
        async with http.post(cluster.url + "/_sim/faults", json={"watch_fault": "stall"}) as resp:
            assert resp.status == 400


async def test_scenario_events_switch_watch_faults_for_their_duration() -> None:
    scenario = parse_scenario(
        {
            "name": "watch-faults",
            "provider": "none",
            "groups": [{"name": "workers", "size": 1}],
            "events": [{"at": "0s", "watch": "hang", "for": "2s"}, {"at": "4s", "watch": "eof"}],
        }
    )
    faults = Faults()
    runner = EventRunner(scenario, RecordingCluster(), faults, time_scale=10.0)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    assert faults.watch_fault() == "hang"
    await asyncio.sleep(0.25)  # 2 emulated seconds are 0.2 s
    assert faults.watch_fault() is None
    await task
    assert faults.watch_fault() == "eof" and faults.watch_fault_remaining_s() is None


def test_disconnect_and_expire_take_no_duration() -> None:
    with pytest.raises(ScenarioError, match="takes no 'for'"):
        parse_scenario(
            {
                "name": "x",
                "provider": "none",
                "groups": [{"name": "w", "size": 1}],
                "events": [{"at": "0s", "watch": "expire", "for": "1s"}],
            }
        )
