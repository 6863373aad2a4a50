"""The ARM emulator through the real azure-mgmt-compute .aio client, over HTTPS with our CA."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.compute.aio import ComputeManagementClient

from noderescue.sim.audit import AuditLog
from noderescue.sim.azure import RESOURCE_GROUP, SUBSCRIPTION_ID, AzureCloud
from noderescue.sim.faults import Faults, FaultSpec
from noderescue.sim.scenario import parse_scenario
from noderescue.sim.world import World
from tests.sim.recording_cluster import RecordingCluster

USER_AGENT = "noderescue/test"
LRO_BUDGET_S = 5.0

SCENARIO = {
    "name": "azure-test",
    "provider": "azure",
    "region": "westeurope",
    "groups": [
        {
            "name": "workers",
            "size": 5,
            "zones": ["1", "2"],
            "labels": {"noderescue.io/class": "workers"},
            "joinSeconds": "4s",
            "instanceType": "Standard_D4s_v5",
        },
    ],
}


class FakeCredential:
    """An AsyncTokenCredential: the emulator accepts any bearer token."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://management.azure.com/.default",)
        return AccessToken("fake", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@dataclass
class AzureRig:
    cloud: AzureCloud
    cluster: RecordingCluster
    audit: AuditLog
    faults: Faults
    client: Any  # the SDK's models are all-Optional; the tests check the values instead


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AzureRig]:
    monkeypatch.setattr(AzureCloud, "page_size", 2)  # 5 VMs: three pages, two nextLinks
    cluster = RecordingCluster()
    audit = AuditLog(tmp_path / "audit.jsonl")
    faults = Faults(seed=3)
    cloud = AzureCloud(
        parse_scenario(SCENARIO), cluster, ca_bundle=tmp_path / "ca.pem", audit=audit, throttle=faults
    )
    await cloud.start()
    client: Any = ComputeManagementClient(
        FakeCredential(),
        SUBSCRIPTION_ID,
        base_url=cloud.endpoint,
        connection_verify=str(cloud.ca_bundle),
        user_agent=USER_AGENT,
    )
    try:
        await cloud.create_groups()
        yield AzureRig(cloud, cluster, audit, faults, client)
    finally:
        await client.close()
        await cloud.stop()
        audit.close()


def provider_id(instance_id: str) -> str:
    return (
        f"azure:///subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/workers/virtualMachines/{instance_id}"
    )


async def test_list_vms_pages_and_matches_the_nodes(rig: AzureRig) -> None:
    vms = [vm async for vm in rig.client.virtual_machine_scale_set_vms.list(RESOURCE_GROUP, "workers")]
    assert [vm.instance_id for vm in vms] == ["0", "1", "2", "3", "4"]
    assert [vm.properties.os_profile.computer_name for vm in vms] == [f"workers-{i}" for i in range(5)]
    assert {n: a.provider_id for n, a in rig.cluster.added.items()} == {
        f"workers-{i}": provider_id(str(i)) for i in range(5)
    }
    assert [rig.cluster.added[f"workers-{i}"].zone for i in range(5)] == [
        "westeurope-1",
        "westeurope-2",
        "westeurope-1",
        "westeurope-2",
        "westeurope-1",
    ]
    assert [vm.zones for vm in vms] == [["1"], ["2"], ["1"], ["2"], ["1"]]


async def test_get_and_instance_view(rig: AzureRig) -> None:
    vm = await rig.client.virtual_machine_scale_set_vms.get(
        RESOURCE_GROUP, "workers", "3", expand="instanceView"
    )
    assert vm.instance_id == "3" and vm.properties.hardware_profile.vm_size == "Standard_D4s_v5"
    assert vm.properties.instance_view is not None
    view = await rig.client.virtual_machine_scale_set_vms.get_instance_view(RESOURCE_GROUP, "workers", "3")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    scale_set = await rig.client.virtual_machine_scale_sets.get(RESOURCE_GROUP, "workers")
    assert scale_set.sku.capacity == 5
    with pytest.raises(ResourceNotFoundError):
        await rig.client.virtual_machine_scale_set_vms.get(RESOURCE_GROUP, "workers", "99")


