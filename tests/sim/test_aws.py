"""The emulated AWS: boto3 (sync, in threads) against our proxy in front of moto."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from noderescue.sim.audit import AuditLog
from noderescue.sim.aws import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, AwsCloud, parse_call
from noderescue.sim.faults import Faults, FaultSpec
from noderescue.sim.scenario import parse_scenario
from noderescue.sim.world import World
from tests.sim.recording_cluster import RecordingCluster

USER_AGENT_EXTRA = "noderescue/test"
# boto3.client's overloads want a literal service name; these tests pick services at run time.
make_client = cast("Any", boto3.client)

SCENARIO = {
    "name": "aws-test",
    "provider": "aws",
    "region": "eu-west-1",
    "groups": [
        {
            "name": "workers",
            "size": 6,
            "zones": ["a", "b", "c"],
            "labels": {"noderescue.io/class": "workers"},
            "joinSeconds": "5s",
            "bootSeconds": "2s",
        },
        {
            "name": "pets",
            "size": 2,
            "zones": ["a"],
            "labels": {"noderescue.io/class": "pets"},
            "repairable": True,
        },
    ],
}


@dataclass
class AwsRig:
    cloud: AwsCloud
    cluster: RecordingCluster
    audit: AuditLog
    faults: Faults

    def client(self, service: str, *, retries: bool = True) -> Any:
        config = Config(
            user_agent_extra=USER_AGENT_EXTRA,
            retries={"max_attempts": 1 if not retries else 3, "mode": "standard"},
        )
        return make_client(
            service,
            endpoint_url=self.cloud.endpoint,
            region_name="eu-west-1",
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
            config=config,
        )

    def instances(self, group: str) -> dict[str, str]:
        reply = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        return {i["InstanceId"]: i["AvailabilityZone"] for i in reply["AutoScalingGroups"][0]["Instances"]}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[AwsRig]:
    cluster = RecordingCluster()
    audit = AuditLog(tmp_path / "audit.jsonl")
    faults = Faults(seed=7)
    cloud = AwsCloud(parse_scenario(SCENARIO), cluster, audit=audit, throttle=faults)
    await cloud.start()
    try:
        await cloud.create_groups()
        yield AwsRig(cloud, cluster, audit, faults)
    finally:
        await cloud.stop()
        audit.close()


async def test_groups_exist_and_match_the_nodes(rig: AwsRig) -> None:
    workers = await asyncio.to_thread(rig.instances, "workers")
    pets = await asyncio.to_thread(rig.instances, "pets")
    assert len(workers) == 6 and len(pets) == 2
    expected = {}
    for instance_id, zone in {**workers, **pets}.items():
        name = rig.cloud.node_of_instance(instance_id)
        assert name is not None
        expected[name] = f"aws:///{zone}/{instance_id}"
    assert {n: a.provider_id for n, a in rig.cluster.added.items()} == expected
    # round-robin over the zones: workers-1 is in b, workers-5 in c
    zones = {name: rig.cluster.added[name].zone for name in expected}
    assert [zones[f"workers-{i}"] for i in range(6)] == ["eu-west-1a", "eu-west-1b", "eu-west-1c"] * 2
    assert rig.cluster.added["workers-1"].labels["topology.kubernetes.io/zone"] == "eu-west-1b"
    assert rig.cluster.added["workers-1"].labels["noderescue.io/class"] == "workers"
    assert all(a.join_after_s == 0.0 for a in rig.cluster.added.values())
    assert rig.cluster.repairable == {"pets-0", "pets-1"}


async def test_terminate_without_decrement_replaces_the_node(rig: AwsRig) -> None:
    victim = rig.cloud.instance_of_node("workers-2")
    assert victim is not None
    client = rig.client("autoscaling")
    await asyncio.to_thread(
        client.terminate_instance_in_auto_scaling_group,
        InstanceId=victim,
        ShouldDecrementDesiredCapacity=False,
    )
    assert rig.cluster.removed == ["workers-2"]
    new = rig.cluster.added["workers-6"]
    assert new.join_after_s == 5.0 and new.boot_seconds == 2.0
    instances = await asyncio.to_thread(rig.instances, "workers")
    assert victim not in instances and len(instances) == 6
    replacement = rig.cloud.instance_of_node("workers-6")
    assert replacement in instances
    assert new.provider_id == f"aws:///{instances[replacement]}/{replacement}"
    assert new.zone == "eu-west-1c"  # where workers-2 was: the group stays balanced
    reply = await asyncio.to_thread(client.describe_auto_scaling_groups, AutoScalingGroupNames=["workers"])
    assert sorted(reply["AutoScalingGroups"][0]["AvailabilityZones"]) == [
        "eu-west-1a",
        "eu-west-1b",
        "eu-west-1c",
    ]


async def test_terminate_with_decrement_removes_without_replacement(rig: AwsRig) -> None:
    victim = rig.cloud.instance_of_node("workers-0")
    client = rig.client("autoscaling")
    await asyncio.to_thread(
        client.terminate_instance_in_auto_scaling_group,
        InstanceId=victim,
        ShouldDecrementDesiredCapacity=True,
    )
    assert rig.cluster.removed == ["workers-0"]
    assert "workers-6" not in rig.cluster.added


async def test_desired_capacity_increase_joins_new_nodes(rig: AwsRig) -> None:
    client = rig.client("autoscaling")
    await asyncio.to_thread(client.set_desired_capacity, AutoScalingGroupName="workers", DesiredCapacity=8)
    assert {"workers-6", "workers-7"} <= set(rig.cluster.added)
    assert rig.cluster.added["workers-7"].join_after_s == 5.0


async def test_reboot_instances_reboots_the_node(rig: AwsRig) -> None:
    ids = [rig.cloud.instance_of_node("workers-3"), rig.cloud.instance_of_node("pets-1")]
    await asyncio.to_thread(rig.client("ec2").reboot_instances, InstanceIds=ids)
    assert rig.cluster.reboots == ["workers-3", "pets-1"]


async def test_ec2_terminate_of_an_asg_instance_is_replaced_by_the_group(rig: AwsRig) -> None:
    victim = rig.cloud.instance_of_node("workers-4")
    await asyncio.to_thread(rig.client("ec2").terminate_instances, InstanceIds=[victim])
    assert rig.cluster.removed == ["workers-4"]
    assert rig.cluster.added["workers-6"].join_after_s == 5.0
    instances = await asyncio.to_thread(rig.instances, "workers")
    assert victim not in instances and len(instances) == 6


@pytest.mark.parametrize(
    ("call", "effect"),
    [
        pytest.param("stop_instances", "stopped_kubelets", id="stop"),
        pytest.param("start_instances", "reboots", id="start"),
    ],
)
async def test_ec2_stop_and_start(rig: AwsRig, call: str, effect: str) -> None:
    instance = rig.cloud.instance_of_node("workers-5")
    await asyncio.to_thread(getattr(rig.client("ec2"), call), InstanceIds=[instance])
    assert list(getattr(rig.cluster, effect)) == ["workers-5"]


async def test_send_command_of_another_document_repairs_nothing(rig: AwsRig) -> None:
    await asyncio.to_thread(
        rig.client("ssm").send_command,
        InstanceIds=[rig.cloud.instance_of_node("pets-0")],
        DocumentName="AWS-RunPowerShellScript",
        Parameters={"commands": ["Restart-Service kubelet"]},
    )
    assert rig.cluster.repairs == []


async def test_send_command_repairs_only_the_requested_instances(rig: AwsRig) -> None:
    ssm = rig.client("ssm")
    pet = rig.cloud.instance_of_node("pets-0")
    worker = rig.cloud.instance_of_node("workers-4")
    reply = await asyncio.to_thread(
        ssm.send_command,
        InstanceIds=[pet, worker, "i-0000000000unknown"],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["systemctl restart kubelet"]},
    )
    assert rig.cluster.repairs == ["pets-0", "workers-4"]  # not every instance, not the unknown id
    assert reply["Command"]["InstanceIds"] == [pet, worker, "i-0000000000unknown"]
    command_id = reply["Command"]["CommandId"]
    healed = await asyncio.to_thread(ssm.get_command_invocation, CommandId=command_id, InstanceId=pet)
    unhealed = await asyncio.to_thread(ssm.get_command_invocation, CommandId=command_id, InstanceId=worker)
    assert healed["Status"] == unhealed["Status"] == "Success"
    assert "pets-0 repaired" in healed["StandardOutputContent"]
    assert "workers-4 still unhealthy" in unhealed["StandardOutputContent"]


@pytest.mark.parametrize(
    ("service", "call", "code", "status"),
    [
        pytest.param("autoscaling", "describe_auto_scaling_groups", "Throttling", 400, id="autoscaling"),
        pytest.param("ec2", "describe_instances", "RequestLimitExceeded", 503, id="ec2"),
        pytest.param("ssm", "list_commands", "ThrottlingException", 400, id="ssm"),
    ],
)
async def test_throttling_fault(rig: AwsRig, service: str, call: str, code: str, status: int) -> None:
    rig.faults.cloud_throttle_rate = 1.0
    client = rig.client(service, retries=False)
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(getattr(client, call))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    rig.faults.cloud_throttle_rate = 0.0
    await asyncio.to_thread(getattr(client, call))


async def test_throttled_mutating_call_is_audited_and_has_no_effect(rig: AwsRig) -> None:
    rig.faults.cloud_throttle_rate = 1.0
    victim = rig.cloud.instance_of_node("workers-1")
    client = rig.client("autoscaling", retries=False)
    with pytest.raises(ClientError):
        await asyncio.to_thread(
            client.terminate_instance_in_auto_scaling_group,
            InstanceId=victim,
            ShouldDecrementDesiredCapacity=False,
        )
    assert rig.cluster.removed == []
    assert rig.audit.lines[-1]["code"] == 400 and rig.audit.lines[-1]["name"] == victim


async def test_every_mutating_call_is_audited_with_the_user_agent(rig: AwsRig, tmp_path: Path) -> None:
    worker = rig.cloud.instance_of_node("workers-0")
    pet = rig.cloud.instance_of_node("pets-0")
    asg, ec2, ssm = rig.client("autoscaling"), rig.client("ec2"), rig.client("ssm")
    await asyncio.to_thread(ec2.describe_instances)  # reads are not audited
    await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    await asyncio.to_thread(
        ssm.send_command,
        InstanceIds=[pet],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["true"]},
    )
    await asyncio.to_thread(
        asg.terminate_instance_in_auto_scaling_group, InstanceId=worker, ShouldDecrementDesiredCapacity=False
    )
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["api"], x["verb"], x["resource"], x["name"], x["code"]) for x in lines] == [
        ("aws", "RebootInstances", "ec2", pet, 200),
        ("aws", "SendCommand", "ssm", pet, 200),
        ("aws", "TerminateInstanceInAutoScalingGroup", "autoscaling", worker, 200),
    ]
    assert all(USER_AGENT_EXTRA in x["userAgent"] and "Boto3/" in x["userAgent"] for x in lines)


@pytest.mark.parametrize(
    ("headers", "body", "service", "action", "ids"),
    [
        pytest.param(
            {"Authorization": "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-1/autoscaling/aws4_request"},
            b"Action=TerminateInstanceInAutoScalingGroup&Version=2011-01-01&InstanceId=i-1"
            b"&ShouldDecrementDesiredCapacity=false",
            "autoscaling",
            "TerminateInstanceInAutoScalingGroup",
            ("i-1",),
            id="autoscaling-terminate",
        ),
        pytest.param(
            {},
            b"Action=RebootInstances&Version=2016-11-15&InstanceId.2=i-b&InstanceId.1=i-a",
            "ec2",
            "RebootInstances",
            ("i-a", "i-b"),
            id="ec2-reboot-unsigned",
        ),
        pytest.param(
            {"X-Amz-Target": "AmazonSSM.SendCommand"},
            b'{"InstanceIds": ["i-9"], "DocumentName": "AWS-RunShellScript"}',
            "ssm",
            "SendCommand",
            ("i-9",),
            id="ssm-json",
        ),
        pytest.param(
            {},
            b"Action=AttachInstances&Version=2011-01-01&InstanceIds.member.1=i-1&InstanceIds.member.10=i-10"
            b"&InstanceIds.member.2=i-2",
            "autoscaling",
            "AttachInstances",
            ("i-1", "i-2", "i-10"),
            id="member-list-order",
        ),
    ],
)
def test_parse_call(
    headers: dict[str, str], body: bytes, service: str, action: str, ids: tuple[str, ...]
) -> None:
    call = parse_call(headers, body, "")
    assert (call.service, call.action, call.instance_ids) == (service, action, ids)


# ------------------------------------------------------------------------------------------------
# End to end: the same calls through a World, with the real emulated cluster
# ------------------------------------------------------------------------------------------------

SCALE = 5.0  # emulated seconds per real second
WORLD_SCENARIO = {
    "name": "aws-world",
    "provider": "aws",
    "region": "eu-west-1",
    "groups": [
        {"name": "workers", "size": 3, "zones": ["a", "b", "c"], "joinSeconds": "5s", "bootSeconds": "2s"},
    ],
    "workloads": [{"name": "web", "replicas": 3}],
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World.start(parse_scenario(WORLD_SCENARIO), out_dir=tmp_path, time_scale=SCALE) as started:
        yield started


def world_client(world: World, service: str) -> Any:
    env = world.env()
    return make_client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(user_agent_extra=USER_AGENT_EXTRA),
    )


def ready(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def boot_id(node: dict[str, Any] | None) -> str:
    assert node is not None
    return str(node["status"]["nodeInfo"]["bootID"])


async def eventually(predicate: Callable[[], bool], *, within_s: float, what: str) -> float:
    """Wait until predicate holds; the real seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s:.1f}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_world_terminate_yields_a_new_ready_node_within_join_seconds(world: World) -> None:
    assert world.aws is not None
    assert all(ready(world.cluster.get_node(f"workers-{i}")) for i in range(3))
    victim = world.aws.instance_of_node("workers-1")
    join_s = 5.0 / SCALE
    client = world_client(world, "autoscaling")
    started = time.monotonic()
    await asyncio.to_thread(
        client.terminate_instance_in_auto_scaling_group,
        InstanceId=victim,
        ShouldDecrementDesiredCapacity=False,
    )
    await eventually(
        lambda: ready(world.cluster.get_node("workers-3")), within_s=join_s + 1.0, what="workers-3 Ready"
    )
    assert time.monotonic() - started >= join_s * 0.9  # it joined after joinSeconds, not at once
    replacement = world.aws.instance_of_node("workers-3")
    node = world.cluster.get_node("workers-3")
    assert node is not None and node["spec"]["providerID"].endswith(f"/{replacement}")
    # the terminated instance's Node goes away (NotReady, then deleted by the node controller)
    await eventually(
        lambda: world.cluster.get_node("workers-1") is None, within_s=3.0, what="workers-1 deleted"
    )


