"""Raw Node / Lease JSON (orjson-parsed dicts) -> the core's slim ``NodeView``.

This is the watch cache's hot path: one call per Node per list or event. It reads only the fields
the core decides on and parses RFC 3339 with ``datetime.fromisoformat`` (C code; dateutil was
63 % of the generated models' cost).

A kubelet writes its own Node (status, conditions, labels, annotations) and the API server only
bounds the whole object (~1.5 MB in etcd), so everything a node writes is capped here, on the
way in: a compromised node rewriting a megabyte condition reason on every update must cost the
daemon nothing lasting. A cut string keeps its head and ends in ``CUT_MARK``, a character no
label value, providerID or CamelCase reason contains, so a cut value never equals a real one;
``cut`` is told the field of each cut (the cache counts them in
``noderescue_node_fields_truncated_total``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from noderescue.core.model import (
    CORDONED_BY_ANNOTATION,
    RECORD_ANNOTATION,
    ZONE_LABEL,
    Condition,
    NodeView,
)

LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"
_SHARED: dict[str, str] = {}
_SHARED_MAX = 250_000  # distinct values; beyond that the table starts over (views keep theirs)
_SHARE_MAX_LEN = 100  # longer values are copied, not shared: one node cannot fill the table

# Caps on what a node writes. Generous for every real value, small against a flood.
CUT_MARK = "\u2026"  # "…"
MAX_REASON = 256  # kubelet and node-problem-detector reasons are CamelCase words
MAX_CONDITIONS = 64  # the kubelet writes 5, node-problem-detector a dozen more
MAX_LABELS = 256  # nodes carry a few dozen
MAX_LABEL_KEY = 317  # the API's own limit: a 253-character prefix, "/", a 63-character name
MAX_LABEL_VALUE = 63  # the API's own limit
MAX_PROVIDER_ID = 1024  # an Azure scale set VM's is ~250
MAX_BOOT_ID = 128  # a UUID
MAX_CORDONED_BY = 253
MAX_RECORD = 64 * 1024  # our records are a few hundred bytes; a bigger one is not ours
# Labels kept even past MAX_LABELS: what noderescue itself and a provisioner set.
_KEPT_LABEL_PREFIXES = ("noderescue.io/", "node-restriction.kubernetes.io/", "topology.kubernetes.io/")

Cut = Callable[[str], None]


def _no_cut(field: str) -> None:
    pass


def _once(cut: Cut) -> Cut:
    reported: set[str] = set()

    def report(field: str) -> None:
        if field not in reported:
            reported.add(field)
            cut(field)

    return report


def _capped(text: str, limit: int, field: str, cut: Cut) -> str:
    if len(text) <= limit:
        return text
    cut(field)
    return text[:limit] + CUT_MARK


def _own(text: str) -> str:
    """A private copy of a string from a parsed page.

    Keeping the page's own string objects would pin the memory of the whole parsed page: each
    kept string holds its allocator arena, which is otherwise full of freed page objects. A copy
    is allocated next to the view, and the page's arenas go back to the OS.
    """
    return text.encode().decode()


def _shared(text: str) -> str:
    """One private copy per distinct value (zone, class, arch, condition reasons... repeat on
    every node: 100,000 views share one copy of each). Long values are copied, not shared."""
    if len(text) > _SHARE_MAX_LEN:
        return _own(text)
    found = _SHARED.get(text)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _own(text)
        _SHARED[found] = found
    return found


class RawObjectMeta(TypedDict):
    name: str
    uid: NotRequired[str]
    resourceVersion: NotRequired[str]
    creationTimestamp: NotRequired[str]
    deletionTimestamp: NotRequired[str]
    labels: NotRequired[dict[str, str]]
    annotations: NotRequired[dict[str, str]]
    ownerReferences: NotRequired[list[dict[str, Any]]]
    namespace: NotRequired[str]


class RawNodeCondition(TypedDict):
    type: str
    status: str
    reason: NotRequired[str]
    message: NotRequired[str]
    lastTransitionTime: NotRequired[str]
    lastHeartbeatTime: NotRequired[str]


class RawNodeInfo(TypedDict, total=False):
    bootID: str


class RawNodeStatus(TypedDict, total=False):
    conditions: list[RawNodeCondition]
    nodeInfo: RawNodeInfo


class RawNodeSpec(TypedDict, total=False):
    unschedulable: bool
    providerID: str


class RawNode(TypedDict):
    metadata: RawObjectMeta
    spec: NotRequired[RawNodeSpec]
    status: NotRequired[RawNodeStatus]


class RawLeaseSpec(TypedDict, total=False):
    holderIdentity: str | None
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class RawLease(TypedDict):
    metadata: RawObjectMeta
    spec: NotRequired[RawLeaseSpec]


class MalformedObject(ValueError):
    """A Node or Lease object lacks what we need or has the wrong shape; the cache skips it."""


def parse_time(value: object) -> float | None:
    """RFC 3339 (``2024-05-01T10:00:00Z``, with or without fraction) -> epoch seconds; None if bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # the API always sends UTC; be lenient with a missing zone
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(ts: float) -> str:
    """Epoch seconds -> RFC 3339 with seconds precision (Time fields)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(ts: float) -> str:
    """Epoch seconds -> RFC 3339 with microseconds (MicroTime fields: Lease renewTime, Events)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dict_or_empty(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedObject(f"{key} is not an object")
    return value


def node_view_from_json(
    obj: dict[str, Any], *, first_seen: float, lease_renew: float | None = None, cut: Cut = _no_cut
) -> NodeView:
    """Build the slim view of one Node, node-written fields capped (``cut`` hears once per field
    that was cut). Raises ``MalformedObject``, never anything else."""
    if cut is not _no_cut:
        cut = _once(cut)
    if not isinstance(obj, dict):
        raise MalformedObject("node is not an object")
    meta = _dict_or_empty(obj, "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedObject("node has no metadata.name")
    uid = meta.get("uid")
    if not isinstance(uid, str):
        raise MalformedObject(f"node {name} has no metadata.uid")
    spec = _dict_or_empty(obj, "spec")
    status = _dict_or_empty(obj, "status")
    labels = _labels(meta.get("labels"), name, cut)
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise MalformedObject(f"node {name}: metadata.annotations is not an object")
    record_json = annotations.get(RECORD_ANNOTATION)
    cordoned_by = annotations.get(CORDONED_BY_ANNOTATION)
    if not isinstance(record_json, str | None) or not isinstance(cordoned_by, str | None):
        raise MalformedObject(f"node {name}: a noderescue annotation is not a string")
    if record_json is not None and len(record_json) > MAX_RECORD:
        cut("record")  # cut JSON would not parse anyway
        record_json = None
    if cordoned_by is not None:
        cordoned_by = _capped(cordoned_by, MAX_CORDONED_BY, "cordoned_by", cut)

    raw_conditions = status.get("conditions") or ()
    if not isinstance(raw_conditions, list | tuple):
        raise MalformedObject(f"node {name}: status.conditions is not a list")
    if len(raw_conditions) > MAX_CONDITIONS:
        cut("conditions")
        raw_conditions = raw_conditions[:MAX_CONDITIONS]
    conditions: list[Condition] = []
    for raw in raw_conditions:
        if not isinstance(raw, dict):
            raise MalformedObject(f"node {name}: a condition is not an object")
        ctype, cstatus = raw.get("type"), raw.get("status")
        if not isinstance(ctype, str) or not isinstance(cstatus, str):
            raise MalformedObject(f"node {name}: a condition lacks type or status")
        conditions.append(
            Condition(
                # Types are matched exactly by rules and statuses are three words: a long one
                # is cut like a reason (and then matches nothing).
                type=_shared(_capped(ctype, MAX_REASON, "condition_type", cut)),
                status=_shared(_capped(cstatus, MAX_REASON, "condition_status", cut)),
                reason=_shared(_capped(str(raw.get("reason") or ""), MAX_REASON, "reason", cut)),
                last_transition=parse_time(raw.get("lastTransitionTime")),
            )
        )
    node_info = status.get("nodeInfo")
    boot_id = node_info.get("bootID") if isinstance(node_info, dict) else None
    provider_id = spec.get("providerID")
    return NodeView(
        name=_own(name),
        uid=_own(uid),
        labels=labels,
        zone=labels.get(ZONE_LABEL) or labels.get(LEGACY_ZONE_LABEL),
        provider_id=(
            _own(_capped(provider_id, MAX_PROVIDER_ID, "provider_id", cut))
            if isinstance(provider_id, str) and provider_id
            else None
        ),
        unschedulable=spec.get("unschedulable") is True,
        conditions=tuple(conditions),
        lease_renew=lease_renew,
        boot_id=_own(_capped(boot_id, MAX_BOOT_ID, "boot_id", cut))
        if isinstance(boot_id, str) and boot_id
        else None,
        created=parse_time(meta.get("creationTimestamp")),
        record_json=_own(record_json) if record_json is not None else None,
        cordoned_by=_shared(cordoned_by) if cordoned_by is not None else None,
        first_seen=first_seen,
    )


def _labels(value: object, name: str, cut: Cut) -> dict[str, str]:
    """The labels map, capped, with interned strings (zone, class, arch... repeat on every
    node: 100,000 nodes share one copy of each). Past ``MAX_LABELS`` the first ones are kept,
    and noderescue's, the provisioner's and the topology labels always."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedObject(f"node {name}: metadata.labels is not an object")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise MalformedObject(f"node {name}: metadata.labels[{key}] is not a string")
        if len(key) > MAX_LABEL_KEY:
            cut("label_key")  # a selector cannot name it anyway
            continue
        if len(result) >= MAX_LABELS and not key.startswith(_KEPT_LABEL_PREFIXES):
            cut("labels")
            continue
        result[_shared(key)] = _shared(_capped(item, MAX_LABEL_VALUE, "label_value", cut))
    return result


def with_cloud_placement(
    view: NodeView, group: str | None, zone: str | None, *, zone_from_cloud: bool
) -> NodeView:
    """``view`` placed by its instance as the cloud reports it: ``group`` is the instance's
    Auto Scaling group / scale set (``None``: not in a configured one, or unknown) and, with
    ``zone_from_cloud``, ``zone`` replaces the node's own zone label, which its kubelet may set
    (``None``: the cloud does not know the instance, so the node has no trusted zone)."""
    new_zone = zone if zone_from_cloud else view.zone
    if view.group == group and view.zone == new_zone:
        return view
    return replace(view, group=group, zone=new_zone)


def lease_renew_from_json(obj: dict[str, Any]) -> tuple[str, float | None]:
    """(lease name, spec.renewTime as epoch seconds or None). Raises ``MalformedObject``."""
    if not isinstance(obj, dict):
        raise MalformedObject("lease is not an object")
    meta = _dict_or_empty(obj, "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedObject("lease has no metadata.name")
    spec = _dict_or_empty(obj, "spec")
    return _own(name), parse_time(spec.get("renewTime"))
