"""The HTTP endpoints, served by the real aiohttp server on 127.0.0.1:0 and read by aiohttp's client."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from noderescue.adapters.kube.client import make_api_client
from noderescue.metrics import Metrics
from noderescue.runtime.http import (
    HttpServer,
    KubernetesAuthorizer,
    LoopHeartbeat,
    build_authorizer,
    parse_bind,
)
from noderescue.sim.cluster import SimCluster


@dataclass
class FakeSource:
    """A StatusSource whose answers the test sets."""

    ready: bool = True
    reasons: list[str] = field(default_factory=list)
    document: Mapping[str, object] = field(default_factory=dict)
    broken: bool = False

    def readiness(self) -> tuple[bool, list[str]]:
        if self.broken:
            raise RuntimeError("bug")
        return self.ready, self.reasons

    def status(self) -> Mapping[str, object]:
        if self.broken:
            raise RuntimeError("bug")
        return self.document


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
async def server(source: FakeSource, metrics: Metrics) -> AsyncIterator[HttpServer]:
    async with HttpServer("127.0.0.1:0", source, metrics.registry) as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def url(srv: HttpServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.port}{path}"


async def test_healthz_ok_while_loop_is_responsive(server: HttpServer, client: aiohttp.ClientSession) -> None:
    async with client.get(url(server, "/healthz")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["healthy"] is True
    assert body["loop_heartbeat_age_s"] < 1.0


async def test_healthz_503_when_heartbeat_is_stale(source: FakeSource, client: aiohttp.ClientSession) -> None:
    # The heartbeat beats at start, then not for 10 s; 0.2 s of allowed age runs out at once.
    async with HttpServer(
        "127.0.0.1:0", source, CollectorRegistry(), heartbeat_interval_s=10.0, max_heartbeat_age_s=0.2
    ) as srv:
        await asyncio.sleep(0.3)
        async with client.get(url(srv, "/healthz")) as resp:
            assert resp.status == 503
            assert (await resp.json())["healthy"] is False


async def test_heartbeat_age_grows_while_the_loop_is_blocked() -> None:
    heartbeat = LoopHeartbeat(interval_s=0.01)
    heartbeat.start()
    try:
        await asyncio.sleep(0.05)
        assert heartbeat.age() < 0.2
        time.sleep(0.3)  # wedge the loop: the heartbeat task cannot run  # noqa: ASYNC251
        assert heartbeat.age() >= 0.3
        await asyncio.sleep(0.05)
        assert heartbeat.age() < 0.2
    finally:
        await heartbeat.stop()


@pytest.mark.parametrize(
    ("ready", "reasons", "status"),
    [
        pytest.param(True, [], 200, id="ready"),
        pytest.param(False, ["config not loaded"], 503, id="no-config"),
        pytest.param(
            False,
            ["cluster prod-eu1: not synced", "cluster prod-us1: leader election not started"],
            503,
            id="clusters-not-ready",
        ),
    ],
)
async def test_readyz(
    server: HttpServer,
    client: aiohttp.ClientSession,
    source: FakeSource,
    ready: bool,
    reasons: list[str],
    status: int,
) -> None:
    source.ready, source.reasons = ready, reasons
    async with client.get(url(server, "/readyz")) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert await resp.json() == {"ready": ready, "reasons": reasons}


async def test_readyz_503_when_the_check_itself_fails(
    server: HttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.broken = True
    async with client.get(url(server, "/readyz")) as resp:
        assert resp.status == 503
        assert (await resp.json())["reasons"] == ["readiness check failed: RuntimeError"]


async def test_metrics_exposes_the_registry(
    server: HttpServer, client: aiohttp.ClientSession, metrics: Metrics
) -> None:
    metrics.remediations.labels(
        cluster="c1", **{"class": "workers"}, action="replace", result="succeeded"
    ).inc()
    metrics.dry_run.set(1)
    async with client.get(url(server, "/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (
        "noderescue_remediations_total",
        (("action", "replace"), ("class", "workers"), ("cluster", "c1"), ("result", "succeeded")),
    )
    assert samples[key] == 1.0
    assert samples[("noderescue_dry_run", ())] == 1.0


async def test_metrics_speaks_openmetrics_when_asked(
    server: HttpServer, client: aiohttp.ClientSession
) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with client.get(url(server, "/metrics"), headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).rstrip().endswith("# EOF")


async def test_status_returns_the_source_document(
    server: HttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.document = {
        "clusters": {"prod-eu1": {"nodes": {"workers-1": {"health": "unhealthy", "class": "workers"}}}}
    }
    async with client.get(url(server, "/status")) as resp:
        assert resp.status == 200
        assert await resp.json() == source.document


async def test_status_500_when_the_source_fails(
    server: HttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.broken = True
    async with client.get(url(server, "/status")) as resp:
        assert resp.status == 500


async def test_unknown_path_is_404(server: HttpServer, client: aiohttp.ClientSession) -> None:
    async with client.get(url(server, "/admin")) as resp:
        assert resp.status == 404


async def test_port_in_use_raises_and_leaves_nothing_running(server: HttpServer, source: FakeSource) -> None:
    with pytest.raises(OSError):
        async with HttpServer(f"127.0.0.1:{server.port}", source, CollectorRegistry()):
            pass


async def test_stopped_server_refuses_connections(source: FakeSource, client: aiohttp.ClientSession) -> None:
    async with HttpServer("127.0.0.1:0", source, CollectorRegistry()) as srv:
        port = srv.port
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(f"http://127.0.0.1:{port}/healthz"):
            pass


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        pytest.param("127.0.0.1:9478", ("127.0.0.1", 9478), id="ipv4"),
        pytest.param("[::1]:9478", ("::1", 9478), id="ipv6"),
        pytest.param(":9100", ("0.0.0.0", 9100), id="all-interfaces"),
        pytest.param("localhost:0", ("localhost", 0), id="any-port"),
    ],
)
def test_parse_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    "bind",
    [
        pytest.param("127.0.0.1", id="no-port"),
        pytest.param("127.0.0.1:http", id="named-port"),
        pytest.param("127.0.0.1:70000", id="port-out-of-range"),
    ],
)
def test_parse_bind_rejects(bind: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        parse_bind(bind)


# ---------------------------------------------------------------------------------------------
# Slow clients: a slowloris flood must not keep the probes out
# ---------------------------------------------------------------------------------------------

# The daemon in a process of its own with a small descriptor limit (a container's is often
# 1024, and a pod shares it with its kube clients): the flood runs out of descriptors long
# before it runs out of connections to open.
_SERVE_WITH_FEW_DESCRIPTORS = """
import asyncio, resource, sys
from prometheus_client import CollectorRegistry
from noderescue.runtime.http import HttpServer