async def test_world_reboot_changes_the_boot_id(world: World) -> None:
    assert world.aws is not None
    before = boot_id(world.cluster.get_node("workers-2"))
    client = world_client(world, "ec2")
    await asyncio.to_thread(client.reboot_instances, InstanceIds=[world.aws.instance_of_node("workers-2")])
    assert not ready(world.cluster.get_node("workers-2"))  # down while it boots
    await eventually(
        lambda: (
            ready(world.cluster.get_node("workers-2"))
            and boot_id(world.cluster.get_node("workers-2")) != before
        ),
        within_s=2.0 / SCALE + 1.0,
        what="workers-2 back with a new bootID",
    )


def conditions(node: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    assert node is not None
    return [(c["type"], c["status"], c.get("lastTransitionTime", "")) for c in node["status"]["conditions"]]


async def test_world_send_command_heals_a_repairable_node_only(world: World) -> None:
    assert world.aws is not None
    world.cluster.set_condition("workers-0", "KernelDeadlock", "True", "DockerHung")
    world.cluster.set_repairable("workers-0")
    healthy_before = conditions(world.cluster.get_node("workers-2"))
    healthy_boot = boot_id(world.cluster.get_node("workers-2"))
    ids = [world.aws.instance_of_node("workers-0"), world.aws.instance_of_node("workers-2")]
    client = world_client(world, "ssm")
    await asyncio.to_thread(
        client.send_command,
        InstanceIds=ids,
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["systemctl restart containerd kubelet"]},
    )
    deadlock = [c for c in conditions(world.cluster.get_node("workers-0")) if c[0] == "KernelDeadlock"]
    assert deadlock and deadlock[0][1] == "False"
    assert conditions(world.cluster.get_node("workers-2")) == healthy_before
    assert boot_id(world.cluster.get_node("workers-2")) == healthy_boot