async def test_restart_reboots_the_node_through_lro_polling(rig: AzureRig) -> None:
    started = time.monotonic()
    poller = await rig.client.virtual_machine_scale_set_vms.begin_restart(RESOURCE_GROUP, "workers", "1")
    await poller.result()
    assert time.monotonic() - started < LRO_BUDGET_S
    assert poller.status() == "Succeeded"
    assert rig.cluster.reboots == ["workers-1"]


async def test_reimage_clears_npd_conditions_and_reboots(rig: AzureRig) -> None:
    rig.cluster.set_condition("workers-2", "ReadonlyFilesystem", "True")
    started = time.monotonic()
    poller = await rig.client.virtual_machine_scale_set_vms.begin_reimage(RESOURCE_GROUP, "workers", "2")
    await poller.result()
    assert time.monotonic() - started < LRO_BUDGET_S
    assert rig.cluster.reboots == ["workers-2"]
    assert rig.cluster.conditions["workers-2"]["ReadonlyFilesystem"] == "False"


@pytest.mark.parametrize(
    ("node", "repairable", "outcome"),
    [
        pytest.param("workers-0", True, "workers-0 repaired", id="repairable"),
        pytest.param("workers-4", False, "workers-4 still unhealthy", id="not-repairable"),
    ],
)
async def test_run_command_output_is_visible(
    rig: AzureRig, node: str, repairable: bool, outcome: str
) -> None:
    rig.cluster.set_repairable(node, repairable)
    started = time.monotonic()
    poller = await rig.client.virtual_machine_scale_set_vms.begin_run_command(
        RESOURCE_GROUP,
        "workers",
        node.rpartition("-")[2],
        {"commandId": "RunShellScript", "script": ["systemctl restart kubelet"]},
    )
    result = await poller.result()
    assert time.monotonic() - started < LRO_BUDGET_S
    assert rig.cluster.repairs == [node]
    assert result.value[0].code == "ProvisioningState/succeeded"
    assert outcome in result.value[0].message


async def test_delete_instances_removes_nodes_and_capacity(rig: AzureRig) -> None:
    started = time.monotonic()
    # The keyword is vm_instance_i_ds (FACTS.md): pass it positionally.
    poller = await rig.client.virtual_machine_scale_sets.begin_delete_instances(
        RESOURCE_GROUP, "workers", {"instanceIds": ["1", "3"]}
    )
    await poller.result()
    assert time.monotonic() - started < LRO_BUDGET_S
    assert rig.cluster.removed == ["workers-1", "workers-3"]
    scale_set = await rig.client.virtual_machine_scale_sets.get(RESOURCE_GROUP, "workers")
    assert scale_set.sku.capacity == 3


async def test_delete_then_capacity_restore_joins_new_nodes(rig: AzureRig) -> None:
    poller = await rig.client.virtual_machine_scale_set_vms.begin_delete(RESOURCE_GROUP, "workers", "1")
    await poller.result()
    assert rig.cluster.removed == ["workers-1"]
    poller = await rig.client.virtual_machine_scale_sets.begin_update(
        RESOURCE_GROUP, "workers", {"sku": {"capacity": 6}}
    )
    scale_set = await poller.result()
    assert scale_set.sku.capacity == 6
    # instance ids are never reused: 5 and 6 are new, each joins after joinSeconds
    assert [(n, a.join_after_s) for n, a in rig.cluster.added.items() if n in ("workers-5", "workers-6")] == [
        ("workers-5", 4.0),
        ("workers-6", 4.0),
    ]
    # the emptiest zone is filled first: zone 2 had 1 VM left, zone 1 had 3
    assert [rig.cluster.added[n].zone for n in ("workers-5", "workers-6")] == ["westeurope-2", "westeurope-2"]


