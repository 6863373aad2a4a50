"""The emulated API server through the real kubernetes-asyncio client over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import NODES
from tests.sim.conftest import add_workers, eventually, status_body


async def test_list_nodes_returns_realistic_nodes(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 3)
    nodes = await client.CoreV1Api(api).list_node()
    assert [n.metadata.name for n in nodes.items] == ["workers-0", "workers-1", "workers-2"]
    node = nodes.items[0]
    assert node.spec.provider_id == "aws:///eu-west-1a/i-00000000000000000"
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "eu-west-1a"
    assert node.metadata.labels["kubernetes.io/hostname"] == "workers-0"
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
    }
    assert node.status.node_info.boot_id
    assert int(nodes.metadata.resource_version) >= 3


async def test_watch_from_version_sees_every_later_change_in_order(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 2)
    core = client.CoreV1Api(api)
    listed = await core.list_node()
    start_rv = listed.metadata.resource_version
    # Changes made before the watch connects must still be delivered (from the event window).
    for i in range(5):
        await core.patch_node("workers-0", {"metadata": {"labels": {"step": str(i)}}})
    await core.delete_node("workers-1")
    seen: list[tuple[str, str, str | None]] = []
    async with watch.Watch() as w:
        async for event in w.stream(core.list_node, resource_version=start_rv, timeout_seconds=2):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, (obj.metadata.labels or {}).get("step")))
            if len(seen) == 3:
                await core.patch_node("workers-0", {"metadata": {"labels": {"step": "late"}}})
            if len(seen) == 7:
                break
    assert seen == [
        *[("MODIFIED", "workers-0", str(i)) for i in range(5)],
        ("DELETED", "workers-1", None),
        ("MODIFIED", "workers-0", "late"),
    ]


async def test_watch_without_version_starts_with_current_state_and_bookmarks(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 2)
    core = client.CoreV1Api(api)
    kinds: list[str] = []
    async with watch.Watch() as w:
        async for event in w.stream(core.list_node, allow_watch_bookmarks=True, timeout_seconds=2):
            kinds.append(event["type"])
            if event["type"] == "BOOKMARK":
                break
    assert kinds == ["ADDED", "ADDED", "BOOKMARK"]


async def test_watch_from_too_old_version_gets_410(api: client.ApiClient, cluster: SimCluster) -> None:
    small = SimCluster(event_window=5)
    await small.start()
    try:
        async with client.ApiClient(client.Configuration(host=small.url)) as small_api:
            add_workers(small, 10)  # 10 node events: the node window of 5 has moved on past 3
            core = client.CoreV1Api(small_api)
            with pytest.raises(ApiException) as caught:
                async with watch.Watch() as w:
                    async for _ in w.stream(core.list_node, resource_version="3", timeout_seconds=1):
                        pass
            assert caught.value.status == 410
            assert "too old resource version: 3" in str(caught.value.reason)
            # A list at an exact too-old version is refused the same way.
            with pytest.raises(ApiException) as listed:
                await core.list_node(resource_version="3", resource_version_match="Exact")
            assert listed.value.status == 410
    finally:
        await small.stop()


async def test_stale_put_conflicts(cluster: SimCluster, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(
        "noderescue",
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="noderescue-state"), data={"a": "1"}),
    )
    fresh = await core.read_namespaced_config_map("noderescue-state", "noderescue")
    fresh.data = {"a": "2"}
    await core.replace_namespaced_config_map("noderescue-state", "noderescue", fresh)
    created.data = {"a": "stale"}
    with pytest.raises(ApiException) as caught:
        await core.replace_namespaced_config_map("noderescue-state", "noderescue", created)
    assert caught.value.status == 409
    body: dict[str, Any] = status_body(caught.value)
    assert body["reason"] == "Conflict"
    assert body["kind"] == "Status"
    assert (await core.read_namespaced_config_map("noderescue-state", "noderescue")).data == {"a": "2"}
    with pytest.raises(ApiException) as dup:
        await core.create_namespaced_config_map(
            "noderescue", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="noderescue-state"))
        )
    assert dup.value.status == 409
    assert status_body(dup.value)["reason"] == "AlreadyExists"


async def test_get_missing_is_404_status(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        await client.CoreV1Api(api).read_node("nope")
    assert caught.value.status == 404
    assert status_body(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'nodes "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": "", "kind": "nodes"},
        "code": 404,
    }


@pytest.mark.parametrize(
    ("body", "content_type", "check"),
    [
        pytest.param(
            {"spec": {"unschedulable": True}},
            None,
            lambda n: n.spec.unschedulable is True,
            id="strategic-cordon",
        ),
        pytest.param(
            {"metadata": {"annotations": {"noderescue.io/remediation": "{}"}}},
            "application/merge-patch+json",
            lambda n: n.metadata.annotations["noderescue.io/remediation"] == "{}",
            id="merge-annotation",
        ),
        pytest.param(
            [{"op": "add", "path": "/spec/taints", "value": [{"key": "k", "effect": "NoSchedule"}]}],
            None,
            lambda n: [t.key for t in n.spec.taints] == ["k"],
            id="json-patch-taints",
        ),
        pytest.param(
            {"metadata": {"labels": {"kubernetes.io/hostname": None}}},
            "application/merge-patch+json",
            lambda n: "kubernetes.io/hostname" not in n.metadata.labels,
            id="merge-null-deletes",
        ),
    ],
)
async def test_patch_types(
    cluster: SimCluster, api: client.ApiClient, body: Any, content_type: str | None, check: Any
) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    kwargs: dict[str, Any] = {"_content_type": content_type} if content_type else {}
    patched = await core.patch_node("workers-0", body, **kwargs)
    assert check(patched)
    assert check(await core.read_node("workers-0"))


async def test_strategic_merge_merges_conditions_by_type_on_status(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    patch = {"status": {"conditions": [{"type": "KernelDeadlock", "status": "True", "reason": "DockerHung"}]}}
    # The main resource ignores status, as the real API does; the status subresource applies it.
    await core.patch_node("workers-0", patch)
    assert "KernelDeadlock" not in {c.type for c in (await core.read_node("workers-0")).status.conditions}
    await core.patch_node_status("workers-0", patch)
    types = {c.type: c.status for c in (await core.read_node("workers-0")).status.conditions}
    assert types["KernelDeadlock"] == "True"
    assert types["Ready"] == "True"  # merged by type, not replaced


async def test_json_patch_test_failure_is_rejected(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 1)
    with pytest.raises(ApiException) as caught:
        await client.CoreV1Api(api).patch_node(
            "workers-0", [{"op": "test", "path": "/spec/unschedulable", "value": True}]
        )
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("label_selector", "field_selector", "expected"),
    [
        pytest.param(
            "noderescue.io/class=workers", None, ["workers-0", "workers-1", "workers-2", "workers-3"], id="eq"
        ),
        pytest.param(
            "topology.kubernetes.io/zone==eu-west-1b", None, ["workers-1", "workers-3"], id="double-eq"
        ),
        pytest.param("topology.kubernetes.io/zone!=eu-west-1b", None, ["workers-0", "workers-2"], id="neq"),
        pytest.param(
            "kubernetes.io/hostname in (workers-0, workers-3)", None, ["workers-0", "workers-3"], id="in"
        ),
        pytest.param(
            "kubernetes.io/hostname notin (workers-0,workers-3)", None, ["workers-1", "workers-2"], id="notin"
        ),
        pytest.param("gpu", None, ["workers-2"], id="exists"),
        pytest.param("!gpu", None, ["workers-0", "workers-1", "workers-3"], id="not-exists"),
        pytest.param("gpu,topology.kubernetes.io/zone=eu-west-1b", None, [], id="and"),
        pytest.param(None, "metadata.name=workers-1", ["workers-1"], id="field-name"),
        pytest.param(None, "spec.unschedulable=true", ["workers-3"], id="field-unschedulable"),
    ],
)
async def test_node_selectors(
    cluster: SimCluster,
    api: client.ApiClient,
    label_selector: str | None,
    field_selector: str | None,
    expected: list[str],
) -> None:
    add_workers(cluster, 4)
    core = client.CoreV1Api(api)
    await core.patch_node("workers-2", {"metadata": {"labels": {"gpu": "yes"}}})
    await core.patch_node("workers-3", {"spec": {"unschedulable": True}})
    kwargs: dict[str, Any] = {
        k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector)) if v
    }
    nodes = await core.list_node(**kwargs)
    assert [n.metadata.name for n in nodes.items] == expected


async def test_pods_by_node_field_selector_and_pagination(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 2)
    cluster.add_workload("web", replicas=7)
    core = client.CoreV1Api(api)
    on_0 = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=workers-0")
    on_1 = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=workers-1")
    assert {len(on_0.items), len(on_1.items)} == {3, 4}
    names: list[str] = []
    token = None
    pages = 0
    while True:
        paging: dict[str, Any] = {"_continue": token} if token else {}
        page = await core.list_namespaced_pod("default", limit=3, **paging)
        names.extend(p.metadata.name for p in page.items)
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(names)
    assert pages == 3
    assert len(names) == 7 == len(set(names))
    assert names == sorted(names)


async def test_bad_selector_is_400(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        await client.CoreV1Api(api).list_node(field_selector="status.phase=Running")
    assert caught.value.status == 400


async def test_evictions_201_429_500(cluster: SimCluster, api: client.ApiClient) -> None:
    add_workers(cluster, 3)
    cluster.add_workload("free", replicas=2, pdb_max_unavailable=1)
    cluster.add_workload("blocked", replicas=2, pdb_min_available="100%")
    cluster.add_workload("double", replicas=2, pdb_max_unavailable=1)
    cluster.add_pdb("double-again", namespace="default", selector={"app": "double"}, max_unavailable=1)
    core = client.CoreV1Api(api)
    policy = client.PolicyV1Api(api)
    pods = {
        p.metadata.labels["app"]: p.metadata.name for p in (await core.list_namespaced_pod("default")).items
    }
    await eventually(
        lambda: (cluster.pdb_status("free-pdb") or {}).get("disruptionsAllowed") == 1, what="pdb status"
    )

    def eviction(name: str) -> client.V1Eviction:
        return client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace="default"),
            delete_options=client.V1DeleteOptions(grace_period_seconds=0),
        )

    ok: Any = await core.create_namespaced_pod_eviction(
        pods["free"], "default", eviction(pods["free"]), _preload_content=False
    )
    assert ok.status == 201
    assert await ok.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    with pytest.raises(ApiException) as blocked:
        await core.create_namespaced_pod_eviction(pods["blocked"], "default", eviction(pods["blocked"]))
    assert blocked.value.status == 429
    body = status_body(blocked.value)
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["reason"] == "TooManyRequests"
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget blocked-pdb needs 2 healthy pods and has 2 currently",
        }
    ]
    with pytest.raises(ApiException) as double:
        await core.create_namespaced_pod_eviction(pods["double"], "default", eviction(pods["double"]))
    assert double.value.status == 500
    assert "more than one PodDisruptionBudget" in status_body(double.value)["message"]
    # The second pod of `free` cannot go until the replacement of the first is Ready.
    status = (await policy.read_namespaced_pod_disruption_budget("free-pdb", "default")).status
    assert status.disruptions_allowed == 0
    assert status.expected_pods == 2


async def test_delete_pod_with_grace_period_terminates_then_disappears(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    cluster.add_bare_pod("solo", "workers-0")
    core = client.CoreV1Api(api)
    # 10 emulated seconds at the test time scale: 0.2 s.
    terminating = await core.delete_namespaced_pod("solo", "default", grace_period_seconds=10)
    assert terminating.metadata.deletion_timestamp is not None
    assert (await core.read_namespaced_pod("solo", "default")).metadata.deletion_grace_period_seconds == 10
    await asyncio.sleep(0.5)
    with pytest.raises(ApiException) as gone:
        await core.read_namespaced_pod("solo", "default")
    assert gone.value.status == 404


async def test_events_are_one_object_seen_through_two_apis(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    events_v1 = client.EventsV1Api(api)
    await core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="workers-0."),
            involved_object=client.V1ObjectReference(kind="Node", name="workers-0", api_version="v1"),
            reason="Cordoned",
            message="cordoned by noderescue",
            type="Normal",
            source=client.V1EventSource(component="noderescue"),
        ),
    )
    listed = await events_v1.list_namespaced_event("default", field_selector="reason=Cordoned")
    assert [(e.reason, e.note, e.regarding.name) for e in listed.items] == [
        ("Cordoned", "cordoned by noderescue", "workers-0")
    ]
    core_listed = await core.list_event_for_all_namespaces(
        field_selector="involvedObject.name=workers-0,reason=Cordoned"
    )
    assert len(core_listed.items) == 1
    assert core_listed.items[0].source.component == "noderescue"


async def test_leases_exist_per_node_and_can_be_used_for_leader_election(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 2)
    coordination = client.CoordinationV1Api(api)
    leases = await coordination.list_namespaced_lease("kube-node-lease")
    assert sorted(lease.spec.holder_identity for lease in leases.items) == ["workers-0", "workers-1"]
    created = await coordination.create_namespaced_lease(
        "noderescue",
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="noderescue-leader"),
            spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15),
        ),
    )
    assert created.metadata.resource_version


async def test_discovery_documents(api: client.ApiClient) -> None:
    core_resources = await client.CoreV1Api(api).get_api_resources()
    eviction = next(r for r in core_resources.resources if r.name == "pods/eviction")
    assert (eviction.group, eviction.version, eviction.kind) == ("policy", "v1", "Eviction")
    groups = await client.ApisApi(api).get_api_versions()
    assert {g.name for g in groups.groups} >= {"apps", "policy", "coordination.k8s.io", "events.k8s.io"}
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"


async def test_watch_with_label_selector_sees_objects_enter_and_leave(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 2)
    core = client.CoreV1Api(api)
    rv = (await core.list_node(label_selector="broken=yes")).metadata.resource_version
    await core.patch_node("workers-0", {"metadata": {"labels": {"broken": "yes"}}})
    await core.patch_node("workers-1", {"metadata": {"labels": {"other": "x"}}})  # never selected: not seen
    await core.patch_node("workers-0", {"metadata": {"annotations": {"a": "b"}}})
    await core.patch_node("workers-0", {"metadata": {"labels": {"broken": None}}})
    seen = []
    async with watch.Watch() as w:
        async for event in w.stream(
            core.list_node, label_selector="broken=yes", resource_version=rv, timeout_seconds=1
        ):
            seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "workers-0"), ("MODIFIED", "workers-0"), ("DELETED", "workers-0")]


async def test_event_windows_are_per_resource(api: client.ApiClient) -> None:
    small = SimCluster(event_window=5)
    await small.start()
    try:
        async with client.ApiClient(client.Configuration(host=small.url)) as small_api:
            add_workers(small, 2)
            core = client.CoreV1Api(small_api)
            rv = (await core.list_node()).metadata.resource_version
            for i in range(20):  # churn elsewhere (lease renewals, config maps) ...
                await core.create_namespaced_config_map(
                    "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i}"))
                )
            await core.patch_node("workers-1", {"metadata": {"labels": {"x": "y"}}})
            seen = []
            async with watch.Watch() as w:  # ... does not expire a node watcher's version
                async for event in w.stream(core.list_node, resource_version=rv, timeout_seconds=1):
                    seen.append((event["type"], event["object"].metadata.name))
            assert seen == [("MODIFIED", "workers-1")]
    finally:
        await small.stop()


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code"),
    [
        pytest.param(
            "PATCH",
            "/api/v1/nodes/workers-0",
            b"{not json",
            "application/merge-patch+json",
            400,
            id="bad-json",
        ),
        pytest.param(
            "PATCH",
            "/api/v1/nodes/workers-0",
            b'"a string"',
            "application/merge-patch+json",
            400,
            id="not-object",
        ),
        pytest.param("PATCH", "/api/v1/nodes/workers-0", b"{}", "text/plain", 415, id="unknown-patch-type"),
        pytest.param(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            b"\x0a\x02k8s",
            "application/vnd.kubernetes.protobuf",
            415,
            id="protobuf",
        ),
        pytest.param("GET", "/api/v1/nodes?watch=maybe", b"", "application/json", 400, id="bad-bool"),
        pytest.param("GET", "/api/v1/widgets", b"", "application/json", 404, id="unknown-resource"),
        pytest.param(
            "POST",
            "/api/v1/namespaces/ghost/configmaps",
            b'{"metadata":{"name":"x"}}',
            "application/json",
            404,
            id="missing-namespace",
        ),
        pytest.param(
            "PUT",
            "/api/v1/nodes/workers-0",
            b'{"metadata":{"name":"other"}}',
            "application/json",
            400,
            id="name-mismatch",
        ),
    ],
)
async def test_malformed_requests_get_status_errors(
    cluster: SimCluster, method: str, path: str, body: bytes, content_type: str, code: int
) -> None:
    add_workers(cluster, 1)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, cluster.url + path, data=body, headers={"Content-Type": content_type}
        ) as resp,
    ):
        assert resp.status == code
        status = await resp.json()
    assert status["kind"] == "Status"
    assert status["code"] == code
    assert status["status"] == "Failure"


async def test_watch_list_sends_state_then_an_initial_events_end_bookmark(cluster: SimCluster) -> None:
    add_workers(cluster, 2)
    url = (
        f"{cluster.url}/api/v1/nodes?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        events = [json.loads(line) async for line in resp.content]
    assert [e["type"] for e in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_a_watcher_that_disconnects_is_forgotten_at_once() -> None:
    sim = SimCluster(bookmark_interval_s=60.0)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{sim.url}/api/v1/nodes?watch=true")
            await eventually(lambda: sim.store.has_watchers(NODES), timeout_s=2, what="subscription")
            resp.close()
        await eventually(lambda: not sim.store.has_watchers(NODES), timeout_s=2, what="unsubscription")
    finally:
        await sim.stop()
