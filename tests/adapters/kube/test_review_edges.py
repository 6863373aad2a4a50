"""Edge cases found in review: list pagination consistency, watch stream edge cases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from noderescue.adapters.kube.cache import NodeCache, Stream
from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.adapters.kube.transport import request_json
from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import NODES
from tests.adapters.kube.conftest import eventually


def add_nodes(sim: SimCluster, count: int) -> list[str]:
    names = [f"workers-{i}" for i in range(count)]
    for i, name in enumerate(names):
        sim.add_node(name, labels={"noderescue.io/class": "workers"}, zone="a", provider_id=f"aws:///a/i-{i}")
    return names


def change_between_pages(sim: SimCluster, node: str, *, on_list: int) -> list[int]:
    """Make ``node`` go KernelDeadlock=True just before the ``on_list``-th node LIST is served."""
    calls = [0]

    def hook(namespace: str | None, name: str | None) -> None:
        if name is None:
            calls[0] += 1
            if calls[0] == on_list:
                sim.set_condition(node, "KernelDeadlock", "True", reason="DockerHung")

    sim.store.read_hooks[NODES.bucket] = hook
    return calls


async def test_every_page_of_a_list_reports_the_first_pages_resource_version(
    sim: SimCluster, api: KubeClient
) -> None:
    # A continued list is served "as of" the first page, as the real API server does: a watch
    # from the list's version must replay changes made to objects on pages already received.
    names = add_nodes(sim, 4)
    change_between_pages(sim, names[0], on_list=2)
    versions: list[str] = []

    async def page(query: dict[str, str]) -> dict[str, object]:
        return await request_json(api, "GET", "/api/v1/nodes", query=query)

    first = await page({"limit": "2"})
    meta = first["metadata"]
    assert isinstance(meta, dict)
    versions.append(meta["resourceVersion"])
    second = await page({"limit": "2", "continue": meta["continue"]})
    meta2 = second["metadata"]
    assert isinstance(meta2, dict)
    versions.append(meta2["resourceVersion"])
    assert versions[1] == versions[0]


async def test_the_cache_sees_a_change_made_to_an_already_listed_page(
    sim: SimCluster, api: KubeClient
) -> None:
    names = add_nodes(sim, 4)
    calls = change_between_pages(sim, names[0], on_list=2)  # node 0 is on page 1 (page_size=2)
    cache = NodeCache(api, cluster="", page_size=2, freeze_gc=False, inactivity_s=30.0)
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(5.0)
        assert calls[0] >= 2, "the hook must have fired between the pages"

        def sees_deadlock() -> bool:
            view = cache.get(names[0])
            cond = view.condition("KernelDeadlock") if view is not None else None
            return cond is not None and cond.status == "True"

        await eventually(sees_deadlock, timeout_s=2.0, what="the cache to see node 0's new condition")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class ErroringWatchServer:
    """A server whose Node stream is in trouble: every Node watch gets 200 and then at once an
    ERROR event (``node_watch_error``: 500 as an API server in trouble with its storage sends,
    or 410 to force relists); a Node list comes in two pages, and with ``fail_second_page`` the
    second one fails. Lease watches stay healthy and bookmark every 20 ms."""

    def __init__(self, node_watch_error: int = 500) -> None:
        self.node_watch_error = node_watch_error
        self.fail_second_page = False
        self.node_watches = 0
        self.node_lists = 0
        self.stop = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        leases = "leases" in request.path
        if request.query.get("watch") != "true":
            return self._list(leases, request.query.get("continue"))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if not leases:
            self.node_watches += 1
            code = self.node_watch_error
            error = {"kind": "Status", "status": "Failure", "code": code, "reason": "Expired"}
            await response.write(orjson.dumps({"type": "ERROR", "object": error}) + b"\n")
            await response.write_eof()
            return response
        bookmark = {"type": "BOOKMARK", "object": {"kind": "Lease", "metadata": {"resourceVersion": "5"}}}
        try:
            while not self.stop.is_set():
                await response.write(orjson.dumps(bookmark) + b"\n")
                await asyncio.sleep(0.02)
        except ConnectionError:
            pass
        return response

    def _list(self, leases: bool, token: str | None) -> web.Response:
        if leases:
            return web.json_response({"kind": "List", "metadata": {"resourceVersion": "5"}, "items": []})
        if not token:
            self.node_lists += 1
            meta = {"resourceVersion": "5", "continue": "page-2"}
            return web.json_response({"kind": "List", "metadata": meta, "items": [NODE]})
        if self.fail_second_page:
            error = {"kind": "Status", "status": "Failure", "code": 500, "message": "etcdserver: timeout"}
            return web.json_response(error, status=500)
        node2 = {**NODE, "metadata": {"name": "n2", "uid": "u2", "resourceVersion": "5"}}
        return web.json_response({"kind": "List", "metadata": {"resourceVersion": "5"}, "items": [node2]})


NODE = {
    "metadata": {"name": "n1", "uid": "u1", "resourceVersion": "5"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


@pytest.fixture
def node_watch_error() -> int:
    return 500


@pytest.fixture
async def erroring_server(
    tmp_path: Path, node_watch_error: int
) -> AsyncIterator[tuple[ErroringWatchServer, KubeClient]]:
    server = ErroringWatchServer(node_watch_error)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_bytes(orjson.dumps(config))
    client = await make_api_client(path, None, timeout_s=2.0)
    try:
        yield server, client
    finally:
        server.stop.set()
        await client.close()
        await runner.cleanup()


async def test_a_watch_that_fails_right_after_opening_does_not_refresh_freshness(
    erroring_server: tuple[ErroringWatchServer, KubeClient],
) -> None:
    # The stale-view gate trusts synced_at: a stream that opens (200) and then fails before
    # delivering anything has shown us nothing about the present and must not count as fresh.
    server, client = erroring_server
    now = [1000.0]
    cache = NodeCache(
        client, page_size=1, freeze_gc=False, backoff_base_s=0.01, backoff_max_s=0.02, clock=lambda: now[0]
    )
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(3.0)
        assert cache.get("n1") is not None and cache.get("n2") is not None
        now[0] = 2000.0  # time passes; from here on the Node stream only ever fails
        watches = server.node_watches
        await eventually(lambda: server.node_watches >= watches + 3, timeout_s=3.0, what="node watch retries")
        synced = cache.synced_at
        assert synced is not None and synced < 2000.0, "a failing Node stream kept the view 'fresh'"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_lease_before_its_node_a_heartbeat_and_a_deleted_event(
    sim: SimCluster, api: KubeClient
) -> None:
    """Through the plain watch path (no relist): a Lease for a node that does not exist yet is
    kept and merged when the node appears; a status heartbeat does not wake the reconciler; a
    DELETED event removes the node and does."""
    cache = NodeCache(api, cluster="", page_size=10, freeze_gc=False, inactivity_s=30.0)
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(5.0)
        relists = cache.relists
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "ghost", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "ghost", "renewTime": "2024-05-01T10:00:00.123456Z"},
        }
        await request_json(
            api, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=lease
        )
        await eventually(lambda: cache._renew.get("ghost") is not None, timeout_s=2.0, what="the lease")
        assert cache.get("ghost") is None

        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "ghost"},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastHeartbeatTime": "2024-05-01T10:00:00Z",
                        "lastTransitionTime": "2024-05-01T09:00:00Z",
                    }
                ]
            },
        }
        await request_json(api, "POST", "/api/v1/nodes", body=node)
        await eventually(lambda: cache.get("ghost") is not None, timeout_s=2.0, what="the node")
        view = cache.get("ghost")
        assert view is not None and view.lease_renew == 1714557600.123456

        cache.changed.clear()
        heartbeat = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastHeartbeatTime": "2024-05-01T10:05:00Z",
                        "lastTransitionTime": "2024-05-01T09:00:00Z",
                    }
                ],
                "allocatable": {"cpu": "3"},
            }
        }
        await request_json(
            api,
            "PATCH",
            "/api/v1/nodes/ghost/status",
            body=heartbeat,
            content_type="application/merge-patch+json",
        )
        marker = await request_json(
            api,
            "PATCH",
            "/api/v1/nodes/ghost",
            body={"metadata": {"annotations": {"x": "y"}}},
            content_type="application/merge-patch+json",
        )
        marker_rv = marker["metadata"]["resourceVersion"]
        await eventually(
            lambda: cache._versions[Stream.NODES] == marker_rv, timeout_s=2.0, what="the heartbeat"
        )
        assert not cache.changed.is_set(), "a heartbeat-only status update must not wake the reconciler"

        await request_json(api, "DELETE", "/api/v1/nodes/ghost")
        await asyncio.wait_for(cache.changed.wait(), 2.0)
        assert cache.get("ghost") is None
        assert cache.relists == relists, "the deletion must have come through the watch, not a relist"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("node_watch_error", [pytest.param(410, id="every-watch-expires")])
async def test_a_relist_that_never_completes_does_not_refresh_freshness(
    erroring_server: tuple[ErroringWatchServer, KubeClient],
) -> None:
    # After a 410 the old view stays in use until a relist completes; a relist whose later pages
    # keep failing must not make that old view look fresh page after page.
    server, client = erroring_server
    now = [1000.0]
    cache = NodeCache(
        client, page_size=1, freeze_gc=False, backoff_base_s=0.01, backoff_max_s=0.02, clock=lambda: now[0]
    )
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(3.0)
        server.fail_second_page = True
        await asyncio.sleep(0.05)  # let a relist in flight finish
        now[0] = 2000.0
        lists = server.node_lists
        await eventually(lambda: server.node_lists >= lists + 3, timeout_s=3.0, what="relist attempts")
        synced = cache.synced_at
        assert synced is not None and synced < 2000.0, "an unfinished relist kept the old view 'fresh'"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
