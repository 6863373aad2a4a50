"""Remediation records and replacement claims, kept in noderescue's own namespace.

Where: ConfigMaps in the state namespace (the one the ``noderescue-state`` ConfigMap and the
leader Lease live in), which only noderescue's ServiceAccount may write. Not on the Node: under
NodeRestriction a kubelet may write annotations on its own Node, so a record there could be forged
(a far deadline holding the only concurrency slot, an operation of the node's choosing), and it
disappears with the Node object — exactly when a replace most needs it. The
``noderescue.io/remediation`` annotation is still written, by ``mirror``, for ``kubectl describe
node``; nothing reads it as authority.

Why one object per node and per claim, not one ConfigMap for all: an object is limited to 1 MiB
(a record is ~0.7 KiB, so a single ConfigMap would cap a cluster at ~1,400 records in flight or
parked, and every write would re-send all of them), and every write to a shared object races
with every other (optimistic concurrency turns N parallel remediations into N-way conflicts and
retries). Per-node objects are written independently; a LIST by label selector reads them all,
page by page.

Objects (labels ``app.kubernetes.io/managed-by: noderescue`` and ``noderescue.io/kind``):

- ``noderescue-record-<node>`` (kind ``record``): data ``record`` is the record's JSON (format 2,
  which names the node). A node name that would make the object name too long (253) or invalid is
  truncated and given a short hash of the full name; the name in the JSON is the truth, and a
  record whose object name does not derive from it is reported as malformed.
- ``noderescue-claim-<new node uid>`` (kind ``claim``): data ``claim`` names the new node and the
  replace it verified. Created with POST only: the API server lets exactly one creator win, so
  a new node verifies at most one replace, across restarts and between two daemons.

Writes carry the object's resourceVersion (PUT -> 409 on a race -> re-read -> decide again). A
``put`` never overwrites a *newer* record (``records.progress_key``) nor the record of another
Node object of the same name (``NodeIdentityChanged``). Every write has failpoints
(``kube.record.put``, ``kube.record.delete``, ``kube.claim``, ``kube.claim.delete``,
``kube.record.mirror``; ``.before`` / ``.after``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
from noderescue.adapters.kube.errors import Conflict, Invalid, KubeError, NotFound
from noderescue.adapters.kube.records import (
    MalformedRecord,
    NodeIdentityChanged,
    StaleRecord,
    progress_key,
    record_from_json,
    record_to_json,
)
from noderescue.adapters.kube.transport import JSON_PATCH, JsonObject, list_pages, request_json
from noderescue.core.model import RECORD_ANNOTATION, Record

log = structlog.get_logger(__name__)

RECORD_PREFIX = "noderescue-record-"
CLAIM_PREFIX = "noderescue-claim-"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "noderescue"
KIND_LABEL = "noderescue.io/kind"
KIND_RECORD = "record"
KIND_CLAIM = "claim"
RECORD_KEY = "record"
CLAIM_KEY = "claim"
CLAIM_FORMAT = 1
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{KIND_LABEL} in ({KIND_CLAIM},{KIND_RECORD})"

_NAME_MAX = 253  # a DNS-1123 subdomain, what ConfigMap names must be
_HASH_LEN = 10
_VALID_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ATTEMPTS = 8
_MIRROR_ATTEMPTS = 3
_ANNOTATION_POINTER = "/metadata/annotations/" + RECORD_ANNOTATION.replace("~", "~0").replace("/", "~1")


def object_name(prefix: str, key: str) -> str:
    """``prefix + key`` when that is a valid object name; otherwise a valid name made of the key's
    lowercased, cleaned, truncated form and a hash of the key itself (so two keys never share it)."""
    name = prefix + key
    if len(name) <= _NAME_MAX and _VALID_NAME.match(name):
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_LEN]
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", key.lower())
    cleaned = re.sub(r"\.(?=[.-])|-(?=\.)", "", cleaned)  # no empty DNS labels, no "-." / ".-"
    cleaned = cleaned[: _NAME_MAX - len(prefix) - _HASH_LEN - 1].strip(".-")
    return f"{prefix}{cleaned}-{digest}" if cleaned else f"{prefix}{digest}"


def record_object_name(node: str) -> str:
    return object_name(RECORD_PREFIX, node)


def claim_object_name(new_node_uid: str) -> str:
    return object_name(CLAIM_PREFIX, new_node_uid)


@dataclass(frozen=True, slots=True)
class Claim:
    """New node ``new_node`` (``new_node_uid``) verified the replace of ``replaced_node``."""

    new_node_uid: str
    new_node: str
    replaced_node: str
    claimed_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class LoadedRecords:
    """Everything the store holds, read at once."""

    records: Mapping[str, Record] = field(default_factory=dict)  # node name -> record
    claims: Mapping[str, Claim] = field(default_factory=dict)  # new node uid -> claim
    malformed: Mapping[str, str] = field(default_factory=dict)  # object name -> why it was skipped


class MalformedClaim(ValueError):
    """A claim object that cannot be read."""


def claim_to_json(claim: Claim) -> str:
    return orjson.dumps(
        {
            "v": CLAIM_FORMAT,
            "newNodeUID": claim.new_node_uid,
            "newNode": claim.new_node,
            "replacedNode": claim.replaced_node,
            "claimedAt": claim.claimed_at,
        }
    ).decode()


def claim_from_json(text: str) -> Claim:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedClaim(f"claim is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != CLAIM_FORMAT:
        raise MalformedClaim("claim is not a format 1 claim object")
    names = [doc.get(k) for k in ("newNodeUID", "newNode", "replacedNode")]
    at = doc.get("claimedAt")
    if not all(isinstance(n, str) and n for n in names):
        raise MalformedClaim("claim lacks newNodeUID, newNode or replacedNode")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise MalformedClaim("claim lacks claimedAt")
    return Claim(str(names[0]), str(names[1]), str(names[2]), float(at))


def _meta(obj: JsonObject) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _data(obj: JsonObject, key: str) -> str:
    data = obj.get("data")
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise MalformedRecord(f"data lacks {key!r}")
    return value


def _parse_record_object(obj: JsonObject) -> Record:
    """The record a record object holds; ``MalformedRecord`` when it is not a valid one of ours."""
    record = record_from_json(_data(obj, RECORD_KEY))
    name = _meta(obj).get("name")
    if name != record_object_name(record.node):
        raise MalformedRecord(f"object {name} holds the record of node {record.node}")
    return record


def _parse_claim_object(obj: JsonObject) -> Claim:
    try:
        claim = claim_from_json(_data(obj, CLAIM_KEY))
    except MalformedRecord as exc:
        raise MalformedClaim(str(exc)) from exc
    name = _meta(obj).get("name")
    if name != claim_object_name(claim.new_node_uid):
        raise MalformedClaim(f"object {name} holds the claim of node uid {claim.new_node_uid}")
    return claim


@dataclass(frozen=True, slots=True)
class _Known:
    """What this store last saw of a node's record object: absent (``version`` None), or its
    resourceVersion, text, and record (None when malformed)."""

    version: str | None
    text: str | None = None
    record: Record | None = None


_ABSENT = _Known(None)


class RecordStore:
    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
        page_size: int = 500,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._clock = clock
        self._page_size = page_size
        self._collection = f"/api/v1/namespaces/{namespace}/configmaps"
        # Last seen state of each node's record object: a put then needs no GET unless it races.
        self._known: dict[str, _Known] = {}

    @property
    def namespace(self) -> str:
        return self._namespace

    def _path(self, name: str) -> str:
        return f"{self._collection}/{name}"

    def _object(self, name: str, kind: str, key: str, text: str, version: str | None) -> JsonObject:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self._namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, KIND_LABEL: kind},
        }
        if version is not None:
            meta["resourceVersion"] = version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {key: text}}

    # ---- reads -------------------------------------------------------------------------------

    async def load(self) -> LoadedRecords:
        """Every record and claim (one paged LIST by label selector). An object that cannot be
        read is logged and reported in ``malformed``, never raised and never acted on."""
        records: dict[str, Record] = {}
        claims: dict[str, Claim] = {}
        malformed: dict[str, str] = {}
        known: dict[str, _Known] = {}

        def on_page(items: list[JsonObject]) -> None:
            for obj in items:
                meta = _meta(obj)
                name = str(meta.get("name") or "?")
                kind = (meta.get("labels") or {}).get(KIND_LABEL)
                try:
                    if kind == KIND_RECORD:
                        record = _parse_record_object(obj)
                        records[record.node] = record
                        text = _data(obj, RECORD_KEY)
                        known[record.node] = _Known(str(meta.get("resourceVersion") or ""), text, record)
                    else:
                        claim = _parse_claim_object(obj)
                        claims[claim.new_node_uid] = claim
                except (MalformedRecord, MalformedClaim) as exc:
                    malformed[name] = str(exc)
                    log.warning("record_object_malformed", object=name, kind=kind, error=str(exc))

        await list_pages(
            self._api, self._collection, on_page, query={"labelSelector": SELECTOR}, page_size=self._page_size
        )
        self._known = known
        return LoadedRecords(records=records, claims=claims, malformed=malformed)

    async def get(self, node: str) -> Record | None:
        """The node's record, read now. Raises ``MalformedRecord`` for an unreadable object."""
        known = await self._read(node)
        if known.version is not None and known.record is None:
            raise MalformedRecord(f"the record object of node {node} cannot be read")
        return known.record

    async def get_claim(self, new_node_uid: str) -> Claim | None:
        try:
            obj = await request_json(self._api, "GET", self._path(claim_object_name(new_node_uid)))
        except NotFound:
            return None
        return _parse_claim_object(obj)

    async def _read(self, node: str) -> _Known:
        try:
            obj = await request_json(self._api, "GET", self._path(record_object_name(node)))
        except NotFound:
            known = _ABSENT
        else:
            text = (obj.get("data") or {}).get(RECORD_KEY)
            try:
                record: Record | None = _parse_record_object(obj)
            except MalformedRecord as exc:
                log.warning("record_object_malformed", node=node, error=str(exc))
                record = None
            version = str(_meta(obj).get("resourceVersion") or "")
            known = _Known(version, text if isinstance(text, str) else None, record)
        self._known[node] = known
        return known

    # ---- records -----------------------------------------------------------------------------

    async def put(self, record: Record) -> None:
        """Create or update the node's record, unless the store holds a newer one.

        Raises ``StaleRecord`` (a newer record is stored; it is left alone),
        ``NodeIdentityChanged`` (the stored record is of another Node object with this name),
        ``KubeError``. An unreadable stored record counts as older than anything.
        """
        node = record.node
        name = record_object_name(node)
        text = record_to_json(record)
        for _ in range(_ATTEMPTS):
            known = self._known.get(node)
            if known is None:
                known = await self._read(node)
            current = known.record
            if current is not None:
                if current.node_uid != record.node_uid:
                    raise NodeIdentityChanged(
                        f"the record of node {node} is of uid {current.node_uid}, not {record.node_uid}"
                    )
                if progress_key(current) > progress_key(record):
                    raise StaleRecord(current)
            elif known.version is not None:
                log.warning("record_malformed_overwritten", node=node)
            if known.version is not None and known.text == text:
                return
            body = self._object(name, KIND_RECORD, RECORD_KEY, text, known.version)
            self._known.pop(node, None)  # until the answer says what is stored now
            failpoints.hit("kube.record.put.before")
            try:
                if known.version is None:
                    stored = await request_json(self._api, "POST", self._collection, body=body)
                else:
                    stored = await request_json(self._api, "PUT", self._path(name), body=body)
            except (Conflict, NotFound) as exc:
                if isinstance(exc, NotFound) and known.version is None:
                    raise  # POST to a namespace that does not exist
                # Created, changed or deleted by someone else meanwhile: re-read and decide again.
                log.info("record_put_race_retry", node=node, error=str(exc))
                continue
            failpoints.hit("kube.record.put.after")
            self._known[node] = _Known(str(_meta(stored).get("resourceVersion") or ""), text, record)
            return
        raise Conflict(f"the record of node {node} kept changing while writing it", status=409)

    async def delete(self, node: str) -> None:
        """Remove the node's record (the remediation is over). Idempotent: a missing one is fine."""
        self._known.pop(node, None)
        failpoints.hit("kube.record.delete.before")
        try:
            await request_json(self._api, "DELETE", self._path(record_object_name(node)))
        except NotFound:
            pass
        failpoints.hit("kube.record.delete.after")
        self._known[node] = _ABSENT

    # ---- claims ------------------------------------------------------------------------------

    async def claim(self, new_node_uid: str, new_node: str, replaced_node: str) -> bool:
        """Let ``new_node`` verify the replace of ``replaced_node``, at most once ever.

        True when the claim was created now or already names ``replaced_node`` (a retry after a
        lost answer); False when another replace holds this new node. Raises ``KubeError``.
        """
        name = claim_object_name(new_node_uid)
        claim = Claim(new_node_uid, new_node, replaced_node, self._clock())
        body = self._object(name, KIND_CLAIM, CLAIM_KEY, claim_to_json(claim), None)
        for _ in range(_ATTEMPTS):
            failpoints.hit("kube.claim.before")
            try:
                await request_json(self._api, "POST", self._collection, body=body)
            except Conflict:
                try:
                    held = await self.get_claim(new_node_uid)
                except MalformedClaim as exc:
                    # Only someone with write access to our namespace wrote that: never let it
                    # count for anyone (a node verifying two replaces is worse than none).
                    log.error("claim_malformed_refused", new_node=new_node, object=name, error=str(exc))
                    return False
                if held is None:
                    continue  # pruned between our POST and our GET: try again
                if held.replaced_node == replaced_node:
                    return True
                log.warning(
                    "claim_held_by_another_replace",
                    new_node=new_node,
                    replaced_node=replaced_node,
                    held_by=held.replaced_node,
                )
                return False
            failpoints.hit("kube.claim.after")
            log.info("replacement_claimed", new_node=new_node, replaced_node=replaced_node)
            return True
        raise Conflict(f"the claim of node {new_node} kept changing", status=409)

    async def prune_claims(self, live_node_uids: Set[str], older_than: float) -> int:
        """Delete the claims of nodes that no longer exist, made before ``older_than`` (epoch s).

        A node that is gone can never verify anything again, so its claim has done its work; the
        age bound keeps claims of nodes a lagging view has not seen yet. Returns how many were
        deleted. Unreadable claims are left alone (``load`` reports them).
        """
        stale: list[tuple[str, str]] = []

        def on_page(items: list[JsonObject]) -> None:
            for obj in items:
                try:
                    claim = _parse_claim_object(obj)
                except MalformedClaim:
                    continue
                if claim.new_node_uid not in live_node_uids and claim.claimed_at < older_than:
                    meta = _meta(obj)
                    stale.append((str(meta.get("name")), str(meta.get("uid") or "")))

        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{KIND_LABEL}={KIND_CLAIM}"
        await list_pages(
            self._api, self._collection, on_page, query={"labelSelector": selector}, page_size=self._page_size
        )
        deleted = 0
        for name, uid in stale:
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
            failpoints.hit("kube.claim.delete.before")
            try:
                await request_json(self._api, "DELETE", self._path(name), body=body)
            except (NotFound, Conflict):
                continue  # gone already, or recreated meanwhile (then it is not the one we judged)
            failpoints.hit("kube.claim.delete.after")
            deleted += 1
        if deleted:
            log.info("claims_pruned", count=deleted)
        return deleted

    # ---- the mirror for humans -----------------------------------------------------------------

    async def mirror(self, node: str, record: Record | None, *, expected_uid: str) -> None:
        """Show ``record`` (or, with None, nothing) in the Node's annotation, for humans only.

        Best effort: never read back as authority, so a failure is logged and not raised.
        """
        try:
            await self._mirror(node, record, expected_uid)
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            log.warning("record_mirror_failed", node=node, error=str(exc))

    async def _mirror(self, node: str, record: Record | None, expected_uid: str) -> None:
        path = f"/api/v1/nodes/{node}"
        wanted = record_to_json(record) if record is not None else None
        for _ in range(_MIRROR_ATTEMPTS):
            try:
                obj = await request_json(self._api, "GET", path)
            except NotFound:
                return
            meta = _meta(obj)
            if meta.get("uid") != expected_uid:
                log.info("record_mirror_skipped_other_uid", node=node, uid=meta.get("uid"))
                return
            annotations = meta.get("annotations") or {}
            if annotations.get(RECORD_ANNOTATION) == wanted:
                return
            operations: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/uid", "value": expected_uid},
                {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
            ]
            if wanted is None:
                operations.append({"op": "remove", "path": _ANNOTATION_POINTER})
            else:
                if meta.get("annotations") is None:
                    operations.append({"op": "add", "path": "/metadata/annotations", "value": {}})
                operations.append({"op": "add", "path": _ANNOTATION_POINTER, "value": wanted})
            failpoints.hit("kube.record.mirror.before")
            try:
                await request_json(self._api, "PATCH", path, body=operations, content_type=JSON_PATCH)
            except (Conflict, Invalid):
                continue  # the node changed between our read and our patch
            failpoints.hit("kube.record.mirror.after")
            return
        log.info("record_mirror_gave_up", node=node)
