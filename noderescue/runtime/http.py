"""The daemon's HTTP endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/status``.

The server knows nothing about clusters: readiness and status come through the
:class:`StatusSource` seam the reconciler implements. Liveness is the event loop's own: a
heartbeat task stamps the loop clock; when the stamp is older than ``max_heartbeat_age_s``
(the loop was blocked or starved), ``/healthz`` says 503 so a supervisor restarts the process.

``/metrics`` and ``/status`` hand out the node inventory and instance ids: with an
:class:`Authorizer` (in-cluster by default) they need a Kubernetes bearer token that a
TokenReview accepts and a SubjectAccessReview allows ``get`` on the path, the way
controller-runtime protects its metrics endpoint. ``/healthz`` and ``/readyz`` stay open: the
kubelet's probes carry no token.

Slow or idle clients cannot starve the probes: every connection must deliver its request head
within ``header_timeout_s``, and beyond ``max_connections`` the longest-waiting incomplete
connection is closed to make room (see :class:`ConnectionGuard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import orjson
import structlog
from aiohttp import web
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from noderescue.adapters.kube.client import make_api_client
from noderescue.adapters.kube.errors import KubeError
from noderescue.adapters.kube.transport import request_json
from noderescue.metrics import REGISTRY

log = structlog.get_logger(__name__)

DEFAULT_BIND = "127.0.0.1:9478"
HEARTBEAT_TASK_NAME = "http-loop-heartbeat"
# Paths that hand out the inventory: behind the authorizer when there is one.
PROTECTED_PATHS = frozenset({"/metrics", "/status"})
# A scrape or a probe sends its request head in one packet; 5 s is generous even across a WAN.
DEFAULT_HEADER_TIMEOUT_S = 5.0
# Prometheus, two probes and an operator's curl need a handful; the rest is an attack.
DEFAULT_MAX_CONNECTIONS = 128
# Idle keep-alive connections go after this (aiohttp's default is an hour).
DEFAULT_KEEPALIVE_TIMEOUT_S = 30.0
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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
    # Bandit B104 is silenced below: ":port" is the caller asking for every interface; the
    # default is loopback.
    return host or "0.0.0.0", port  # nosec B104


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


# ------------------------------------------------------------------------------------------------
# Connection guard: slow or idle clients cannot use up the server
# ------------------------------------------------------------------------------------------------


class _Conn:
    __slots__ = ("expiry", "last_activity", "pending_since", "tail", "transport")

    def __init__(self, transport: asyncio.BaseTransport, now: float) -> None:
        self.transport = transport
        self.pending_since: float | None = now  # a request head is awaited since then
        self.last_activity = now
        self.tail = b""
        self.expiry: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Bounds what connections may hold: a request head must arrive within ``header_timeout_s``
    (of connecting, or of the first byte of the next request on a kept-alive connection), and at
    most ``max_connections`` are open; a new one beyond that closes the longest-waiting
    incomplete one (or, when every connection is complete, the least recently active). A probe
    sends its head at once, so it is never the one evicted by a slowloris flood."""

    def __init__(self, *, max_connections: int, header_timeout_s: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self._conns: dict[int, _Conn] = {}
        self.timed_out = 0
        self.evicted = 0

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(inner(), self)

    def opened(self, key: int, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        conn = _Conn(transport, loop.time())
        self._conns[key] = conn
        self._arm(key, conn)
        if len(self._conns) > self.max_connections:
            victim_key = min(
                (k for k in self._conns if k != key),
                key=lambda k: (
                    self._conns[k].pending_since is None,
                    self._conns[k].pending_since or self._conns[k].last_activity,
                ),
            )
            self.evicted += 1
            self._abort(victim_key)

    def received(self, key: int, data: bytes) -> None:
        conn = self._conns.get(key)
        if conn is None:
            return
        now = asyncio.get_running_loop().time()
        conn.last_activity = now
        window = conn.tail + data
        end = window.rfind(b"\r\n\r\n")
        if end >= 0:
            # A head is complete; bytes after it start the next request (pipelining) or a body.
            rest = window[end + 4 :]
            conn.pending_since = now if rest else None
            conn.tail = rest[-3:]
        else:
            if conn.pending_since is None:
                conn.pending_since = now
            conn.tail = window[-3:]
        self._arm(key, conn)

    def closed(self, key: int) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None and conn.expiry is not None:
            conn.expiry.cancel()

    def _arm(self, key: int, conn: _Conn) -> None:
        if conn.expiry is not None:
            conn.expiry.cancel()
            conn.expiry = None
        if conn.pending_since is not None:
            conn.expiry = asyncio.get_running_loop().call_at(
                conn.pending_since + self.header_timeout_s, self._expire, key
            )

    def _expire(self, key: int) -> None:
        if key in self._conns:
            self.timed_out += 1
            self._abort(key)

    def _abort(self, key: int) -> None:
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        if conn.expiry is not None:
            conn.expiry.cancel()
        # abort(), not close(): nothing is owed to a client that never finished its request.
        transport = conn.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


class _GuardedProtocol(asyncio.Protocol):
    """Passes every callback to aiohttp's protocol and tells the guard what it saw."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._key = id(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        self._guard.opened(self._key, transport)

    def data_received(self, data: bytes) -> None:
        self._guard.received(self._key, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self._key)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None  # the runner is set up before its sites start
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
        )


# ------------------------------------------------------------------------------------------------
# Authorization: Kubernetes bearer tokens, TokenReview + SubjectAccessReview
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """``status`` is the HTTP answer: 200 allowed, 401 no or unknown token, 403 not allowed."""

    status: Literal[200, 401, 403]
    user: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


class AuthUnavailable(Exception):
    """The authorizer could not decide (API server unreachable): 503, not a denial."""


class AuthSetupError(Exception):
    """``http.auth`` asks for token reviews but no client for them can be made (no service
    account token in the pod, a broken ``authKubeconfig``)."""


class Authorizer(Protocol):
    async def authorize(self, token: str | None, path: str) -> AuthDecision: ...


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class KubernetesAuthorizer:
    """Who holds the token (TokenReview), and may they ``get`` the path (SubjectAccessReview on
    the non-resource URL), as controller-runtime's metrics filter and kube-rbac-proxy ask.

    Decisions are cached for ``ttl_s`` by a hash of the token (never the token itself), at most
    ``max_entries`` of them; failures to ask are not cached. At most ``max_in_flight`` reviews
    run at once, so a flood of made-up tokens cannot turn into a flood on the API server.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        ttl_s: float = 10.0,
        max_entries: int = 1024,
        max_in_flight: int = 4,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._timeout_s = timeout_s
        self._clock = clock
        self._cache: OrderedDict[tuple[bytes, str], tuple[float, AuthDecision]] = OrderedDict()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.reviews = 0  # TokenReviews sent (tests and the curious)

    async def close(self) -> None:
        await self._api.close()

    async def authorize(self, token: str | None, path: str) -> AuthDecision:
        if not token:
            return AuthDecision(401, None, "no bearer token")
        key = (hashlib.sha256(token.encode()).digest(), path)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        async with self._in_flight:
            decision = await self._review(token, path)
        self._cache[key] = (self._clock() + self._ttl_s, decision)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return decision

    async def _review(self, token: str, path: str) -> AuthDecision:
        self.reviews += 1
        try:
            review = await request_json(
                self._api,
                "POST",
                TOKEN_REVIEWS,
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
                timeout_s=self._timeout_s,
            )
            status = _mapping(review.get("status"))
            if status.get("authenticated") is not True:
                return AuthDecision(401, None, "token not accepted by the API server")
            user = _mapping(status.get("user"))
            username = str(user.get("username", ""))
            spec: dict[str, object] = {
                "user": username,
                "groups": user.get("groups") or [],
                "nonResourceAttributes": {"path": path, "verb": "get"},
            }
            if user.get("uid"):
                spec["uid"] = user["uid"]
            if user.get("extra"):
                spec["extra"] = user["extra"]
            access = await request_json(
                self._api,
                "POST",
                SUBJECT_ACCESS_REVIEWS,
                body={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
                timeout_s=self._timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except (KubeError, TimeoutError, OSError) as exc:
            raise AuthUnavailable(type(exc).__name__) from exc
        if _mapping(access.get("status")).get("allowed") is True:
            return AuthDecision(200, username, "allowed")
        return AuthDecision(403, username, f"{username} may not get {path}")


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def in_cluster() -> bool:
    """Running in a pod with a service account token (where TokenReview can be asked)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.is_file()


AuthMode = Literal["auto", "none", "kubernetes"]


async def build_authorizer(mode: AuthMode, kubeconfig: Path | None = None) -> KubernetesAuthorizer | None:
    """The authorizer the configuration asks for: ``auto`` is ``kubernetes`` in a pod, ``none``
    elsewhere (a systemd host binds 127.0.0.1 by default). ``kubeconfig`` names the cluster that
    reviews tokens (None: the pod's own service account)."""
    if mode == "none" or (mode == "auto" and kubeconfig is None and not in_cluster()):
        return None
    try:
        api = await make_api_client(kubeconfig, None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "the pod's service account"
        raise AuthSetupError(
            f"http.auth {mode}: cannot reach the API server that reviews tokens through {where}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return KubernetesAuthorizer(api)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


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
        authorizer: Authorizer | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S,
    ) -> None:
        self.host, self._requested_port = parse_bind(bind)
        self._source = source
        self._registry = registry
        self._authorizer = authorizer
        self.guard = ConnectionGuard(max_connections=max_connections, header_timeout_s=header_timeout_s)
        self._keepalive_timeout_s = keepalive_timeout_s
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
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        return app

    async def start(self) -> None:
        self.heartbeat.start()
        # access_log=None: probes hit /healthz every few seconds; those lines are noise.
        runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._keepalive_timeout_s,
            # Nothing we serve needs more; aiohttp's defaults are 8 KiB lines and 128 headers.
            max_line_size=4096,
            max_field_size=4096,
            max_headers=64,
        )
        await runner.setup()
        try:
            site = _GuardedSite(runner, self.host, self._requested_port, self.guard)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.heartbeat.stop()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info(
            "http_server_started",
            host=self.host,
            port=self._port,
            auth="kubernetes" if self._authorizer is not None else "none",
        )

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

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._authorizer is None or request.path not in PROTECTED_PATHS:
            return await handler(request)
        try:
            decision = await self._authorizer.authorize(_bearer(request), request.path)
        except AuthUnavailable as exc:
            log.warning("http_auth_unavailable", path=request.path, error=str(exc))
            return _json({"error": "cannot check the token now"}, 503)
        if decision.allowed:
            return await handler(request)
        # 401 at debug: anyone who can connect can send garbage tokens; 403 is a real identity.
        (log.info if decision.status == 403 else log.debug)(
            "http_request_denied", path=request.path, status=decision.status, user=decision.user
        )
        headers = {"WWW-Authenticate": 'Bearer realm="noderescue"'} if decision.status == 401 else None
        body = {"error": "Unauthorized" if decision.status == 401 else "Forbidden"}
        return web.Response(
            body=orjson.dumps(body), status=decision.status, content_type="application/json", headers=headers
        )

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