async def test_throttling_answers_429_with_retry_after(rig: AzureRig) -> None:
    rig.faults.cloud_throttle_rate = 1.0
    rig.faults.retry_after_s = 7
    no_retry: Any = ComputeManagementClient(
        FakeCredential(),
        SUBSCRIPTION_ID,
        base_url=rig.cloud.endpoint,
        connection_verify=str(rig.cloud.ca_bundle),
        retry_total=0,
    )
    async with no_retry:
        with pytest.raises(HttpResponseError) as caught:
            await no_retry.virtual_machine_scale_set_vms.begin_restart(RESOURCE_GROUP, "workers", "0")
        with pytest.raises(HttpResponseError):
            await no_retry.virtual_machine_scale_sets.begin_delete_instances(
                RESOURCE_GROUP, "workers", {"instanceIds": ["3"]}
            )
    assert caught.value.status_code == 429
    response: Any = caught.value.response
    assert response is not None and response.headers["Retry-After"] == "7"
    assert rig.cluster.reboots == []
    assert [(x["verb"], x["name"], x["code"]) for x in rig.audit.lines] == [
        ("restart", "workers/0", 429),
        ("deleteInstances", "workers/3", 429),
    ]
    assert rig.cluster.removed == []


async def test_sdk_retries_a_throttled_post_after_retry_after(rig: AzureRig) -> None:
    rig.faults.retry_after_s = 1
    draws = iter([True, False])
    rig.faults.draw_cloud_throttle = lambda: next(draws, False)  # type: ignore[method-assign]
    started = time.monotonic()
    poller = await rig.client.virtual_machine_scale_set_vms.begin_restart(RESOURCE_GROUP, "workers", "0")
    await poller.result()
    assert time.monotonic() - started >= 1.0  # waited for Retry-After
    assert rig.cluster.reboots == ["workers-0"]
    assert [(x["verb"], x["code"]) for x in rig.audit.lines] == [("restart", 429), ("restart", 202)]


@pytest.mark.slow
async def test_mutating_calls_are_audited_with_the_user_agent(rig: AzureRig, tmp_path: Path) -> None:
    ops = rig.client.virtual_machine_scale_set_vms
    await (await ops.begin_restart(RESOURCE_GROUP, "workers", "0")).result()
    await (await ops.begin_reimage(RESOURCE_GROUP, "workers", "1")).result()
    command = {"commandId": "RunShellScript", "script": ["true"]}
    await (await ops.begin_run_command(RESOURCE_GROUP, "workers", "2", command)).result()
    await (await ops.begin_delete(RESOURCE_GROUP, "workers", "3")).result()
    sets = rig.client.virtual_machine_scale_sets
    await (await sets.begin_delete_instances(RESOURCE_GROUP, "workers", {"instanceIds": ["4"]})).result()
    await (await sets.begin_update(RESOURCE_GROUP, "workers", {"sku": {"capacity": 2}})).result()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["api"], x["verb"], x["name"], x["code"]) for x in lines] == [
        ("azure", "restart", "workers/0", 202),
        ("azure", "reimage", "workers/1", 202),
        ("azure", "runCommand", "workers/2", 202),
        ("azure", "delete", "workers/3", 202),
        ("azure", "deleteInstances", "workers/4", 202),
        ("azure", "update", "workers", 200),
    ]
    assert all(USER_AGENT in x["userAgent"] and "azsdk-python" in x["userAgent"] for x in lines)


# ------------------------------------------------------------------------------------------------
# End to end: the azure-workers scenario through a World, with the real emulated cluster
# ------------------------------------------------------------------------------------------------

SCALE = 5.0


def ready(node: dict[str, Any] | None) -> bool:
    return node is not None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
    )


async def eventually(predicate: Callable[[], bool], *, within_s: float, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s:.1f}s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[World, Any]]:
    async with World.start("azure-workers", out_dir=tmp_path, time_scale=SCALE, run_events=False) as started:
        env = started.env()
        client: Any = ComputeManagementClient(
            FakeCredential(),
            env["AZURE_SUBSCRIPTION_ID"],
            base_url=env["AZURE_ARM_ENDPOINT"],
            connection_verify=env["AZURE_CA_BUNDLE"],
            user_agent=USER_AGENT,
        )
        async with client:
            yield started, client