async def test_concurrent_terminates_never_bring_an_instance_back(rig: AwsRig) -> None:
    victims = [rig.cloud.instance_of_node(f"workers-{i}") for i in range(3)]
    client = rig.client("autoscaling")
    await asyncio.gather(
        *(
            asyncio.to_thread(
                client.terminate_instance_in_auto_scaling_group,
                InstanceId=v,
                ShouldDecrementDesiredCapacity=False,
            )
            for v in victims
        )
    )
    assert sorted(rig.cluster.removed) == ["workers-0", "workers-1", "workers-2"]
    assert sorted(n for n in rig.cluster.added if n not in rig.cluster.removed) == [
        "pets-0", "pets-1", "workers-3", "workers-4", "workers-5", "workers-6", "workers-7", "workers-8",
    ]  # fmt: skip
    instances = await asyncio.to_thread(rig.instances, "workers")
    assert sorted(instances) == sorted(str(rig.cloud.instance_of_node(f"workers-{i}")) for i in range(3, 9))
    assert sorted(instances.values()) == [
        "eu-west-1a",
        "eu-west-1a",
        "eu-west-1b",
        "eu-west-1b",
        "eu-west-1c",
        "eu-west-1c",
    ]


# ------------------------------------------------------------------------------------------------
# The built-in AWS scenarios do what they say
# ------------------------------------------------------------------------------------------------

