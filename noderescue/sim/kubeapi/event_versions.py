"""core/v1 and events.k8s.io/v1 Events are one stored object seen through two shapes (as in the
real API server); these convert between them. Storage keeps the core/v1 shape."""

from __future__ import annotations

from typing import Any

_RENAMES = (  # (events.k8s.io/v1 field, core/v1 field)
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def to_core(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in {new for new, _ in _RENAMES}}
    for new, old in _RENAMES:
        if new in event:
            out[old] = event[new]
    out["apiVersion"] = "v1"
    out["kind"] = "Event"
    return out


def from_core(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in {old for _, old in _RENAMES}}
    for new, old in _RENAMES:
        if old in event:
            out[new] = event[old]
    if not out.get("eventTime"):
        # The real server shows null here for events created through core/v1, which generated
        # clients (kubernetes-asyncio) refuse to deserialize; the first timestamp is what it means.
        first = event.get("firstTimestamp") or event.get("lastTimestamp")
        out["eventTime"] = first.replace("Z", ".000000Z") if isinstance(first, str) else None
    out["apiVersion"] = "events.k8s.io/v1"
    out["kind"] = "Event"
    return out