async def test_world_restart_changes_the_boot_id(world: tuple[World, Any]) -> None:
    sim, client = world
    group = sim.env()["AZURE_RESOURCE_GROUP"]
    node = sim.cluster.get_node("workers-1")
    assert node is not None
    before = node["status"]["nodeInfo"]["bootID"]
    assert node["spec"]["providerID"].endswith("/virtualMachineScaleSets/workers/virtualMachines/1")
    await (await client.virtual_machine_scale_set_vms.begin_restart(group, "workers", "1")).result()

    def rebooted() -> bool:
        current = sim.cluster.get_node("workers-1")
        return ready(current) and current is not None and current["status"]["nodeInfo"]["bootID"] != before

    await eventually(rebooted, within_s=3.0 / SCALE + 1.0, what="workers-1 back with a new bootID")


async def test_world_delete_and_restore_capacity_joins_a_ready_node(
    world: tuple[World, Any],
) -> None:
    sim, client = world
    group = sim.env()["AZURE_RESOURCE_GROUP"]
    sets = client.virtual_machine_scale_sets
    await (await sets.begin_delete_instances(group, "workers", {"instanceIds": ["2"]})).result()
    started = time.monotonic()
    await (await sets.begin_update(group, "workers", {"sku": {"capacity": 4}})).result()
    await eventually(
        lambda: ready(sim.cluster.get_node("workers-4")), within_s=5.0 / SCALE + 1.0, what="workers-4"
    )
    assert time.monotonic() - started >= 5.0 / SCALE * 0.9
    await eventually(
        lambda: sim.cluster.get_node("workers-2") is None, within_s=3.0, what="workers-2 deleted"
    )


LIST_WITH_DEFAULT_CREDENTIAL = """
import asyncio, os
from azure.identity.aio import DefaultAzureCredential
from azure.mgmt.compute.aio import ComputeManagementClient

async def main():
    async with DefaultAzureCredential() as credential:
        token = await credential.get_token("https://management.azure.com/.default")
        client = ComputeManagementClient(
            credential, os.environ["AZURE_SUBSCRIPTION_ID"], base_url=os.environ["AZURE_ARM_ENDPOINT"]
        )
        async with client:
            vms = client.virtual_machine_scale_set_vms.list(os.environ["AZURE_RESOURCE_GROUP"], "workers")
            names = [vm.properties.os_profile.computer_name async for vm in vms]
    print(token.token.split("-")[0], *names)

asyncio.run(main())
"""


async def test_world_env_lets_default_azure_credential_work(world: tuple[World, Any]) -> None:
    """`sim serve`'s env file is enough for the daemon's DefaultAzureCredential: the emulator is
    the token authority, trusted through SSL_CERT_FILE (the system's CAs plus its own). A
    subprocess, because aiohttp reads the default trust store once, at import."""
    sim, _ = world
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LIST_WITH_DEFAULT_CREDENTIAL,
        env={**os.environ, **sim.env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert out.decode().split() == ["sim", "workers-0", "workers-1", "workers-2", "workers-3"]


# ---- targeted faults (FaultSpec) ----------------------------------------------------------------


def azure_fault(**raw: Any) -> FaultSpec:
    return FaultSpec.model_validate({"api": "azure", **raw})


ONE_SHOT: dict[str, Any] = {"polling": False, "retry_total": 0, "read_timeout": 1}


def audited(rig: AzureRig, verb: str) -> list[int]:
    return [line["code"] for line in rig.audit.lines if line["verb"] == verb]


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        pytest.param(500, HttpResponseError, id="500"),
        pytest.param(503, HttpResponseError, id="503"),
        pytest.param("timeout", ServiceResponseError, id="timeout"),
        pytest.param("reset", ServiceRequestError, id="reset"),  # aiohttp's disconnect, as the SDK maps it
    ],
)
async def test_fault_after_applying_runs_the_call_and_fails_its_answer(
    rig: AzureRig, error: object, raised: type[Exception]
) -> None:
    rig.faults.add_fault(azure_fault(call="restart", mode="after", error=error, node="workers-1"))
    ops = rig.client.virtual_machine_scale_set_vms
    started = time.monotonic()
    with pytest.raises(raised) as caught:
        await ops.begin_restart(RESOURCE_GROUP, "workers", "1", **ONE_SHOT)
    assert time.monotonic() - started < 5
    if isinstance(caught.value, HttpResponseError):
        assert caught.value.status_code == error
    assert rig.cluster.reboots == ["workers-1"]
    assert audited(rig, "restart") == [202]
    await ops.begin_restart(RESOURCE_GROUP, "workers", "1", **ONE_SHOT)  # used up
    assert rig.cluster.reboots == ["workers-1", "workers-1"]


