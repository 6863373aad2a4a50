"""Server-side `Table` output (meta.k8s.io/v1) for kubectl: without it `kubectl get` prints only
NAME and AGE. Columns follow the real API server's printers for the resources we serve."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from noderescue.sim.kubeapi.timestamps import human_duration, parse_rfc3339

Cells = list[Any]
Column = tuple[str, str, int]  # (name, format, priority); priority 1 = shown with -o wide


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(meta: dict[str, Any], now: float) -> str:
    created = parse_rfc3339(meta.get("creationTimestamp"))
    return "<unknown>" if created is None else human_duration(now - created)


def _node_row(obj: dict[str, Any], now: float) -> Cells:
    meta = obj.get("metadata", {})
    status = obj.get("status", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Unknown"
    if ready is not None:
        state = {"True": "Ready", "False": "NotReady"}.get(ready.get("status", ""), "Unknown")
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1] for k in (meta.get("labels") or {}) if k.startswith("node-role.kubernetes.io/")
    )
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        meta.get("name", ""),
        state,
        ",".join(roles) or "<none>",
        _age(meta, now),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


_NODE_COLUMNS: list[Column] = [
    ("Name", "name", 0),
    ("Status", "", 0),
    ("Roles", "", 0),
    ("Age", "", 0),
    ("Version", "", 0),
    ("Internal-IP", "", 1),
    ("External-IP", "", 1),
    ("OS-Image", "", 1),
    ("Kernel-Version", "", 1),
    ("Container-Runtime", "", 1),
]


def _pod_row(obj: dict[str, Any], now: float) -> Cells:
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    status = obj.get("status", {})
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase", "Unknown")
    if meta.get("deletionTimestamp"):
        phase = "Terminating"
    return [
        meta.get("name", ""),
        f"{ready}/{len(spec.get('containers') or [])}",
        phase,
        restarts,
        _age(meta, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


_POD_COLUMNS: list[Column] = [
    ("Name", "name", 0),
    ("Ready", "", 0),
    ("Status", "", 0),
    ("Restarts", "", 0),
    ("Age", "", 0),
    ("IP", "", 1),
    ("Node", "", 1),
    ("Nominated Node", "", 1),
    ("Readiness Gates", "", 1),
]


def _lease_row(obj: dict[str, Any], now: float) -> Cells:
    meta = obj.get("metadata", {})
    return [meta.get("name", ""), (obj.get("spec") or {}).get("holderIdentity", ""), _age(meta, now)]


_LEASE_COLUMNS: list[Column] = [("Name", "name", 0), ("Holder", "", 0), ("Age", "", 0)]


def _event_row(obj: dict[str, Any], now: float) -> Cells:
    meta = obj.get("metadata", {})
    involved = obj.get("involvedObject") or {}
    last = parse_rfc3339(obj.get("lastTimestamp")) or parse_rfc3339(obj.get("eventTime"))
    first = parse_rfc3339(obj.get("firstTimestamp")) or last
    source = obj.get("source") or {}
    return [
        "<unknown>" if last is None else human_duration(now - last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
        involved.get("fieldPath", ""),
        ", ".join(
            v
            for v in (source.get("component", obj.get("reportingComponent", "")), source.get("host", ""))
            if v
        ),
        "<unknown>" if first is None else human_duration(now - first),
        obj.get("count", 1),
        meta.get("name", ""),
    ]


_EVENT_COLUMNS: list[Column] = [
    ("Last Seen", "", 0),
    ("Type", "", 0),
    ("Reason", "", 0),
    ("Object", "", 0),
    ("Message", "", 0),
    ("Subobject", "", 1),
    ("Source", "", 1),
    ("First Seen", "", 1),
    ("Count", "", 1),
    ("Name", "name", 1),
]


def _pdb_row(obj: dict[str, Any], now: float) -> Cells:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return [
        obj.get("metadata", {}).get("name", ""),
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        status.get("disruptionsAllowed", 0),
        _age(obj.get("metadata", {}), now),
    ]


_PDB_COLUMNS: list[Column] = [
    ("Name", "name", 0),
    ("Min Available", "", 0),
    ("Max Unavailable", "", 0),
    ("Allowed Disruptions", "", 0),
    ("Age", "", 0),
]


def _default_row(obj: dict[str, Any], now: float) -> Cells:
    meta = obj.get("metadata", {})
    return [meta.get("name", ""), meta.get("creationTimestamp", "")]


_DEFAULT_COLUMNS: list[Column] = [("Name", "name", 0), ("Created At", "date", 0)]

_PRINTERS: dict[str, tuple[list[Column], Callable[[dict[str, Any], float], Cells]]] = {
    "nodes": (_NODE_COLUMNS, _node_row),
    "pods": (_POD_COLUMNS, _pod_row),
    "leases": (_LEASE_COLUMNS, _lease_row),
    "events": (_EVENT_COLUMNS, _event_row),
    "poddisruptionbudgets": (_PDB_COLUMNS, _pdb_row),
}


def to_table(
    plural: str,
    objects: Sequence[dict[str, Any]],
    *,
    resource_version: str,
    include_object: str,
    continue_token: str = "",
) -> dict[str, Any]:
    columns, row = _PRINTERS.get(plural, (_DEFAULT_COLUMNS, _default_row))
    now = time.time()
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj, now)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(entry)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            {
                "name": name,
                "type": "integer" if name in ("Restarts", "Count", "Allowed Disruptions") else "string",
                "format": fmt,
                "description": name,
                "priority": priority,
            }
            for name, fmt, priority in columns
        ],
        "rows": rows,
    }