FAST = 50.0  # kubelet stop at 3 s + 40 s node-monitor grace = 0.86 s real
ZONE = "topology.kubernetes.io/zone"


def zone_of(world: World, node: str) -> str:
    obj = world.cluster.get_node(node)
    assert obj is not None
    return str(obj["metadata"]["labels"][ZONE])


def condition(world: World, node: str, type_: str) -> str | None:
    obj = world.cluster.get_node(node)
    if obj is None:
        return None
    return next((c["status"] for c in obj["status"]["conditions"] if c["type"] == type_), None)


async def test_zone_outage_scenario_stops_every_kubelet_of_zone_b(tmp_path: Path) -> None:
    async with World.start("zone-outage", out_dir=tmp_path, time_scale=FAST) as world:
        in_b = [n for n in world.cluster.node_names() if zone_of(world, n) == "eu-west-1b"]
        assert in_b == ["workers-1", "workers-4", "workers-7"]
        await eventually(
            lambda: all(condition(world, n, "Ready") == "Unknown" for n in in_b),
            within_s=3.0,
            what="zone b Unknown",
        )
        others = [n for n in world.cluster.node_names() if n not in in_b]
        assert all(condition(world, n, "Ready") == "True" for n in others)


async def test_pets_reboot_scenario_needs_a_reboot_not_a_repair(tmp_path: Path) -> None:
    async with World.start("pets-reboot", out_dir=tmp_path, time_scale=FAST) as world:
        await eventually(
            lambda: condition(world, "gpu-0", "Ready") == "Unknown", within_s=3.0, what="gpu-0 Unknown"
        )
        instance = world.instance_of_node("gpu-0")
        ssm, ec2 = world_client(world, "ssm"), world_client(world, "ec2")
        reply = await asyncio.to_thread(
            ssm.send_command,
            InstanceIds=[instance],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["systemctl restart kubelet"]},
        )
        invocation = await asyncio.to_thread(
            ssm.get_command_invocation, CommandId=reply["Command"]["CommandId"], InstanceId=instance
        )
        assert invocation["Status"] == "Success" and "still unhealthy" in invocation["StandardOutputContent"]
        assert condition(world, "gpu-0", "Ready") == "Unknown"
        before = boot_id(world.cluster.get_node("gpu-0"))
        await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[instance])
        await eventually(
            lambda: (
                condition(world, "gpu-0", "Ready") == "True"
                and boot_id(world.cluster.get_node("gpu-0")) != before
            ),
            within_s=2.0,
            what="gpu-0 rebooted and Ready",
        )


