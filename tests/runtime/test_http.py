"""The HTTP endpoints, served by the real aiohttp server on 127.0.0.1:0 and read by aiohttp's client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from noderescue.metrics import Metrics
from noderescue.runtime.http import HttpServer, LoopHeartbeat, parse_bind


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
