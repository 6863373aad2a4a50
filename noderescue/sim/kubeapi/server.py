"""The emulated Kubernetes API server (aiohttp, plain HTTP on loopback).

One catch-all route parses Kubernetes paths; one middleware applies faults and writes the audit
log. Objects live in `Store`; the cluster dynamics (noderescue.sim.cluster) react to writes
through the store's write hooks and to time through `deletions.schedule`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from noderescue.sim.audit import AuditLog
from noderescue.sim.faults import Faults, FaultSignal
from noderescue.sim.kubeapi import discovery
from noderescue.sim.kubeapi.admin import apply_fault_request, describe_faults
from noderescue.sim.kubeapi.deletion import Deletions
from noderescue.sim.kubeapi.patch import apply_patch
from noderescue.sim.kubeapi.resources import (
    CONFIGMAPS,
    NAMESPACES,
    PODS,
    ResourceType,
    lookup,
)
from noderescue.sim.kubeapi.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from noderescue.sim.kubeapi.status import (
    ApiError,
    StatusBody,
    bad_request,
    internal_error,
    method_not_allowed,
    not_found,
    success,
)
from noderescue.sim.kubeapi.store import Entry, Store
from noderescue.sim.kubeapi.table import to_table, wants_table
from noderescue.sim.kubeapi.timestamps import rfc3339
from noderescue.sim.kubeapi.validation import validate_configmap
from noderescue.sim.kubeapi.views import entry_matches, render, stored_shape, view
from noderescue.sim.kubeapi.watch import WatchRequest, WatchStream

log = structlog.get_logger("noderescue.sim.kubeapi")

AdminAction = Callable[[str, dict[str, Any]], Any]

_CREATED_NAME = web.RequestKey("created_name", str)
_MUTATING_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_MAX_REQUEST_BODY = 3 * 1024 * 1024
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str | None) -> bool:
    """Go's strconv.ParseBool (kubernetes-asyncio sends watch=True)."""
    if text is None or text == "":
        return False
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad_request(f'strconv.ParseBool: parsing "{text}": invalid syntax')