async def test_demo_scenario_pet_is_repairable_and_worker_gets_a_deadlock(tmp_path: Path) -> None:
    async with World.start("demo", out_dir=tmp_path, time_scale=FAST) as world:
        await eventually(
            lambda: (
                condition(world, "pets-0", "Ready") == "Unknown"
                and condition(world, "workers-1", "KernelDeadlock") == "True"
            ),
            within_s=3.0,
            what="pets-0 Unknown and workers-1 KernelDeadlock",
        )
        ssm = world_client(world, "ssm")
        await asyncio.to_thread(
            ssm.send_command,
            InstanceIds=[world.instance_of_node("pets-0")],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["systemctl restart kubelet"]},
        )
        assert condition(world, "pets-0", "Ready") == "True"


async def test_two_clouds_in_one_process_keep_their_groups_apart(rig: AwsRig) -> None:
    other_cluster = RecordingCluster()
    other = AwsCloud(parse_scenario(SCENARIO), other_cluster)
    await other.start()
    try:
        await other.create_groups()
        mine = await asyncio.to_thread(rig.instances, "workers")
        theirs = await asyncio.to_thread(
            lambda: {
                i["InstanceId"]
                for i in make_client(
                    "autoscaling",
                    endpoint_url=other.endpoint,
                    region_name="eu-west-1",
                    aws_access_key_id=FAKE_ACCESS_KEY_ID,
                    aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
                ).describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])["AutoScalingGroups"][0][
                    "Instances"
                ]
            }
        )
        assert len(mine) == len(theirs) == 6 and not set(mine) & theirs
        victim = other.instance_of_node("workers-0")
        await asyncio.to_thread(
            rig.client("autoscaling").terminate_instance_in_auto_scaling_group,
            InstanceId=rig.cloud.instance_of_node("workers-0"),
            ShouldDecrementDesiredCapacity=False,
        )
        assert rig.cluster.removed == ["workers-0"] and other_cluster.removed == []
        assert other.instance_of_node("workers-0") == victim
    finally:
        await other.stop()


