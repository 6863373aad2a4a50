"""One watch stream: chunked JSON lines, in resourceVersion order, from the store's window and
then live; bookmarks; an ERROR event with a 410 Status when the version is gone; server-side
Table rows for kubectl's `get -w`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from noderescue.sim.faults import Faults
from noderescue.sim.kubeapi.resources import ResourceType
from noderescue.sim.kubeapi.selectors import FieldSelector, LabelSelector
from noderescue.sim.kubeapi.status import ApiError, expired
from noderescue.sim.kubeapi.store import Entry, Store, StoredEvent, Subscription
from noderescue.sim.kubeapi.table import to_table
from noderescue.sim.kubeapi.views import entry_matches, render


def line(kind: str, raw: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + raw + b"}\n"


@dataclass(slots=True)
class WatchRequest:
    res: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    since: int | None  # None: start with the current state as ADDED events
    timeout_s: float
    bookmarks: bool
    table: str | None  # includeObject for Table output, None for plain objects
    send_initial_events: bool = False  # watch-list: the state as ADDED, then an end-marking BOOKMARK


class WatchStream:
    def __init__(
        self,
        store: Store,
        watch: WatchRequest,
        *,
        bookmark_interval_s: float,
        faults: Faults | None = None,
    ) -> None:
        self.store = store
        self.watch = watch
        self.bookmark_interval_s = bookmark_interval_s
        self.faults = faults
        self._columns_sent = False

    def _object(self, entry: Entry) -> bytes:
        raw = render(self.watch.res, entry)
        if self.watch.table is None:
            return raw
        table = to_table(
            self.watch.res.plural,
            [orjson.loads(raw)],
            resource_version=str(entry.rv),
            include_object=self.watch.table,
        )
        if self._columns_sent:
            table["columnDefinitions"] = []  # as the real server: column definitions come once
        self._columns_sent = True
        return orjson.dumps(table)

    def lines(self, events: Iterable[StoredEvent]) -> list[bytes]:
        watch = self.watch
        filtered = not (watch.labels.empty and watch.fields.empty)
        out = []
        for event in events:
            if watch.namespace is not None and event.namespace != watch.namespace:
                continue
            key = (event.namespace, event.name)
            kind: str = event.type
            if filtered:
                now_matches = entry_matches(event.entry, key, watch.labels, watch.fields)
                if event.type == "MODIFIED" and event.prev is not None:
                    # As the watch cache does: an object entering the selection is ADDED to
                    # this watcher, one leaving it is DELETED.
                    was_matching = entry_matches(event.prev, key, watch.labels, watch.fields)
                    if not now_matches and not was_matching:
                        continue
                    if not was_matching:
                        kind = "ADDED"
                    elif not now_matches:
                        kind = "DELETED"
                elif not now_matches:
                    continue
            out.append(line(kind, self._object(event.entry)))
        return out

    async def serve(
        self, request: web.Request, current: list[tuple[tuple[str, str], Entry]]
    ) -> web.StreamResponse:
        """`current`: the selected objects now, sent as ADDED first (a watch without a version,
        or a watch-list with sendInitialEvents)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        if self.faults is not None and self.faults.watch_fault() == "eof":
            # The "eof" fault: a 200 that ends at once, before any event.
            await response.prepare(request)
            await response.write_eof()
            return response
        try:
            sub, backlog = self.store.subscribe(self.watch.res, self.watch.since)
        except ApiError as err:
            if err.code != 410:
                raise
            await response.prepare(request)
            await response.write(line("ERROR", orjson.dumps(err.body())))
            await response.write_eof()
            return response
        try:
            initial = [line("ADDED", self._object(e)) for _, e in current]
            if self.watch.send_initial_events:
                initial.append(line("BOOKMARK", self._bookmark(initial_events_end=True)))
            initial.extend(self.lines(backlog))
            await response.prepare(request)
            await self._while_hung()
            if initial:
                await response.write(b"".join(initial))
            await self._pump(request, response, sub)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.unsubscribe(sub)
        return response

    async def _pump(self, request: web.Request, response: web.StreamResponse, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.watch.timeout_s
        res = self.watch.res
        while True:
            if await self._while_hung():
                deadline = max(deadline, loop.time() + 1.0)  # a watch that thaws delivers first
            if sub.pending:
                batch = list(sub.pending)
                sub.pending.clear()
                lines = self.lines(batch)
                if lines:
                    await response.write(b"".join(lines))
                continue
            if sub.closed is not None:
                if sub.closed == "expired":
                    err = expired(self.store.rv - 1, self.store.compacted_rv(res) + 1)
                    await response.write(line("ERROR", orjson.dumps(err.body())))
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            sub.wakeup.clear()
            try:
                async with asyncio.timeout(min(remaining, self.bookmark_interval_s)):
                    await sub.wakeup.wait()
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                if self.watch.bookmarks and not sub.pending:
                    await response.write(line("BOOKMARK", self._bookmark()))

    async def _while_hung(self) -> bool:
        """Hold the stream while the "hang" fault is on: nothing is written, not even bookmarks,
        and the connection stays open (the client's only clue is silence). True if it held."""
        held = False
        while self.faults is not None and self.faults.watch_fault() == "hang":
            held = True
            await asyncio.sleep(0.05)
        return held

    def _bookmark(self, *, initial_events_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        res = self.watch.res
        return orjson.dumps({"kind": res.kind, "apiVersion": res.api_version, "metadata": metadata})
