"""The remediation record's JSON codec, its progress order, and the deprecated annotation writer.

The authoritative record lives in noderescue's own namespace (``record_store.RecordStore``); the
``noderescue.io/remediation`` annotation on the Node is at most a mirror for humans, because a
kubelet may write annotations on its own Node.

Format 2 (written now) carries the node's name, the destructive calls whose intent is durable
(``calls``) and the ladder the remediation follows (``ladderSource``, ``ladderHash``). Format 1
(the annotation of earlier releases: no name, no calls, no ladder) is still read, with the node's
name given by the caller and the defaults of the new fields.

``write_record`` (deprecated: only its remaining callers keep it) writes the annotation with JSON
patches that first ``test`` the Node's uid and resourceVersion: a lost race comes back as 409 or
422 (a failed test), and we re-read and retry, refusing to overwrite a record that is *newer*.

"Newer" is the record's progress key: (attempt, ladder step, phase rank, step started, number of
call intents, operation id known). A remediation only moves forward along it (a new attempt, the
next step, a later phase of the same step, a call's intent recorded, the cloud operation's id
learned), so a writer holding an older view can never roll a record back. Equal keys are
rewritten (same progress, e.g. a new deadline). Clearing (the remediation is over) is
unconditional.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube.errors import Conflict, Invalid
from noderescue.adapters.kube.transport import JSON_PATCH, request_json
from noderescue.core.model import RECORD_ANNOTATION, Action, Phase, Record

log = structlog.get_logger(__name__)

RECORD_FORMAT = 2
_FORMATS = (1, 2)
_ATTEMPTS = 8
_PHASE_RANK = {
    Phase.STARTED: 0,
    Phase.CORDONED: 1,
    Phase.DRAINING: 2,
    Phase.ACTING: 3,
    Phase.VERIFYING: 4,
    Phase.FAILED: 5,
    Phase.NEEDS_HUMAN: 6,
}
# JSON pointer of the annotation: "/" in the key is escaped as "~1" (RFC 6901).
_ANNOTATION_POINTER = "/metadata/annotations/" + RECORD_ANNOTATION.replace("~", "~0").replace("/", "~1")


class MalformedRecord(ValueError):
    """The annotation is not a record we can read (hand-edited, truncated, a future format)."""


class RecordWriteRejected(Exception):
    """The write was refused on purpose (not a transport failure)."""


class StaleRecord(RecordWriteRejected):
    """The node already carries a newer record than the one we tried to write."""

    def __init__(self, current: Record) -> None:
        super().__init__(
            f"node {current.node} has a newer record (phase {current.phase}, step {current.step})"
        )
        self.current = current


class NodeIdentityChanged(RecordWriteRejected):
    """The Node object now has another uid than expected (the name was reused by a new node)."""


def progress_key(record: Record) -> tuple[int, int, int, float, int, bool]:
    """The order a remediation moves along. Within a step, call intents are only ever added
    (``calls``): a record that knows of more calls is newer, so no stale writer can erase the
    intent of a call that may have gone out."""
    return (
        record.attempt,
        record.step,
        _PHASE_RANK[record.phase],
        record.step_started,
        len(record.calls),
        record.operation_id is not None,
    )


def record_to_json(record: Record) -> str:
    doc: dict[str, Any] = {
        "v": RECORD_FORMAT,
        "uid": record.node_uid,
        "class": record.cls,
        "step": record.step,
        "action": record.action.value,
        "phase": record.phase.value,
        "attempt": record.attempt,
        "started": record.started,
        "stepStarted": record.step_started,
        "deadline": record.deadline,
        "reason": record.reason,
        "providerID": record.provider_id,
        "instanceID": record.instance_id,
        "bootIDBefore": record.boot_id_before,
        "operationID": record.operation_id,
        "cordonedByUs": record.cordoned_by_us,
        "held": record.held,
        "heldSince": record.held_since,
        "node": record.node,
        "calls": list(record.calls),
        "ladderSource": record.ladder_source,
        "ladderHash": record.ladder_hash,
    }
    return orjson.dumps({k: v for k, v in doc.items() if v is not None}).decode()


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = doc.get(key)
    if value is None:
        if required:
            raise MalformedRecord(f"record lacks {key!r}")
        return None
    if isinstance(value, bool) and kind is not bool:
        raise MalformedRecord(f"record field {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise MalformedRecord(f"record field {key!r} has the wrong type")
    return value


def _calls(doc: dict[str, Any]) -> tuple[str, ...]:
    raw = doc.get("calls")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, str) and c for c in raw):
        raise MalformedRecord("record field 'calls' is not a list of call names")
    return tuple(raw)


def record_from_json(text: str, node: str | None = None) -> Record:
    """Parse a record. Raises ``MalformedRecord``, never anything else.

    ``node`` is the name of the node the record was found for: required for format 1 (which does
    not carry it); for format 2 the record names its node, and a given ``node`` must match it.
    """
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(f"record is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedRecord("record is not a JSON object")
    version = doc.get("v")
    if isinstance(version, bool) or version not in _FORMATS:
        raise MalformedRecord(f"unknown record format {version!r}")
    if version == 1:
        if node is None:
            raise MalformedRecord("a format 1 record does not name its node")
        named = node
    else:
        named = _field(doc, "node", str)
        if not named:
            raise MalformedRecord("record names no node")
        if node is not None and named != node:
            raise MalformedRecord(f"record names node {named!r}, found for {node!r}")
    try:
        action = Action(_field(doc, "action", str))
        phase = Phase(_field(doc, "phase", str))
    except ValueError as exc:
        raise MalformedRecord(str(exc)) from exc
    number = (int, float)
    deadline = _field(doc, "deadline", number, required=False)
    step = _field(doc, "step", int)
    attempt = _field(doc, "attempt", int)
    if step < 0 or attempt < 1:
        raise MalformedRecord("record step/attempt out of range")
    ladder_source = _field(doc, "ladderSource", str, required=False)
    return Record(
        node=named,
        node_uid=_field(doc, "uid", str),
        cls=_field(doc, "class", str),
        step=step,
        action=action,
        phase=phase,
        attempt=attempt,
        started=float(_field(doc, "started", number)),
        step_started=float(_field(doc, "stepStarted", number)),
        deadline=float(deadline) if deadline is not None else None,
        reason=_field(doc, "reason", str, required=False) or "",
        provider_id=_field(doc, "providerID", str, required=False),
        instance_id=_field(doc, "instanceID", str, required=False),
        boot_id_before=_field(doc, "bootIDBefore", str, required=False),
        operation_id=_field(doc, "operationID", str, required=False),
        cordoned_by_us=bool(_field(doc, "cordonedByUs", bool, required=False)),
        held=_field(doc, "held", str, required=False),
        held_since=_held_since(doc),
        calls=_calls(doc),
        ladder_source=ladder_source if ladder_source is not None else "class",
        ladder_hash=_field(doc, "ladderHash", str, required=False) or "",
    )


async def write_record(api: ApiClient, node_name: str, record: Record | None, *, expected_uid: str) -> None:
    """Write (or with None, clear) the node's record annotation, unless a newer one is there.

    Deprecated: the annotation is not authoritative (a kubelet may write it). Records are kept by
    ``RecordStore.put`` / ``delete``; the annotation is mirrored by ``RecordStore.mirror``.

    Raises ``StaleRecord`` (a newer record is on the node; it is left alone),
    ``NodeIdentityChanged`` (the node's uid is not ``expected_uid``), ``KubeError``.
    A malformed record on the node counts as older than anything (it is overwritten).
    """
    path = f"/api/v1/nodes/{node_name}"
    for _ in range(_ATTEMPTS):
        node = await request_json(api, "GET", path)
        meta = node.get("metadata") or {}
        if meta.get("uid") != expected_uid:
            raise NodeIdentityChanged(f"node {node_name} uid is {meta.get('uid')}, expected {expected_uid}")
        annotations = meta.get("annotations") or {}
        current_text = annotations.get(RECORD_ANNOTATION)
        if record is not None and current_text is not None:
            try:
                current = record_from_json(current_text, node_name)
            except MalformedRecord as exc:
                log.warning("record_malformed_overwritten", node=node_name, error=str(exc))
            else:
                if progress_key(current) > progress_key(record):
                    raise StaleRecord(current)
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": expected_uid},
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        ]
        if record is None:
            if current_text is None:
                return
            operations.append({"op": "remove", "path": _ANNOTATION_POINTER})
        else:
            text = record_to_json(record)
            if text == current_text:
                return
            if meta.get("annotations") is None:
                operations.append({"op": "add", "path": "/metadata/annotations", "value": {}})
            operations.append({"op": "add", "path": _ANNOTATION_POINTER, "value": text})
        try:
            await request_json(api, "PATCH", path, body=operations, content_type=JSON_PATCH)
        except (Conflict, Invalid) as exc:
            # 409, or 422 from a failed test op: someone wrote in between. Re-read and decide again.
            log.info("record_write_race_retry", node=node_name, error=str(exc))
            continue
        return
    raise Conflict(f"node {node_name} kept changing while writing its record", status=409)


def _held_since(doc: dict[str, Any]) -> float | None:
    value = _field(doc, "heldSince", (int, float), required=False)
    return float(value) if value is not None else None