# ---- targeted faults (FaultSpec) ----------------------------------------------------------------


def fault(**raw: Any) -> FaultSpec:
    return FaultSpec.model_validate({"api": "aws", **raw})


def quick_client(rig: AwsRig, service: str) -> Any:
    """One attempt, and a read timeout short enough for a held answer to end the call fast."""
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=1, connect_timeout=1)
    return make_client(
        service,
        endpoint_url=rig.cloud.endpoint,
        region_name="eu-west-1",
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        config=config,
    )


def reboot_lines(rig: AwsRig) -> list[int]:
    return [line["code"] for line in rig.audit.lines if line["verb"] == "RebootInstances"]


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        pytest.param(500, ClientError, id="500"),
        pytest.param(503, ClientError, id="503"),
        pytest.param("timeout", ReadTimeoutError, id="timeout"),
        pytest.param("reset", ConnectionClosedError, id="reset"),
    ],
)
async def test_fault_after_applying_makes_the_call_and_fails_its_answer(
    rig: AwsRig, error: object, raised: type[Exception]
) -> None:
    pet = rig.cloud.instance_of_node("pets-0")
    rig.faults.add_fault(fault(call="RebootInstances", mode="after", error=error))
    ec2 = quick_client(rig, "ec2")
    started = time.monotonic()
    with pytest.raises(raised) as caught:
        await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    assert time.monotonic() - started < 5  # a held answer ends with the client's read timeout
    if isinstance(caught.value, ClientError):
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == error
    assert rig.cluster.reboots == ["pets-0"]  # applied
    assert reboot_lines(rig) == [200]  # audited with moto's real answer
    # count defaults to 1: the next call is served normally
    await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    assert rig.cluster.reboots == ["pets-0", "pets-0"] and reboot_lines(rig) == [200, 200]