class Source:
    def readiness(self): return True, []
    def status(self): return {}

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

async def main():
    async with HttpServer("127.0.0.1:0", Source(), CollectorRegistry(), header_timeout_s=30.0) as srv:
        print(srv.port, file=sys.stderr, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


REPO = str(Path(__file__).resolve().parents[2])


def _open_half_requests(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send half a request head and then nothing."""
    held: list[socket.socket] = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: noderescue\r\n")
        except OSError:
            break  # the listen backlog is full: the server stopped accepting
        held.append(sock)
    return held


async def test_healthz_answers_while_hundreds_of_half_open_connections_are_held() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVE_WITH_FEW_DESCRIPTORS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    held: list[socket.socket] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        assert proc.stderr is not None
        port = int(await asyncio.wait_for(proc.stderr.readline(), 30))
        # Keep reading what it says (accept errors, if any) so a full pipe never blocks it.
        drain = asyncio.create_task(proc.stderr.read())
        held = await asyncio.to_thread(_open_half_requests, port, 400)
        assert len(held) >= 300
        await asyncio.sleep(0.5)  # let the server accept what it will
        started = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        assert time.monotonic() - started < 2.0
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        await proc.wait()
        if drain is not None:
            await drain


async def test_a_connection_that_never_finishes_its_head_is_closed(source: FakeSource) -> None:
    async with HttpServer("127.0.0.1:0", source, CollectorRegistry(), header_timeout_s=0.3) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(3):
            rest = await reader.read()  # EOF (or a reset) when the server gives up on us
        assert rest == b""
        assert 0.2 < time.monotonic() - started < 2.0
        assert srv.guard.timed_out == 1
        writer.close()


async def test_beyond_the_connection_cap_the_oldest_incomplete_one_goes(source: FakeSource) -> None:
    async with HttpServer("127.0.0.1:0", source, CollectorRegistry(), max_connections=5) as srv:
        held = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(20)]
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(url(srv, "/healthz")) as resp,
        ):
            assert resp.status == 200
        assert srv.guard.open_connections <= 5
        assert srv.guard.evicted >= 15
        for _, writer in held:
            writer.close()


# ---------------------------------------------------------------------------------------------
# Authorization: bearer tokens checked with TokenReview + SubjectAccessReview
# ---------------------------------------------------------------------------------------------

PROMETHEUS = "system:serviceaccount:monitoring:prometheus"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[SimCluster, Path]]:
    cluster = SimCluster()
    await cluster.start()
    reviews = cluster.server.reviews
    reviews.add_token("prom-token", PROMETHEUS, groups=("system:serviceaccounts",))
    reviews.add_token("dev-token", "dev")
    reviews.allow(verb="get", path="/metrics", user=PROMETHEUS)
    reviews.allow(verb="get", path="/status", user=PROMETHEUS)
    kubeconfig = tmp_path / "kubeconfig"
    cluster.write_kubeconfig(kubeconfig)
    try:
        yield cluster, kubeconfig
    finally:
        await cluster.stop()


@pytest.fixture
async def guarded(
    sim: tuple[SimCluster, Path], source: FakeSource, metrics: Metrics
) -> AsyncIterator[tuple[HttpServer, KubernetesAuthorizer]]:
    authorizer = await build_authorizer("kubernetes", sim[1])
    assert isinstance(authorizer, KubernetesAuthorizer)
    try:
        async with HttpServer("127.0.0.1:0", source, metrics.registry, authorizer=authorizer) as srv:
            yield srv, authorizer
    finally:
        await authorizer.close()


async def _get(client: aiohttp.ClientSession, srv: HttpServer, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.get(url(srv, path), headers=headers) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize("path", ["/metrics", "/status"])
async def test_inventory_paths_need_a_token_the_cluster_allows(
    guarded: tuple[HttpServer, KubernetesAuthorizer], client: aiohttp.ClientSession, path: str
) -> None:
    srv, _ = guarded
    assert await _get(client, srv, path) == 401
    assert await _get(client, srv, path, "made-up") == 401
    assert await _get(client, srv, path, "dev-token") == 403
    assert await _get(client, srv, path, "prom-token") == 200


async def test_probes_stay_open_without_a_token(
    guarded: tuple[HttpServer, KubernetesAuthorizer], client: aiohttp.ClientSession
) -> None:
    srv, authorizer = guarded
    assert await _get(client, srv, "/healthz") == 200
    assert await _get(client, srv, "/readyz") == 200
    assert authorizer.reviews == 0


async def test_decisions_are_cached_briefly_per_token_and_path(
    sim: tuple[SimCluster, Path],
    guarded: tuple[HttpServer, KubernetesAuthorizer],
    client: aiohttp.ClientSession,
) -> None:
    srv, _ = guarded
    reviews = sim[0].server.reviews
    for _ in range(5):
        assert await _get(client, srv, "/metrics", "prom-token") == 200
        assert await _get(client, srv, "/metrics", "made-up") == 401
    assert reviews.token_reviews == 2
    assert reviews.access_reviews == 1


async def test_cache_expires_so_a_revoked_grant_stops_working(sim: tuple[SimCluster, Path]) -> None:
    cluster, kubeconfig = sim
    now = [0.0]
    authorizer = KubernetesAuthorizer(
        await make_api_client(kubeconfig, None), ttl_s=10.0, clock=lambda: now[0]
    )
    try:
        assert (await authorizer.authorize("prom-token", "/metrics")).allowed
        cluster.server.reviews.grants.clear()
        now[0] = 5.0
        assert (await authorizer.authorize("prom-token", "/metrics")).allowed  # cached
        now[0] = 11.0
        decision = await authorizer.authorize("prom-token", "/metrics")
        assert decision.status == 403 and decision.user == PROMETHEUS
    finally:
        await authorizer.close()


async def test_unreachable_api_server_is_503_not_a_denial_and_not_cached(
    sim: tuple[SimCluster, Path],
    guarded: tuple[HttpServer, KubernetesAuthorizer],
    client: aiohttp.ClientSession,
) -> None:
    cluster, _ = sim
    srv, _ = guarded
    await cluster.server.stop()
    assert await _get(client, srv, "/metrics", "prom-token") == 503


async def test_auto_mode_has_no_authorizer_off_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert await build_authorizer("auto") is None
    assert await build_authorizer("none") is None
