"""Each Kubernetes fault kind, observed by a real client; the audit log of mutating requests."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from tests.sim.conftest import add_workers, status_body


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        pytest.param(500, "InternalError", id="500"),
        pytest.param(429, "TooManyRequests", id="429"),
        pytest.param(503, "ServiceUnavailable", id="503"),
    ],
)
async def test_error_rate_injects_status_errors(
    cluster: SimCluster, api: client.ApiClient, code: int, reason: str
) -> None:
    add_workers(cluster, 1)
    cluster.faults.set_api_errors(1.0, (code,))
    with pytest.raises(ApiException) as caught:
        await client.CoreV1Api(api).list_node()
    assert caught.value.status == code
    assert status_body(caught.value)["reason"] == reason
    if code == 429:
        assert caught.value.headers is not None
        assert caught.value.headers["Retry-After"] == "1"
    cluster.faults.set_api_errors(0.0)
    assert len((await client.CoreV1Api(api).list_node()).items) == 1


async def test_partial_error_rate_fails_some_requests(cluster: SimCluster, api: client.ApiClient) -> None:
    cluster.faults.set_api_errors(0.5, (500,))
    outcomes = []
    for _ in range(40):
        try:
            await client.CoreV1Api(api).list_node()
            outcomes.append(True)
        except ApiException as exc:
            assert exc.status == 500
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35


async def test_timeout_fault_never_answers_within_the_client_timeout(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    cluster.faults.set_api_errors(1.0, ("timeout",))
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await client.CoreV1Api(api).list_node(_request_timeout=0.3)
    assert time.monotonic() - started >= 0.3


async def test_latency_delays_every_answer(cluster: SimCluster, api: client.ApiClient) -> None:
    cluster.faults.latency_s = 0.2
    started = time.monotonic()
    await client.CoreV1Api(api).list_node()
    assert time.monotonic() - started >= 0.2


async def test_outage_refuses_connections_then_recovers(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    await core.list_node()  # a kept-alive connection exists: the outage must drop it too
    cluster.faults.api_outage(1.0)
    await asyncio.sleep(0.05)
    with pytest.raises(aiohttp.ClientConnectionError):
        await core.list_node(_request_timeout=2)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"{cluster.url}/api/v1/nodes")
    deadline = time.monotonic() + 5
    while True:
        try:
            assert len((await core.list_node()).items) == 1
            break
        except aiohttp.ClientConnectionError:
            assert time.monotonic() < deadline, "the API server did not come back"
            await asyncio.sleep(0.05)
    assert not cluster.faults.in_outage()


async def test_watch_disconnect_ends_open_streams(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    rv = (await core.list_node()).metadata.resource_version

    async def disconnect_soon() -> None:
        await asyncio.sleep(0.2)
        cluster.faults.watch_disconnect_now()

    task = asyncio.create_task(disconnect_soon())
    started = time.monotonic()
    async with watch.Watch() as w:
        async for _ in w.stream(core.list_node, resource_version=rv, timeout_seconds=10):
            pass
    await task
    assert time.monotonic() - started < 5  # ended by the disconnect, not by timeoutSeconds


async def test_forced_410_breaks_watches_and_old_versions(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    rv = (await core.list_node()).metadata.resource_version
    await core.patch_node("workers-0", {"metadata": {"labels": {"a": "b"}}})

    async def expire_soon() -> None:
        await asyncio.sleep(0.2)
        cluster.faults.force_410_now()

    task = asyncio.create_task(expire_soon())
    with pytest.raises(ApiException) as caught:
        async with watch.Watch() as w:
            async for _ in w.stream(core.list_node, resource_version=rv, timeout_seconds=10):
                pass
    await task
    assert caught.value.status == 410
    with pytest.raises(ApiException) as again:
        async with watch.Watch() as w:
            async for _ in w.stream(core.list_node, resource_version=rv, timeout_seconds=1):
                pass
    assert again.value.status == 410
    # A fresh list gives a version to watch from again.
    fresh = (await core.list_node()).metadata.resource_version
    async with watch.Watch() as w:
        async for _ in w.stream(core.list_node, resource_version=fresh, timeout_seconds=1):
            pass


async def test_admin_endpoint_switches_faults(cluster: SimCluster) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{cluster.url}/_sim/faults",
            json={"api_error_rate": 1.0, "api_error_codes": [429], "latency_s": 0.01},
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["api_error_codes"] == [429]
        async with session.get(f"{cluster.url}/api/v1/nodes") as resp:
            assert resp.status == 429
        async with session.post(f"{cluster.url}/_sim/faults", json={"clear": True}) as resp:
            assert (await resp.json())["api_error_rate"] == 0.0
        async with session.get(f"{cluster.url}/api/v1/nodes") as resp:
            assert resp.status == 200


async def test_every_mutating_request_is_audited(
    cluster: SimCluster, api: client.ApiClient, audit: AuditLog
) -> None:
    add_workers(cluster, 1)
    cluster.add_bare_pod("solo", "workers-0")
    core = client.CoreV1Api(api)
    await core.patch_node("workers-0", {"spec": {"unschedulable": True}})
    cm = await core.create_namespaced_config_map(
        "noderescue", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="state-"))
    )
    await core.replace_namespaced_config_map(cm.metadata.name, "noderescue", cm)
    with pytest.raises(ApiException):
        await core.patch_node("ghost", {"spec": {"unschedulable": True}})
    await core.create_namespaced_pod_eviction(
        "solo", "default", client.V1Eviction(metadata=client.V1ObjectMeta(name="solo", namespace="default"))
    )
    await core.delete_namespaced_config_map(cm.metadata.name, "noderescue")
    await core.delete_collection_namespaced_config_map("noderescue")
    cluster.faults.set_api_errors(1.0, (500,))
    with pytest.raises(ApiException):
        await core.patch_node("workers-0", {"spec": {"unschedulable": False}})
    cluster.faults.set_api_errors(0.0)
    await core.list_node()  # reads are never audited
    api_lines = [
        (line["verb"], line["resource"], line["namespace"], line["name"], line["subresource"], line["code"])
        for line in audit.lines
    ]
    assert api_lines == [
        ("patch", "nodes", None, "workers-0", None, 200),
        ("create", "configmaps", "noderescue", cm.metadata.name, None, 201),
        ("update", "configmaps", "noderescue", cm.metadata.name, None, 200),
        ("patch", "nodes", None, "ghost", None, 404),
        ("create", "pods", "default", "solo", "eviction", 201),
        ("delete", "configmaps", "noderescue", cm.metadata.name, None, 200),
        ("deletecollection", "configmaps", "noderescue", "", None, 200),
        ("patch", "nodes", None, "workers-0", None, 500),
    ]
    assert {line["api"] for line in audit.lines} == {"kubernetes"}
    assert {line["userAgent"] for line in audit.lines} == {"noderescue-tests/1"}


async def test_audit_file_gets_one_flushed_json_line_per_write(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "out" / "audit.jsonl")
    log.write(
        api="aws",
        verb="TerminateInstanceInAutoScalingGroup",
        resource="instance",
        name="i-1",
        code=200,
        user_agent="noderescue/0.1.0",
    )
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()  # readable before close: flushed
    log.close()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert {k: line[k] for k in ("api", "verb", "resource", "name", "code", "userAgent")} == {
        "api": "aws",
        "verb": "TerminateInstanceInAutoScalingGroup",
        "resource": "instance",
        "name": "i-1",
        "code": 200,
        "userAgent": "noderescue/0.1.0",
    }
    assert line["ts"].endswith("Z")


async def test_a_long_running_watch_resumes_after_a_disconnect_without_losing_events(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    rv = (await core.list_node()).metadata.resource_version
    steps: list[str] = []

    async def change_around_a_disconnect() -> None:
        await asyncio.sleep(0.1)
        await core.patch_node("workers-0", {"metadata": {"labels": {"step": "before"}}})
        await asyncio.sleep(0.1)
        cluster.faults.watch_disconnect_now()
        # Written while the client reconnects: it must come from the event window.
        await core.patch_node("workers-0", {"metadata": {"labels": {"step": "during"}}})

    task = asyncio.create_task(change_around_a_disconnect())
    async with asyncio.timeout(5), watch.Watch() as w:  # no timeout_seconds: watch "forever"
        async for event in w.stream(core.list_node, resource_version=rv):
            steps.append(event["object"].metadata.labels["step"])
            if len(steps) == 2:
                w.stop()
    await task
    assert steps == ["before", "during"]


async def test_stopping_during_an_outage_is_clean(audit: AuditLog) -> None:
    sim = SimCluster(audit=audit)
    await sim.start()
    sim.faults.api_outage(30.0)
    await asyncio.sleep(0.05)
    await sim.stop()  # no reopen timer or outage task may outlive it (the suite checks tasks)
