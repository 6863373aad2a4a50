"""The daemon's HTTP endpoints (DESIGN §6): ``/healthz``, ``/readyz``, ``/metrics``, ``/status``.

The server knows nothing about clusters: readiness and status come through the
:class:`StatusSource` seam the reconciler implements. Liveness is the event loop's own: a
heartbeat task stamps the loop clock; when the stamp is older than ``max_heartbeat_age_s``
(the loop was blocked or starved), ``/healthz`` says 503 so a supervisor restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from noderescue.metrics import REGISTRY

log = structlog.get_logger(__name__)

DEFAULT_BIND = "127.0.0.1:9478"
HEARTBEAT_TASK_NAME = "http-loop-heartbeat"


class StatusSource(Protocol):
    """What the HTTP server asks the daemon (implemented by the runtime's app)."""

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, reasons not ready): config loaded, every cluster synced, leader or standby."""
        ...

    def status(self) -> Mapping[str, object]:
        """The ``/status`` document: per cluster, per node health, class, record, gate reasons."""
        ...


def parse_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9478"``, ``"[::1]:9478"``, ``":9478"`` (all interfaces) -> (host, port)."""
    host, sep, port_text = bind.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {bind!r} has no port; use host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bind address {bind!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bind address {bind!r}: port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


class LoopHeartbeat:
    """Stamps the loop clock every ``interval_s`` from a task; ``age()`` is how stale it is."""

    def __init__(self, *, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._task = loop.create_task(self._run(), name=HEARTBEAT_TASK_NAME)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def age(self) -> float:
        """Seconds since the last beat (infinite before ``start()``)."""
        if self._last is None:
            return float("inf")
        return asyncio.get_running_loop().time() - self._last

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            self._last = loop.time()


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status, content_type="application/json")


class HttpServer:
    """``async with HttpServer(bind, source) as srv:`` serves until the block exits; ``srv.port``
    is the bound port (useful with port 0)."""

    def __init__(
        self,
        bind: str,
        source: StatusSource,
        registry: CollectorRegistry = REGISTRY,
        *,
        heartbeat_interval_s: float = 1.0,
        max_heartbeat_age_s: float = 10.0,
    ) -> None:
        self.host, self._requested_port = parse_bind(bind)
        self._source = source
        self._registry = registry
        self._max_heartbeat_age_s = max_heartbeat_age_s
        self.heartbeat = LoopHeartbeat(interval_s=heartbeat_interval_s)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HttpServer is not started")
        return self._port

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        return app

    async def start(self) -> None:
        self.heartbeat.start()
        # access_log=None: probes hit /healthz every few seconds; those lines are noise.
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.heartbeat.stop()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("http_server_started", host=self.host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.heartbeat.stop()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _healthz(self, _request: web.Request) -> web.Response:
        age = self.heartbeat.age()
        healthy = age <= self._max_heartbeat_age_s
        body = {"healthy": healthy, "loop_heartbeat_age_s": round(age, 3)}
        return _json(body, 200 if healthy else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        try:
            ready, reasons = self._source.readiness()
        except Exception as exc:
            # A bug in the readiness check must read as "not ready", not as a crashed endpoint.
            log.exception("readiness_check_failed")
            ready, reasons = False, [f"readiness check failed: {type(exc).__name__}"]
        return _json({"ready": ready, "reasons": list(reasons)}, 200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _status(self, _request: web.Request) -> web.Response:
        try:
            document = self._source.status()
        except Exception as exc:
            log.exception("status_document_failed")
            return _json({"error": f"status failed: {type(exc).__name__}"}, 500)
        return _json(document, 200)
