"""Targeted faults reach the emulated clouds from scenario events and from ``POST /_sim/faults``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from noderescue.sim.aws import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from noderescue.sim.faults import Faults, FaultSpec
from noderescue.sim.scenario import EventRunner, ScenarioError, parse_scenario
from noderescue.sim.world import World
from tests.sim.recording_cluster import RecordingCluster

REBOOT_RESET = {"api": "aws", "call": "RebootInstances", "mode": "after", "error": "reset", "count": 1}


async def test_fault_event_arms_the_fault_with_its_duration_scaled() -> None:
    scenario = parse_scenario(
        {
            "name": "faulty",
            "provider": "none",
            "groups": [{"name": "n", "size": 1}],
            "events": [
                {"at": "1s", "fault": {**REBOOT_RESET, "count": None, "rate": 1.0, "for": "4s"}},
                {"at": "1s", "fault": {"api": "azure", "call": "reimage", "error": 503, "count": 2}},
            ],
        }
    )
    faults = Faults(seed=1)
    scale = 20.0
    runner = EventRunner(scenario, RecordingCluster(), faults, time_scale=scale)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(2 / scale)
    armed = faults.targeted()
    assert [(f.spec.call, f.remaining) for f in armed] == [("RebootInstances", None), ("reimage", 2)]
    assert armed[0].until is not None and armed[1].until is None
    assert faults.take_fault("aws", "RebootInstances") is not None
    await asyncio.sleep(4 / scale)  # 4 emulated seconds: the reboot fault is over
    assert faults.take_fault("aws", "RebootInstances") is None
    assert [f.spec.call for f in faults.targeted()] == ["reimage"]
    await task


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"at": 0, "fault": REBOOT_RESET, "for": "1s"}, "inside its fault"),
        ({"at": 0, "fault": {**REBOOT_RESET, "api": "gcp"}}, "api"),
        ({"at": 0, "fault": REBOOT_RESET, "nodes": ["n-0"]}, "whole cluster"),
    ],
)
def test_fault_events_are_validated(event: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(
            {"name": "x", "provider": "none", "groups": [{"name": "n", "size": 1}], "events": [event]}
        )


async def test_scenario_event_and_admin_endpoint_reach_the_aws_proxy(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "reboot-reset",
            "provider": "aws",
            "groups": [{"name": "pets", "size": 1, "zones": ["a"], "pet": True}],
            "events": [{"at": "0s", "fault": REBOOT_RESET}],
        }
    )
    async with World.start(scenario, out_dir=tmp_path, run_events=False) as world:
        assert world.aws is not None and world.events is not None
        await world.events.run()
        instance = world.aws.instance_of_node("pets-0")
        ec2: Any = boto3.client(
            "ec2",
            endpoint_url=world.aws.endpoint,
            region_name=scenario.region,
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=2),
        )
        with pytest.raises(ConnectionClosedError):
            await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[instance])
        async with aiohttp.ClientSession() as session:
            url = f"{world.cluster.url}/_sim/faults"
            fault = {"api": "aws", "call": "RebootInstances", "error": 500, "count": 3}
            async with session.post(url, json={"fault": fault}) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["faults"] == [{**fault, "id": body["armed"][0], "mode": "before", "remaining": 3}]
            async with session.post(url, json={"fault": {**fault, "error": 418}}) as resp:
                assert resp.status == 400  # refused as a whole: nothing armed
            async with session.get(url) as resp:
                assert len((await resp.json())["faults"]) == 1
            async with session.post(url, json={"remove_fault": body["armed"][0]}) as resp:
                assert (await resp.json())["faults"] == []
        await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[instance])
        codes = [line["code"] for line in world.audit.lines if line["verb"] == "RebootInstances"]
        assert codes == [200, 200]  # the reset one was applied, then the clean one


def test_a_fault_counts_once_per_match() -> None:
    faults = Faults()
    faults.add_fault(FaultSpec.model_validate({**REBOOT_RESET, "count": 2, "instance": "i-1"}))
    assert faults.take_fault("aws", "RebootInstances", instances=["i-2"]) is None
    assert faults.take_fault("aws", "TerminateInstances", instances=["i-1"]) is None
    assert faults.take_fault("azure", "RebootInstances", instances=["i-1"]) is None
    assert faults.take_fault("aws", "RebootInstances", instances=["i-1"]) is not None
    assert faults.take_fault("aws", "RebootInstances", instances=["i-1"]) is not None
    assert faults.take_fault("aws", "RebootInstances", instances=["i-1"]) is None
