"""How stored objects are shown through a resource, and which stored objects a request selects.

Events are stored in their core/v1 shape and shown converted through events.k8s.io/v1."""

from __future__ import annotations

from typing import Any

import orjson

from noderescue.sim.kubeapi import event_versions
from noderescue.sim.kubeapi.resources import EVENTS_V1, ResourceType
from noderescue.sim.kubeapi.selectors import FieldSelector, LabelSelector, field_value
from noderescue.sim.kubeapi.store import Entry


def render(res: ResourceType, entry: Entry) -> bytes:
    if res is EVENTS_V1:
        return orjson.dumps(event_versions.from_core(orjson.loads(entry.raw)))
    return entry.raw


def view(res: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    return event_versions.from_core(obj) if res is EVENTS_V1 else obj


def stored_shape(res: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    return event_versions.to_core(obj) if res is EVENTS_V1 else obj


def entry_matches(entry: Entry, key: tuple[str, str], labels: LabelSelector, fields: FieldSelector) -> bool:
    """Label selectors read the entry's labels; field selectors read indexed fields and parse
    the object only for the rest."""
    if not labels.empty and not labels.matches(entry.labels):
        return False
    if fields.empty:
        return True
    parsed: dict[str, Any] | None = None

    def get(path: str) -> str:
        nonlocal parsed
        if path == "metadata.name":
            return key[1]
        if path == "metadata.namespace":
            return key[0]
        if path == "spec.nodeName":
            return entry.node_name
        if parsed is None:
            parsed = orjson.loads(entry.raw)
        return field_value(parsed, path)

    return fields.matches(get)
