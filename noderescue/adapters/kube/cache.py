"""The watch cache: Nodes and their kube-node-lease Leases, as slim NodeViews, kept current.

Two streams (Nodes; Leases in ``kube-node-lease``), each: paginated list -> watch from the list's
resourceVersion with bookmarks -> resume from the last seen resourceVersion after a disconnect ->
relist on 410. Every byte goes through orjson straight into the core's ``NodeView``; no
generated model is ever built (FACTS: 2 ms per Node with models, 41 µs without).

Freshness (``synced_at``, the stale-view gate's input) is the older of the two streams' last
confirmations, and only data confirms a stream: a completed list, an event or a bookmark. An open
connection proves nothing (a server can accept a watch and never deliver on it). Real API servers
send a bookmark about once a minute and a quiet cluster sends few events, so a progress probe runs
every ``stale_after_s``/3: a ``LIST`` of Nodes with ``limit=1``, whose resourceVersion is the
store's current revision. A stream that has delivered that revision is current as of the probe.
One that has not is "behind" — normal for a quiet stream until its next bookmark — and the probe
vouches for it (its answer proves the server reachable) until it has been behind and silent for
``stale_after_s``: then the freshness the probe lent it is taken back and the view turns stale.
Behind for longer than the bookmark interval plus a probe interval (and at least staleAfter), its
watch is frozen: the connection is closed and the stream relists; nothing but that completed list
makes a frozen stream fresh again. See docs/freshness.md.

Watches that end at once without delivering anything (an empty 200) or fail back off, jittered
and exponential; no stream is (re)opened more often than every ``min_reopen_interval_s``.

``changed`` is set only on health-relevant changes: a node added or deleted, or its view changed
(conditions' status/reason/transition, unschedulable, labels, providerID, bootID, the record and
cordoned-by annotations — heartbeat-only updates produce an equal view), or a Lease renewal that
makes a stale lease fresh again. A lease turning stale produces no event at all; the planner's
``next_wakeup`` (computed from ``lease_renew``) covers that crossing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import enum
import functools
import gc
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube.client import request_timeout_of
from noderescue.adapters.kube.errors import Expired, KubeError, Unavailable, error_from_response
from noderescue.adapters.kube.nodeview import (
    MalformedObject,
    lease_renew_from_json,
    node_view_from_json,
)
from noderescue.adapters.kube.transport import JsonObject, list_pages, open_response, request_json
from noderescue.core.model import NodeView
from noderescue.metrics import METRICS

log = structlog.get_logger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs ldconfig in a subprocess: once per process, not once per relist.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_heap() -> None:
    """Give the list pages' freed memory back to the OS (glibc keeps it otherwise: the parsed
    pages of a 100,000-node list are hundreds of MiB of small blocks between long-lived views)."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass  # not glibc: nothing to do


class Stream(enum.StrEnum):
    NODES = "nodes"
    LEASES = "leases"