@pytest.mark.parametrize(
    ("error", "code", "audited"),
    [
        pytest.param(500, "InternalError", 500, id="500"),
        pytest.param(503, "Unavailable", 503, id="503"),
        pytest.param(429, "RequestLimitExceeded", 503, id="429-is-ec2-throttling"),
        pytest.param("timeout", None, 499, id="timeout"),
        pytest.param("reset", None, 444, id="reset"),
    ],
)
async def test_fault_before_applying_fails_without_effect(
    rig: AwsRig, error: object, code: str | None, audited: int
) -> None:
    pet = rig.cloud.instance_of_node("pets-0")
    rig.faults.add_fault(fault(call="RebootInstances", mode="before", error=error))
    ec2 = quick_client(rig, "ec2")
    with pytest.raises((ClientError, ReadTimeoutError, ConnectionClosedError)) as caught:
        await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    if code is not None:
        assert isinstance(caught.value, ClientError)
        assert caught.value.response["Error"]["Code"] == code
    assert rig.cluster.reboots == []
    assert reboot_lines(rig) == [audited]


async def test_fault_targets_its_instance_or_node_and_counts_down(rig: AwsRig) -> None:
    pet0, pet1 = rig.cloud.instance_of_node("pets-0"), rig.cloud.instance_of_node("pets-1")
    rig.faults.add_fault(fault(call="RebootInstances", node="pets-1", error=500, count=2))
    rig.faults.add_fault(fault(call="SendCommand", instance=pet0, error=500))
    ec2 = quick_client(rig, "ec2")
    await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet0])  # not the fault's node
    for _ in range(2):
        with pytest.raises(ClientError):
            await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet1])
    await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet1])  # used up
    assert rig.cluster.reboots == ["pets-0", "pets-1"]
    assert [f.spec.call for f in rig.faults.targeted()] == ["SendCommand"]


async def test_rate_fault_ends_after_its_duration(rig: AwsRig) -> None:
    pet = rig.cloud.instance_of_node("pets-0")
    rig.faults.add_fault(fault(call="RebootInstances", error=503, rate=1.0, **{"for": "300ms"}))
    ec2 = quick_client(rig, "ec2")
    for _ in range(3):
        with pytest.raises(ClientError):
            await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    await asyncio.sleep(0.35)
    await asyncio.to_thread(ec2.reboot_instances, InstanceIds=[pet])
    assert rig.cluster.reboots == ["pets-0"] and rig.faults.targeted() == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"call": "RebootInstances", "error": 500, "count": 1, "rate": 0.5}, "not both"),
        ({"call": "reboot_instances", "error": 500}, "API action name"),
        ({"call": "RebootInstances", "error": 404}, "error"),
        ({"call": "RebootInstances", "error": 500, "retryAfter": 2}, "retryAfter"),
        ({"call": "RebootInstances", "error": 500, "mode": "during"}, "mode"),
    ],
)
def test_fault_schema_refuses_what_it_cannot_do(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fault(**raw)