@dataclass(frozen=True, slots=True)
class Target:
    """What a request path names."""

    res: ResourceType
    namespace: str | None  # None: all namespaces (collection) or cluster-scoped
    name: str | None
    subresource: str | None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error_response(err: ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    return _json(err.body(), err.code, headers)


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": rv, "start": list(key)})).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError, orjson.JSONDecodeError) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from None


class KubeApiServer:
    def __init__(
        self,
        store: Store,
        *,
        faults: Faults | None = None,
        audit: AuditLog | None = None,
        bookmark_interval_s: float = 5.0,
        watch_default_timeout_s: float = 1800.0,
        hang_s: float = 120.0,
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.audit = audit
        self.bookmark_interval_s = bookmark_interval_s
        self.watch_default_timeout_s = watch_default_timeout_s
        self.hang_s = hang_s  # how long an injected "timeout" fault holds a request unanswered
        self.deletions = Deletions(store)
        self.admin_actions: dict[str, AdminAction] = {}
        self.url = ""
        # The real server reads request bodies up to 3 MB (and then validates sizes itself, e.g.
        # 422 for a ConfigMap over 1 MiB); aiohttp's default would answer 413 above 1 MiB.
        self.app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_REQUEST_BODY)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reopen: asyncio.TimerHandle | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # handler_cancellation: a client that goes away ends its watch (or its injected
        # "timeout" hang) at once instead of at the next bookmark tick.
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        self._host = host
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        self._port = self._site.port
        self.url = f"http://{host}:{self._port}"
        self.faults.subscribe(self._on_fault)
        log.info("kubeapi_started", url=self.url)
        return self.url

    async def stop(self) -> None:
        self.faults.unsubscribe(self._on_fault)
        self._stopping.set()
        if self._reopen is not None:
            self._reopen.cancel()
        self.store.close_watchers("stopped")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("kubeapi_stopped", url=self.url)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- faults ------------------------------------------------------------------------------

    def _on_fault(self, signal: FaultSignal) -> None:
        if signal == "watch_disconnect":
            self.store.close_watchers("disconnect")
        elif signal == "force_410":
            self.store.compact()
            self.store.close_watchers("expired")
        elif signal == "outage":
            if self.faults.in_outage():
                self._spawn(self._begin_outage())
            else:
                self._spawn(self._end_outage())

    async def _begin_outage(self) -> None:
        if self._site is not None and self._runner is not None:
            await self._site.stop()
            self._site = None
        self.store.close_watchers("disconnect")
        if self._runner is not None and self._runner.server is not None:
            for conn in list(self._runner.server.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        if self._reopen is not None:
            self._reopen.cancel()
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(
            self.faults.outage_remaining_s(), lambda: self._spawn(self._end_outage())
        )
        log.info("kubeapi_outage_started", for_s=round(self.faults.outage_remaining_s(), 3))

    async def _end_outage(self) -> None:
        if self.faults.in_outage() or self._site is not None or self._runner is None:
            return
        self.faults.outage_until = None
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            # Someone took the port meanwhile: clients keep seeing an outage; retry shortly.
            log.error("kubeapi_reopen_failed", port=self._port, error=str(exc))
            await site.stop()
            self._reopen = asyncio.get_running_loop().call_later(0.5, lambda: self._spawn(self._end_outage()))
            return
        self._site = site
        log.info("kubeapi_outage_ended")

    async def _inject(self, request: web.Request) -> web.StreamResponse | None:
        faults = self.faults
        if faults.in_outage():
            # A request that raced the listener closing: drop the connection like a dead server.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if faults.latency_s > 0:
            await asyncio.sleep(faults.latency_s)
        code = faults.draw_api_error()
        if code is None:
            return None
        if code == "timeout":
            try:
                async with asyncio.timeout(self.hang_s):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            return _error_response(
                ApiError(504, "Timeout", "Timeout: request did not complete within requested timeout")
            )
        if code == 429:
            return _error_response(
                ApiError(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    {"retryAfterSeconds": faults.retry_after_s},
                    retry_after_s=faults.retry_after_s,
                )
            )
        if code == 503:
            return _error_response(
                ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            )
        return _error_response(internal_error("injected fault"))

    # ---- middleware: faults, errors, audit --------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        admin = request.path.startswith("/_sim/")
        response: web.StreamResponse | None = None
        try:
            if not admin:
                response = await self._inject(request)
            if response is None:
                response = await handler(request)
        except ApiError as err:
            response = _error_response(err)
        except orjson.JSONDecodeError as exc:
            response = _error_response(bad_request(f"invalid JSON body: {exc}"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A body of the wrong shape (a string where an object belongs...): the real server
            # answers 400 too; the traceback helps whoever extends the emulator.
            log.warning("kubeapi_bad_request", path=request.path, error=repr(exc))
            response = _error_response(bad_request(f"the request could not be processed: {exc!r}"))
        if not admin and request.method in _MUTATING_VERBS and self.audit is not None:
            self._audit(request, response.status)
        return response

    def _audit(self, request: web.Request, code: int) -> None:
        assert self.audit is not None
        try:
            target = self._parse_target(request.path)
        except ApiError:
            target = None
        if target is None:
            return
        verb = _MUTATING_VERBS[request.method]
        if verb == "delete" and target.name is None:
            verb = "deletecollection"
        name = target.name or ""
        if verb == "create" and not name:
            name = request.get(_CREATED_NAME, "")
        self.audit.write(
            api="kubernetes",
            verb=verb,
            resource=target.res.plural,
            name=name,
            namespace=target.namespace,
            subresource=target.subresource,
            code=code,
            user_agent=request.headers.get("User-Agent", ""),
        )

    # ---- routing -----------------------------------------------------------------------------

    def _parse_target(self, path: str) -> Target | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = lookup(group, version, rest[0])
        if res is None or (namespace is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) >= 3 else None
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(res, namespace, name, sub)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            return await self._admin(request, path)
        static = self._discovery(path)
        if static is not None:
            return static
        target = self._parse_target(path)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        if request.can_read_body and "protobuf" in request.content_type:
            # The emulator speaks JSON only. kubectl create/replace send protobuf bodies for
            # built-in types and do not fall back; every client we serve (kubernetes-asyncio,
            # kubectl get/cordon/drain/annotate/label/taint/delete) sends JSON.
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the emulated API server accepts JSON bodies only (got {request.content_type})",
            )
        if target.name is None:
            if method == "GET":
                if parse_bool(request.query.get("watch")):
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return await self._delete_collection(request, target)
            raise method_not_allowed()
        if target.subresource not in (None, "status", "eviction"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "eviction":
            if method != "POST" or target.res is not PODS:
                raise method_not_allowed()
            return await self._evict(request, target)
        if method == "GET":
            return self._get(request, target)
        if method == "PUT":
            return await self._update(request, target)
        if method == "PATCH":
            return await self._patch(request, target)
        if method == "DELETE":
            return await self._delete(request, target)
        raise method_not_allowed()

    def _discovery(self, path: str) -> web.Response | None:
        if path == "/version":
            return _json(discovery.version_info())
        if path == "/api":
            return _json(discovery.api_versions(f"{self._host}:{self._port}"))
        if path == "/apis":
            return _json(discovery.api_group_list())
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        parts = [p for p in path.split("/") if p]
        doc: dict[str, Any] | None = None
        if parts == ["api", "v1"]:
            doc = discovery.api_resource_list("", "v1")
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.api_resource_list(parts[1], parts[2])
        elif parts and parts[0] == "openapi":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            return None
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    # ---- helpers -----------------------------------------------------------------------------

    def _namespace_of(self, target: Target) -> str:
        return (target.namespace or "default") if target.res.namespaced else ""

    def _require_namespace(self, namespace: str) -> None:
        if namespace and self.store.entry(NAMESPACES, "", namespace) is None:
            raise not_found("namespaces", "", namespace)

    def _selectors(self, request: web.Request, res: ResourceType) -> tuple[LabelSelector, FieldSelector]:
        return (
            parse_label_selector(request.query.get("labelSelector")),
            parse_field_selector(request.query.get("fieldSelector"), res.plural),
        )

    def _read_body(self, raw: bytes) -> Any:
        if not raw:
            raise bad_request("the request body is empty")
        return orjson.loads(raw)

    # ---- list / get --------------------------------------------------------------------------

    def _filtered(
        self, target: Target, labels: LabelSelector, fields: FieldSelector
    ) -> list[tuple[tuple[str, str], Entry]]:
        res = target.res
        namespace = target.namespace if res.namespaced else None
        name_hint = fields.wanted("metadata.name")
        node_hint = fields.wanted("spec.nodeName") if res is PODS else None
        candidates: Iterable[tuple[tuple[str, str], Entry]]
        if name_hint is not None and (namespace is not None or not res.namespaced):
            entry = self.store.entry(res, namespace or "", name_hint)
            candidates = [] if entry is None else [((namespace or "", name_hint), entry)]
        elif node_hint:
            keys = self.store.pods_on_node(node_hint)
            found = ((k, self.store.entry(res, k[0], k[1])) for k in keys if namespace in (None, k[0]))
            candidates = [(k, e) for k, e in found if e is not None]
        else:
            candidates = self.store.items(res, namespace)
        selected = [(k, e) for k, e in candidates if entry_matches(e, k, labels, fields)]
        selected.sort(key=lambda item: item[0])
        return selected

    def _list(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        query = request.query
        labels, fields = self._selectors(request, res)
        self.store.before_read(res, target.namespace, None)
        list_rv = self.store.rv
        rv_text = query.get("resourceVersion", "")
        if rv_text not in ("", "0") and query.get("resourceVersionMatch") == "Exact":
            self._check_rv(res, rv_text)
        selected = self._filtered(target, labels, fields)
        token = query.get("continue", "")
        if token:
            token_rv, start = _decode_continue(token)
            if token_rv < self.store.compacted_rv(res):
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                )
            selected = [item for item in selected if item[0] > start]
            # Every page of a list is "as of" its first page (as the real server's snapshot
            # reads): a client watches from that version and so replays changes made to
            # objects on pages it already received. Reporting the current version instead
            # would make it skip them forever.
            list_rv = token_rv
        limit = int(query.get("limit") or 0)
        next_token = ""
        remaining = 0
        if limit > 0 and len(selected) > limit:
            remaining = len(selected) - limit
            selected = selected[:limit]
            next_token = _encode_continue(list_rv, selected[-1][0])
        if wants_table(request.headers.get("Accept", "")):
            objects = [orjson.loads(render(res, e)) for _, e in selected]
            table = to_table(
                res.plural,
                objects,
                resource_version=str(list_rv),
                include_object=query.get("includeObject", "PartialObjectMetadata"),
                continue_token=next_token,
            )
            return _json(table)
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if next_token:
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        head = orjson.dumps({"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta})
        body = head[:-1] + b',"items":[' + b",".join(render(res, e) for _, e in selected) + b"]}"
        return web.Response(body=body, content_type="application/json")

    def _check_rv(self, res: ResourceType, rv_text: str) -> int:
        try:
            rv = int(rv_text)
        except ValueError:
            raise bad_request(f"invalid resource version: {rv_text}") from None
        self.store.check_not_expired(res, rv)
        return rv

    def _get(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        namespace = self._namespace_of(target)
        assert target.name is not None
        self.store.before_read(res, namespace, target.name)
        entry = self.store.entry(res, namespace, target.name)
        if entry is None:
            raise not_found(res.plural, res.group, target.name)
        if wants_table(request.headers.get("Accept", "")):
            obj = orjson.loads(render(res, entry))
            return _json(
                to_table(
                    res.plural,
                    [obj],
                    resource_version=str(entry.rv),
                    include_object=request.query.get("includeObject", "PartialObjectMetadata"),
                )
            )
        return web.Response(body=render(res, entry), content_type="application/json")

    # ---- watch -------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        res = target.res
        query = request.query
        labels, fields = self._selectors(request, res)
        rv_text = query.get("resourceVersion", "")
        since: int | None = None
        if rv_text not in ("", "0"):
            try:
                since = int(rv_text)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv_text}") from None
        namespace = target.namespace if res.namespaced else None
        self.store.before_read(res, namespace, None)
        table = None
        if wants_table(request.headers.get("Accept", "")):
            table = query.get("includeObject", "PartialObjectMetadata")
        watch = WatchRequest(
            res=res,
            namespace=namespace,
            labels=labels,
            fields=fields,
            since=since,
            timeout_s=float(query.get("timeoutSeconds") or self.watch_default_timeout_s),
            bookmarks=parse_bool(query.get("allowWatchBookmarks")),
            table=table,
            send_initial_events=parse_bool(query.get("sendInitialEvents")),
        )
        if watch.send_initial_events:
            watch.since = None  # the initial events are the state now, whatever version was given
        # The current state is read in the same loop turn as the subscription: nothing slips between.
        current = self._filtered(target, labels, fields) if watch.since is None else []
        stream = WatchStream(self.store, watch, bookmark_interval_s=self.bookmark_interval_s)
        return await stream.serve(request, current)

    # ---- create / update / patch -------------------------------------------------------------

    async def _create(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        body = self._read_body(await request.read())
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        self._validate(res, body)
        if self._dry_run(request):
            return _json(body, 201)
        obj = stored_shape(res, body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            namespace = target.namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and target.namespace and meta["namespace"] != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            self._require_namespace(namespace)
        if res.bucket == "events":
            obj.setdefault("firstTimestamp", obj.get("lastTimestamp") or rfc3339())
            obj.setdefault("lastTimestamp", obj["firstTimestamp"])
            obj.setdefault("count", 1)
        created = self.store.create(res, obj)
        request[_CREATED_NAME] = created["metadata"]["name"]
        return _json(view(res, created), 201)

    @staticmethod
    def _validate(res: ResourceType, obj: dict[str, Any]) -> None:
        """The real server's validation of the object about to be stored (ConfigMaps so far)."""
        if res is CONFIGMAPS:
            validate_configmap(obj)

    def _dry_run(self, request: web.Request) -> bool:
        return bool(request.query.get("dryRun"))

    def _keep_status(
        self, res: ResourceType, subresource: str | None, old: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """The main resource ignores status changes and /status ignores everything else, as for
        real Nodes and Pods."""
        if not res.status_subresource:
            return new
        if subresource == "status":
            merged = dict(old)
            merged["status"] = new.get("status", {})
            return merged
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
        return new

    async def _update(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        assert target.name is not None
        namespace = self._namespace_of(target)
        body = self._read_body(await request.read())
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        new = stored_shape(res, body)
        old = self.store.require(res, namespace, target.name)
        meta = new.setdefault("metadata", {})
        if meta.get("name", target.name) != target.name:
            raise bad_request("the name of the object does not match the name on the URL")
        meta["name"] = target.name
        if res.namespaced:
            meta["namespace"] = namespace
        expect = str(meta.get("resourceVersion") or "")
        new = self._keep_status(res, target.subresource, old, new)
        self._validate(res, new)
        if self._dry_run(request):
            return _json(view(res, new))
        updated = self.store.update(res, new, expect_rv=expect or None)
        return _json(view(res, updated))

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        assert target.name is not None
        namespace = self._namespace_of(target)
        patch = self._read_body(await request.read())
        old = self.store.require(res, namespace, target.name)
        shown = view(res, old)
        patched = stored_shape(res, apply_patch(request.content_type, shown, patch))
        meta = patched.setdefault("metadata", {})
        meta["name"] = target.name
        if res.namespaced:
            meta["namespace"] = namespace
        expect = ""
        if isinstance(patch, dict):
            expect = str((patch.get("metadata") or {}).get("resourceVersion") or "")
        patched = self._keep_status(res, target.subresource, old, patched)
        self._validate(res, patched)
        if self._dry_run(request):
            return _json(view(res, patched))
        updated = self.store.update(res, patched, expect_rv=expect or None)
        return _json(view(res, updated))

    # ---- delete / eviction -------------------------------------------------------------------

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        options: dict[str, Any] = orjson.loads(raw) if raw else {}
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = int(request.query["gracePeriodSeconds"])
        return options

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        assert target.name is not None
        namespace = self._namespace_of(target)
        options = await self._delete_options(request)
        if self._dry_run(request):
            return _json(view(res, self.store.require(res, namespace, target.name)))
        remaining, final = self.deletions.delete(res, namespace, target.name, options)
        if remaining is not None:
            return _json(view(res, remaining))
        meta = final["metadata"]
        status: StatusBody = success(
            details={"name": target.name, "group": res.group, "kind": res.plural, "uid": meta.get("uid", "")}
        )
        return _json(status)

    async def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        options = await self._delete_options(request)
        labels, fields = self._selectors(request, res)
        for key, _ in self._filtered(target, labels, fields):
            try:
                self.deletions.delete(res, key[0], key[1], options)
            except ApiError as err:
                if err.code != 404:
                    raise
        return _json(success())

    async def _evict(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None
        namespace = self._namespace_of(target)
        body = self._read_body(await request.read())
        options = (body.get("deleteOptions") if isinstance(body, dict) else None) or {}
        self.deletions.check_eviction(namespace, target.name)
        if not self._dry_run(request):
            self.deletions.delete(PODS, namespace, target.name, options)
        return _json(success(code=201), 201)

    # ---- admin endpoint ----------------------------------------------------------------------

    async def _admin(self, request: web.Request, path: str) -> web.Response:
        if path == "/_sim/faults":
            armed: list[int] = []
            if request.method == "POST":
                body = orjson.loads(await request.read() or b"{}")
                try:
                    armed = apply_fault_request(self.faults, body)
                except ValueError as exc:
                    raise bad_request(str(exc)) from None
            return _json(describe_faults(self.faults) | {"armed": armed})
        parts = path.split("/")[2:]
        if request.method == "POST" and len(parts) >= 1 and parts[0] in self.admin_actions:
            body = orjson.loads(await request.read() or b"{}")
            try:
                result = self.admin_actions[parts[0]]("/".join(parts[1:]), body)
            except KeyError as exc:
                raise ApiError(404, "NotFound", f"unknown: {exc}") from None
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            return _json({"result": result})
        raise ApiError(404, "NotFound", "unknown admin endpoint")