class NodeCache:
    """List+watch of Nodes and node Leases; ``snapshot()`` gives the merged slim views."""

    def __init__(
        self,
        api: ApiClient,
        *,
        cluster: str = "",
        lease_namespace: str = NODE_LEASE_NAMESPACE,
        lease_stale_after_s: float = 40.0,
        watch_timeout_s: float = 290.0,
        # The watchdog for a dead connection: no byte for this long re-opens the watch. Longer
        # than the bookmark interval, or a quiet watch would be re-opened before its bookmark.
        inactivity_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        page_size: int = 5000,  # client-go lists 500 at a time; 100,000 nodes want fewer round trips
        freeze_gc: bool = True,
        clock: Callable[[], float] = time.time,
        stale_after_s: float = 60.0,
        probe_interval_s: float | None = None,  # default stale_after_s / 3
        # How often the API server sends bookmarks (about once a minute for kube-apiserver) until
        # the cadence is measured: a quiet watch is behind the store until its next one, so it
        # is frozen (restarted from a list) only when behind for longer than 1.5 times the
        # cadence plus a probe interval (and never sooner than staleAfter).
        bookmark_interval_s: float = 60.0,
        min_reopen_interval_s: float = 0.25,
    ) -> None:
        self._api = api
        self._cluster = cluster
        self._paths = {
            Stream.NODES: "/api/v1/nodes",
            Stream.LEASES: f"/apis/coordination.k8s.io/v1/namespaces/{lease_namespace}/leases",
        }
        self._lease_stale_after_s = lease_stale_after_s
        self._watch_timeout_s = watch_timeout_s
        self._inactivity_s = inactivity_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._page_size = page_size
        self._freeze_gc = freeze_gc
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._probe_interval_s = (
            probe_interval_s if probe_interval_s is not None else max(0.1, stale_after_s / 3)
        )
        self._min_reopen_interval_s = min_reopen_interval_s
        self._bookmark_interval_s = bookmark_interval_s
        # Gaps between consecutive bookmarks seen on one connection (the server's real cadence).
        self._bookmark_gaps: dict[Stream, deque[float]] = {s: deque(maxlen=4) for s in Stream}
        self._last_bookmark: dict[Stream, float | None] = {Stream.NODES: None, Stream.LEASES: None}

        self._nodes: dict[str, NodeView] = {}
        self._renew: dict[str, float | None] = {}
        self._snapshot: tuple[NodeView, ...] | None = ()
        self._versions: dict[Stream, str | None] = {Stream.NODES: None, Stream.LEASES: None}
        # When data (list, event, bookmark, or a probe the stream had caught up with) last
        # confirmed each stream, and the confirmation in force (that, or a probe's vouching).
        self._data_at: dict[Stream, float | None] = {Stream.NODES: None, Stream.LEASES: None}
        self._confirmed: dict[Stream, float | None] = {Stream.NODES: None, Stream.LEASES: None}
        # The highest resourceVersion each stream has delivered (list, event or bookmark), as an
        # int; None when unknown or not a number (then probes cannot compare and vouch nothing).
        self._delivered: dict[Stream, int | None] = {Stream.NODES: None, Stream.LEASES: None}
        # Probes (time sent, revision) the stream has not caught up with yet, oldest first.
        self._pending: dict[Stream, deque[tuple[float, int]]] = {s: deque() for s in Stream}
        self._frozen: dict[Stream, bool] = {Stream.NODES: False, Stream.LEASES: False}
        self._open: dict[Stream, aiohttp.ClientResponse | None] = {Stream.NODES: None, Stream.LEASES: None}
        self._last_open: dict[Stream, float] = {Stream.NODES: 0.0, Stream.LEASES: 0.0}
        self._delivered_in_last_watch: dict[Stream, bool] = {Stream.NODES: False, Stream.LEASES: False}
        self._listed: set[Stream] = set()
        self._synced = asyncio.Event()
        self._gc_frozen = False
        self.changed = asyncio.Event()  # set on health-relevant changes; the reconciler clears it
        self.reachable = False
        self.relists = 0  # counters for tests and logs
        self.frozen_watches = 0
        self.probes = 0
        self.skipped_malformed = 0

    # ---------------------------------------------------------------- what the runtime reads

    @property
    def synced_at(self) -> float | None:
        """Last time both streams were confirmed current; None before the first full sync."""
        nodes, leases = self._confirmed[Stream.NODES], self._confirmed[Stream.LEASES]
        if nodes is None or leases is None:
            return None
        return min(nodes, leases)

    def snapshot(self) -> tuple[NodeView, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self._nodes.values())
        return self._snapshot

    def get(self, name: str) -> NodeView | None:
        return self._nodes.get(name)

    async def wait_synced(self, timeout_s: float) -> None:
        """Return once both streams have been listed; TimeoutError after ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s):
            await self._synced.wait()

    async def run(self) -> None:
        """List and watch until cancelled."""
        async with asyncio.TaskGroup() as group:
            for stream in Stream:
                group.create_task(self._run_stream(stream), name=f"node-cache-{stream}")
            group.create_task(self._run_probe(), name="node-cache-probe")

    # ---------------------------------------------------------------- the stream loop

    async def _run_stream(self, stream: Stream) -> None:
        failures = 0
        while True:
            await self._pace(stream)
            why = ""
            try:
                if self._versions[stream] is None:
                    await self._list(stream)
                delivered, lasted_s = await self._watch(stream)
                if delivered or lasted_s >= self._inactivity_s:
                    failures = 0  # a working watch, or a quiet one the watchdog re-opens
                    continue
                # Ended at once with nothing in it (an empty 200): proves nothing, and re-opening
                # at once would hammer the API server.
                why = "watch ended without delivering anything"
            except Expired:
                # Our resourceVersion is gone from the server's window: start over from a list.
                log.info("watch_expired_relist", cluster=self._cluster, stream=str(stream))
                self._versions[stream] = None
                if self._delivered_in_last_watch[stream]:
                    failures = 0
                    continue
                why = "watch expired before delivering anything"
            except Exception as exc:
                # Anything else (a transport error, a garbled stream, a bug on a strange object)
                # costs a backoff and a resume, never the cache: a dead cache freezes the daemon.
                if not self._frozen[stream]:
                    self.reachable = False
                why = str(exc) or type(exc).__name__
            failures += 1
            delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** min(failures - 1, 16))
            delay *= random.uniform(0.5, 1.0)
            log.warning(
                "watch_failed",
                cluster=self._cluster,
                stream=str(stream),
                error=why,
                failures=failures,
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _pace(self, stream: Stream) -> None:
        """At most one (re)open per ``min_reopen_interval_s`` per stream, whatever happens."""
        wait = self._last_open[stream] + self._min_reopen_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_open[stream] = time.monotonic()

    async def _list(self, stream: Stream) -> None:
        first_seen = self._clock()
        views: dict[str, NodeView] = {}
        renews: dict[str, float | None] = {}

        def on_page(items: list[JsonObject]) -> None:
            # No confirmation per page: until the last page is in, the old view is still the one
            # in use, and a relist whose later pages keep failing must not make it look fresh.
            if stream is Stream.NODES:
                for obj in items:
                    view = self._parse_node(obj, first_seen)
                    if view is not None:
                        views[view.name] = view
            else:
                for obj in items:
                    parsed = self._parse_lease(obj)
                    if parsed is not None:
                        renews[parsed[0]] = parsed[1]
            if self._freeze_gc and not self._gc_frozen:
                # The first sync builds a heap that lives as long as the process: move it out of
                # the collector's generations page by page, so that collections triggered while
                # it grows don't rescan it again and again (FACTS: ~3x faster with the GC out).
                gc.freeze()

        version = await list_pages(self._api, self._paths[stream], on_page, page_size=self._page_size)
        if not version:
            raise Unavailable(f"{stream} list without a resourceVersion")
        if stream is Stream.NODES:
            self._replace_nodes(views)
        else:
            self._replace_leases(renews)
        self._versions[stream] = version
        if self._frozen[stream]:
            log.info("watch_thawed_by_relist", cluster=self._cluster, stream=str(stream))
        self._frozen[stream] = False  # only a completed list ends a freeze
        self._delivered_rv(stream, version, listed=True)
        self._confirm(stream)
        self.relists += 1
        self._listed.add(stream)
        if len(self._listed) == len(Stream):
            self._synced.set()
            if self._freeze_gc and not self._gc_frozen:
                gc.freeze()
                self._gc_frozen = True  # later relists leave the collector alone
            release_free_heap()

    async def _watch(self, stream: Stream) -> tuple[int, float]:
        """One watch from our version until it ends: (lines delivered, seconds it lasted)."""
        version = self._versions[stream]
        assert version is not None
        query = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            # Jittered so that many streams don't reconnect in lockstep.
            "timeoutSeconds": str(int(self._watch_timeout_s * random.uniform(0.8, 1.0)) or 1),
        }
        connect_s = request_timeout_of(self._api)
        # sock_read is the inactivity watchdog: no byte for that long -> ServerTimeoutError.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_s, sock_connect=connect_s, sock_read=self._inactivity_s
        )
        self._delivered_in_last_watch[stream] = False
        async with asyncio.timeout(connect_s):
            resp = await open_response(
                self._api, "GET", self._paths[stream], query=query, client_timeout=timeout
            )
        # The server answered, so it is reachable; the stream is NOT confirmed by this: only what
        # the watch delivers is.
        self.reachable = True
        opened = time.monotonic()
        self._last_bookmark[stream] = None  # gaps are measured within one connection
        delivered = 0
        self._open[stream] = resp
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    if self._frozen[stream]:
                        raise Unavailable("watch closed: frozen")
                    break  # the server ended the watch (timeoutSeconds): resume from version
                if line.isspace():
                    continue
                self._apply_event(stream, orjson.loads(line))
                delivered += 1
                self._delivered_in_last_watch[stream] = True
        except aiohttp.ServerTimeoutError:
            # The watchdog: nothing (not even a bookmark) for inactivity_s. Re-open from our
            # version; if the server is really gone, that attempt fails and backs off.
            log.debug("watch_inactive_reopen", cluster=self._cluster, stream=str(stream))
        finally:
            self._open[stream] = None
            resp.release()
        return delivered, time.monotonic() - opened

    def _apply_event(self, stream: Stream, event: Any) -> None:
        if not isinstance(event, dict):
            raise Unavailable("watch event is not an object")
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise Unavailable("watch event without an object")
        if kind == "ERROR":
            code = obj.get("code")
            raise error_from_response(int(code) if isinstance(code, int) else 500, orjson.dumps(obj))
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if kind == "BOOKMARK":
            now = time.monotonic()
            last = self._last_bookmark[stream]
            if last is not None:
                self._bookmark_gaps[stream].append(now - last)
            self._last_bookmark[stream] = now
        else:
            if stream is Stream.NODES:
                self._apply_node_event(kind, obj)
            else:
                self._apply_lease_event(kind, obj)
        if isinstance(version, str) and version:
            self._versions[stream] = version
            self._delivered_rv(stream, version)
        if not self._frozen[stream]:
            self._confirm(stream)

    # ---------------------------------------------------------------- the progress probe

    async def _run_probe(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s * random.uniform(0.9, 1.0))
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a probe must never end the cache
                log.warning("watch_probe_error", cluster=self._cluster, error=repr(exc))

    async def probe(self) -> None:
        """One progress probe: what revision the store is at now, and which watches keep up."""
        sent = self._clock()
        try:
            page = await request_json(self._api, "GET", self._paths[Stream.NODES], query={"limit": "1"})
        except KubeError as exc:
            if exc.status is None:
                self.reachable = False  # no answer at all: the API server is unreachable
            log.info("watch_probe_failed", cluster=self._cluster, error=str(exc))
            return
        self.probes += 1
        self.reachable = True
        meta = page.get("metadata")
        revision = _as_int(meta.get("resourceVersion") if isinstance(meta, dict) else None)
        if revision is None:
            return  # an opaque version: nothing to compare against, only data confirms
        for stream in Stream:
            if stream not in self._listed or self._frozen[stream]:
                continue
            pending = self._pending[stream]
            delivered = self._delivered[stream]
            if delivered is not None and delivered >= revision:
                pending.clear()
                self._confirm(stream, at=sent)  # it had everything the store had when we asked
                self._data_at[stream] = max(self._data_at[stream] or sent, sent)
                continue
            pending.append((sent, revision))
            last_current = min(self._data_at[stream] or sent, pending[0][0])
            if sent - pending[0][0] > self._freeze_after_s(stream):
                self._freeze(stream, sent - last_current, revision)
            elif sent - last_current > self._stale_after_s:
                # Behind the store and silent for longer than staleAfter: stale, and no longer
                # vouched for. Not frozen yet: the bookmark that proves a quiet watch alive may
                # still be on its way, and a relist is expensive.
                self._withdraw(stream, sent - last_current, revision)
            elif self._open[stream] is not None:
                # Behind, but not for long: a quiet stream is behind until its next bookmark.
                self._confirm(stream, at=sent)

    def _freeze_after_s(self, stream: Stream) -> float:
        """How long a stream may stay behind the store before its watch counts as frozen: past
        the next bookmark it would have had (with margin), and never less than staleAfter."""
        gaps = self._bookmark_gaps[stream]
        cadence = max(gaps) if gaps else self._bookmark_interval_s
        return max(self._stale_after_s, 1.5 * cadence + self._probe_interval_s)

    def _withdraw(self, stream: Stream, behind_s: float, revision: int) -> None:
        """Take back the freshness probes lent the stream; only data confirms it from now on."""
        if self._confirmed[stream] == self._data_at[stream]:
            return
        self._confirmed[stream] = self._data_at[stream]
        self._export_freshness()
        log.warning(
            "watch_behind",
            cluster=self._cluster,
            stream=str(stream),
            behind_s=round(behind_s, 3),
            delivered=self._delivered[stream],
            store_revision=revision,
        )
        self.changed.set()  # the reconciler must see the stale view now, not at its next wake-up

    def _freeze(self, stream: Stream, behind_s: float, revision: int) -> None:
        """The watch has not delivered what the store had ``behind_s`` ago: restart from a list,
        and take back the freshness probes lent it (stale until the list completes)."""
        self.frozen_watches += 1
        self._frozen[stream] = True
        self._pending[stream].clear()
        self._confirmed[stream] = self._data_at[stream]
        self._export_freshness()
        self._versions[stream] = None  # relist
        log.warning(
            "watch_frozen",
            cluster=self._cluster,
            stream=str(stream),
            behind_s=round(behind_s, 3),
            delivered=self._delivered[stream],
            store_revision=revision,
        )
        resp = self._open[stream]
        if resp is not None:
            resp.close()  # its reader wakes up and the stream loop relists after a backoff
        self.changed.set()  # the reconciler must see the stale view now, not at its next wake-up

    def _delivered_rv(self, stream: Stream, version: str, *, listed: bool = False) -> None:
        value = _as_int(version)
        if value is None:
            if listed:
                self._delivered[stream] = None
            return
        current = self._delivered[stream]
        if listed or current is None or value > current:
            self._delivered[stream] = value
        pending = self._pending[stream]
        while pending and pending[0][1] <= value:
            pending.popleft()

    # ---------------------------------------------------------------- store updates

    def _confirm(self, stream: Stream, *, at: float | None = None) -> None:
        """Data confirmed the stream (at ``at``, default now); a probe's vouching passes ``at``
        and leaves ``_data_at`` alone."""
        now = self._clock() if at is None else at
        if at is None:
            self._data_at[stream] = now
        self._confirmed[stream] = max(self._confirmed[stream] or now, now)
        self.reachable = True
        self._export_freshness()

    def _export_freshness(self) -> None:
        synced = self.synced_at
        if self._cluster and synced is not None:
            METRICS.watch_last_sync.labels(cluster=self._cluster).set(synced)

    def _parse_node(self, obj: JsonObject, now: float) -> NodeView | None:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        previous = self._nodes.get(name) if isinstance(name, str) else None
        try:
            view = node_view_from_json(
                obj,
                first_seen=(previous.first_seen or now) if previous is not None else now,
                lease_renew=self._renew.get(name) if isinstance(name, str) else None,
                cut=self._count_cut,
            )
        except MalformedObject as exc:
            self.skipped_malformed += 1
            log.warning("node_skipped_malformed", cluster=self._cluster, error=str(exc))
            return None
        if previous is not None and previous.uid != view.uid:
            # Same name, new object (a replacement joined under a reused name): new first_seen.
            view = replace(view, first_seen=now)
        return view

    def _count_cut(self, field: str) -> None:
        METRICS.node_fields_truncated.labels(cluster=self._cluster, field=field).inc()

    def _parse_lease(self, obj: JsonObject) -> tuple[str, float | None] | None:
        try:
            return lease_renew_from_json(obj)
        except MalformedObject as exc:
            self.skipped_malformed += 1
            log.warning("lease_skipped_malformed", cluster=self._cluster, error=str(exc))
            return None

    def _replace_nodes(self, views: dict[str, NodeView]) -> None:
        # The lease stream may have moved on while the node pages were coming in.
        for name, view in views.items():
            renew = self._renew.get(name)
            if view.lease_renew != renew:
                views[name] = replace(view, lease_renew=renew)
        old = self._nodes
        changed = old.keys() != views.keys() or any(old[name] != view for name, view in views.items())
        self._nodes = views
        self._snapshot = None
        if changed:
            self.changed.set()

    def _replace_leases(self, renews: dict[str, float | None]) -> None:
        now = self._clock()
        woke = False
        for name in self._renew.keys() | renews.keys():
            old, new = self._renew.get(name), renews.get(name)
            if old != new and self._set_lease(name, new, old, now):
                woke = True
        self._renew = renews
        if woke:
            self.changed.set()

    def _apply_node_event(self, kind: object, obj: JsonObject) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            if isinstance(name, str) and self._nodes.pop(name, None) is not None:
                self._snapshot = None
                self.changed.set()
            return
        view = self._parse_node(obj, self._clock())
        if view is None:
            return
        previous = self._nodes.get(view.name)
        self._nodes[view.name] = view
        self._snapshot = None
        if previous != view:
            self.changed.set()

    def _apply_lease_event(self, kind: object, obj: JsonObject) -> None:
        parsed = self._parse_lease(obj)
        if parsed is None:
            return
        name, renew = parsed
        old = self._renew.get(name)
        if kind == "DELETED":
            self._renew.pop(name, None)
            renew = None
        else:
            self._renew[name] = renew
        if old != renew and self._set_lease(name, renew, old, self._clock()):
            self.changed.set()

    def _set_lease(self, name: str, renew: float | None, old: float | None, now: float) -> bool:
        """Merge a node's lease renewal into its view; True when its staleness flipped."""
        view = self._nodes.get(name)
        if view is None:
            return False
        self._nodes[name] = replace(view, lease_renew=renew)
        self._snapshot = None
        return self._stale(old, now) != self._stale(renew, now)

    def _stale(self, renew: float | None, now: float) -> bool:
        return renew is None or now - renew > self._lease_stale_after_s


def _as_int(version: object) -> int | None:
    """A resourceVersion as a number (the API server's are etcd revisions); None if it isn't."""
    if not isinstance(version, str):
        return None
    try:
        return int(version)
    except ValueError:
        return None