@pytest.mark.parametrize(
    ("call", "begin", "verb"),
    [
        pytest.param("reimage", lambda c: c.virtual_machine_scale_set_vms.begin_reimage(
            RESOURCE_GROUP, "workers", "2", **ONE_SHOT), "reimage", id="reimage"),
        pytest.param("delete", lambda c: c.virtual_machine_scale_sets.begin_delete_instances(
            RESOURCE_GROUP, "workers", {"instanceIds": ["2"]}, **ONE_SHOT), "deleteInstances", id="delete"),
        pytest.param("capacity", lambda c: c.virtual_machine_scale_sets.begin_update(
            RESOURCE_GROUP, "workers", {"sku": {"capacity": 6}}, **ONE_SHOT), "update", id="capacity"),
        pytest.param("runCommand", lambda c: c.virtual_machine_scale_set_vms.begin_run_command(
            RESOURCE_GROUP, "workers", "2", {"commandId": "RunShellScript", "script": ["true"]}, **ONE_SHOT),
            "runCommand", id="runCommand"),
    ],
)  # fmt: skip
async def test_every_mutating_call_takes_faults_before_and_after(
    rig: AzureRig, call: str, begin: Callable[[Any], Any], verb: str
) -> None:
    rig.faults.add_fault(azure_fault(call=call, mode="before", error=429, retryAfter=2))
    with pytest.raises(HttpResponseError) as caught:
        await begin(rig.client)
    assert caught.value.status_code == 429
    response: Any = caught.value.response
    assert response is not None and response.headers["Retry-After"] == "2"
    assert audited(rig, verb) == [429]
    rig.faults.add_fault(azure_fault(call=call, mode="after", error=500))
    with pytest.raises(HttpResponseError) as caught:
        await begin(rig.client)
    assert caught.value.status_code == 500
    assert audited(rig, verb) == [429, 200 if call == "capacity" else 202]
    effects = {
        "reimage": lambda: rig.cluster.reboots == ["workers-2"],
        "delete": lambda: rig.cluster.removed == ["workers-2"],
        "capacity": lambda: "workers-5" in rig.cluster.added,
        "runCommand": lambda: rig.cluster.repairs == ["workers-2"],
    }
    assert effects[call](), rig.cluster


async def test_fault_before_applying_with_no_answer_has_no_effect(rig: AzureRig) -> None:
    rig.faults.add_fault(azure_fault(call="restart", error="timeout", instance="workers_0"))
    rig.faults.add_fault(azure_fault(call="restart", error="reset", instance="1"))
    ops = rig.client.virtual_machine_scale_set_vms
    with pytest.raises(ServiceResponseError):
        await ops.begin_restart(RESOURCE_GROUP, "workers", "0", **ONE_SHOT)
    with pytest.raises(ServiceRequestError):
        await ops.begin_restart(RESOURCE_GROUP, "workers", "1", **ONE_SHOT)
    assert rig.cluster.reboots == []
    assert audited(rig, "restart") == [499, 444]


def test_azure_fault_names_are_the_emulators() -> None:
    with pytest.raises(ValueError, match="azure calls are"):
        azure_fault(call="begin_restart", error=500)
