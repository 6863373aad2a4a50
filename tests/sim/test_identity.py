"""The emulated clouds name their machines as a real cloud names the machine behind a Node: the
private DNS name (AWS) or computer name (Azure) gives the Node's name, and the machine was
launched before its Node registered. The identity guard binds instance and Node by both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest

from noderescue.adapters.kube.nodeview import parse_time
from noderescue.sim.aws import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from noderescue.sim.world import World

make_client = cast("Any", boto3.client)


@pytest.fixture
async def aws_world(tmp_path: Path) -> AsyncIterator[World]:
    async with World.start("pets-reboot", out_dir=tmp_path, run_events=False) as w:
        yield w


def _describe(world: World) -> list[dict[str, Any]]:
    assert world.aws is not None
    ec2 = make_client(
        "ec2",
        endpoint_url=world.aws.endpoint,
        region_name=world.aws.region,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )
    reply = ec2.describe_instances()
    return [i for r in reply["Reservations"] for i in r["Instances"]]


async def test_aws_instances_report_their_nodes_name_and_an_earlier_launch(aws_world: World) -> None:
    instances = await asyncio.to_thread(_describe, aws_world)
    assert aws_world.aws is not None
    checked = 0
    for instance in instances:
        node_name = aws_world.aws.node_of_instance(instance["InstanceId"])
        if node_name is None:
            continue
        node = aws_world.cluster.get_node(node_name)
        assert node is not None
        assert instance["PrivateDnsName"] == f"{node_name}.{aws_world.aws.region}.compute.internal"
        created = parse_time(node["metadata"]["creationTimestamp"])
        assert created is not None
        assert instance["LaunchTime"].timestamp() <= created + 1  # creationTimestamp has whole seconds
        checked += 1
    assert checked == len(aws_world.cluster.node_names()) > 0
