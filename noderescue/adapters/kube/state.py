"""The cluster-wide ``noderescue-state`` ConfigMap: action history and the pause switch.

Every change is a read-modify-write with the ConfigMap's resourceVersion (PUT -> 409 on a race ->
re-read, re-apply, retry), so two writers never lose each other's events. Appends are idempotent
(an event already present is not added twice), which makes retrying after a timeout safe.

The ConfigMap is created on the first write when missing; its namespace is not: it is the
daemon's own namespace (or one the operator configured) and must exist — a missing namespace
surfaces as ``NotFound``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
from noderescue.adapters.kube.errors import Conflict, NotFound
from noderescue.adapters.kube.transport import JsonObject, request_json
from noderescue.core.model import Action, History, HistoryEvent, Pause

log = structlog.get_logger(__name__)

STATE_CONFIGMAP = "noderescue-state"
_ATTEMPTS = 20

State = tuple[History, Pause | None]
Mutation = Callable[[History, Pause | None], State]


class MalformedState(ValueError):
    """The ConfigMap's data cannot be read; we refuse to overwrite (it would reset rate limits)."""


def history_to_json(history: History) -> str:
    return orjson.dumps(
        [
            {"ts": e.ts, "action": e.action.value, "node": e.node, "start": e.attempt_start}
            for e in history.events
        ]
    ).decode()


def history_from_json(text: str) -> History:
    try:
        raw = orjson.loads(text)
        if not isinstance(raw, list):
            raise MalformedState("history is not a list")
        return History(
            tuple(
                HistoryEvent(
                    ts=float(item["ts"]),
                    action=Action(item["action"]),
                    node=str(item["node"]),
                    attempt_start=bool(item.get("start", False)),
                )
                for item in raw
            )
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, MalformedState):
            raise
        raise MalformedState(f"history: {exc}") from exc


def pause_to_json(pause: Pause) -> str:
    return orjson.dumps({"reason": pause.reason, "since": pause.since}).decode()


def pause_from_json(text: str) -> Pause:
    try:
        raw = orjson.loads(text)
        since = raw.get("since")
        return Pause(reason=str(raw["reason"]), since=float(since) if since is not None else None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedState(f"pause: {exc}") from exc


def _state_of(configmap: JsonObject) -> State:
    data = configmap.get("data") or {}
    history = history_from_json(data["history"]) if data.get("history") else History()
    pause = pause_from_json(data["pause"]) if data.get("pause") else None
    return history, pause


def merged(history: History, events: Sequence[HistoryEvent], keep_after: float) -> History:
    """History plus new events, deduplicated, ordered by time, older than ``keep_after`` dropped."""
    combined = list(history.events)
    seen = set(combined)
    for event in events:
        if event not in seen:
            seen.add(event)
            combined.append(event)
    combined.sort(key=lambda e: e.ts)
    return History(tuple(combined)).compacted(keep_after)


class StateStore:
    def __init__(self, api: ApiClient, namespace: str, *, name: str = STATE_CONFIGMAP) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._collection = f"/api/v1/namespaces/{namespace}/configmaps"
        self._path = f"{self._collection}/{name}"

    async def load(self) -> State:
        try:
            configmap = await request_json(self._api, "GET", self._path)
        except NotFound:
            return History(), None
        return _state_of(configmap)

    async def append(self, events: Sequence[HistoryEvent], *, keep_after: float) -> History:
        """Add events; drop those at or before ``keep_after`` (the longest window's start)."""
        state = await self._update(
            lambda history, pause: (merged(history, events, keep_after), pause), "kube.history.append"
        )
        return state[0]

    async def set_pause(self, pause: Pause) -> None:
        await self._update(lambda history, _: (history, pause), "kube.pause.set")

    async def clear_pause(self) -> None:
        await self._update(lambda history, _: (history, None), "kube.pause.clear")

    async def _update(self, mutate: Mutation, failpoint: str) -> State:
        for attempt in range(_ATTEMPTS):
            try:
                configmap = await request_json(self._api, "GET", self._path)
            except NotFound:
                configmap = None
            current = _state_of(configmap) if configmap is not None else (History(), None)
            history, pause = mutate(*current)
            data: dict[str, str] = {"history": history_to_json(history)}
            if pause is not None:
                data["pause"] = pause_to_json(pause)
            failpoints.hit(f"{failpoint}.before")
            try:
                if configmap is None:
                    body: dict[str, Any] = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": self._name, "namespace": self._namespace},
                        "data": data,
                    }
                    await request_json(self._api, "POST", self._collection, body=body)
                else:
                    meta = configmap.get("metadata") or {}
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": self._name,
                            "namespace": self._namespace,
                            "resourceVersion": meta.get("resourceVersion"),
                            "labels": meta.get("labels") or {},
                            "annotations": meta.get("annotations") or {},
                        },
                        "data": data,
                    }
                    await request_json(self._api, "PUT", self._path, body=body)
            except Conflict:
                # Another writer got there first (update race, or it created the ConfigMap).
                log.debug("state_write_race_retry", attempt=attempt)
                await asyncio.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
                continue
            failpoints.hit(f"{failpoint}.after")
            return history, pause
        raise Conflict(f"configmap {self._name} kept changing", status=409)
