"""Cordon and uncordon, releasing only a cordon that is provably ours.

We cordon with a merge patch that carries the resourceVersion we read (optimistic concurrency:
if a human cordons between our read and our write, we get 409, re-read, and see their cordon
instead of claiming it), under our own field manager ``noderescue-cordon``. The API server then
records in ``metadata.managedFields`` which manager last set ``spec.unschedulable`` and when.
``cordon_owned`` returns that owner and time as they stood right after our cordon; the caller keeps
them in its durable record and passes them back to ``uncordon``. A human who uncordons and cordons
again (``kubectl uncordon`` + ``kubectl cordon``) takes the field over (another manager —
``kubectl``, from its User-Agent — and a new time), so ``uncordon`` sees that the cordon is no longer ours and
leaves it — even though our ``noderescue.io/cordoned-by`` annotation, which the human's commands
do not touch, still names us. The annotation is a mirror for humans; it decides only when the API
server keeps no managedFields at all.

The cordon has a manager of its own (not the one derived from our User-Agent, ``noderescue``)
because a manager's entry has one time for all its fields: our record writes to the Node would
move it and make our own cordon look foreign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
from noderescue.adapters.kube.errors import Conflict
from noderescue.adapters.kube.transport import MERGE_PATCH, JsonObject, request_json
from noderescue.core.model import CORDONED_BY_ANNOTATION

log = structlog.get_logger(__name__)

CORDONED_BY_US = "noderescue"
CORDON_MANAGER = "noderescue-cordon"
# Managers whose ownership of spec.unschedulable is ours when no record says more: our cordon
# manager, and the User-Agent-derived one under which older versions of noderescue cordoned.
_OUR_MANAGERS = frozenset({CORDON_MANAGER, "noderescue"})
_ATTEMPTS = 5
_QUERY = {"fieldManager": CORDON_MANAGER}


@dataclass(frozen=True, slots=True)
class CordonResult:
    """What ``cordon_owned`` found or did.

    ``ours``: the node is cordoned by us (now, or already by us before); False when someone else
    had cordoned it (then it must never be uncordoned by us). ``owner`` and ``at``: the field
    manager and time that own ``spec.unschedulable`` in managedFields after the call (None when
    the server keeps no managedFields); keep them durably and pass them to ``uncordon``.
    """

    ours: bool
    owner: str | None
    at: str | None


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


def _cordon_state(node: JsonObject) -> tuple[bool, str | None, str]:
    spec = node.get("spec") or {}
    meta = node.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        spec.get("unschedulable") is True,
        annotations.get(CORDONED_BY_ANNOTATION),
        str(meta.get("resourceVersion") or ""),
    )


def _managed_fields(node: JsonObject) -> list[Any]:
    meta = node.get("metadata") or {}
    entries = meta.get("managedFields") if isinstance(meta, dict) else None
    return entries if isinstance(entries, list) else []


def unschedulable_owner(node: JsonObject) -> tuple[str | None, str | None]:
    """(manager, time) of the managedFields entry that owns ``spec.unschedulable``; the latest one
    if several do (server-side apply can share a field); (None, None) if none does."""
    found: tuple[str | None, str | None] = (None, None)
    for entry in _managed_fields(node):
        if not isinstance(entry, dict):
            continue
        fields = entry.get("fieldsV1")
        spec = fields.get("f:spec") if isinstance(fields, dict) else None
        if not isinstance(spec, dict) or "f:unschedulable" not in spec:
            continue
        manager, at = entry.get("manager"), entry.get("time")
        manager = manager if isinstance(manager, str) else None
        at = at if isinstance(at, str) else None
        if found == (None, None) or (at or "") > (found[1] or ""):
            found = (manager, at)
    return found


def _ours_without_record(node: JsonObject, cordoned_by: str | None) -> bool:
    """Is this cordon ours, with nothing but the Node to go by? Our annotation, and the field
    still owned by one of our managers (a human's cordon over our annotation is not ours)."""
    if cordoned_by != CORDONED_BY_US:
        return False
    if not _managed_fields(node):
        return True  # a server without managedFields: the annotation is all there is
    owner, _ = unschedulable_owner(node)
    return owner in _OUR_MANAGERS


async def cordon_owned(api: ApiClient, node_name: str) -> CordonResult:
    """Cordon the node and say who owns the cordon afterwards (see ``CordonResult``)."""
    for _ in range(_ATTEMPTS):
        node = await request_json(api, "GET", node_path(node_name))
        unschedulable, cordoned_by, version = _cordon_state(node)
        if unschedulable:
            owner, at = unschedulable_owner(node)
            ours = _ours_without_record(node, cordoned_by)
            if cordoned_by == CORDONED_BY_US and not ours:
                log.info("cordon_taken_over_by_someone_else", node=node_name, owner=owner)
            return CordonResult(ours=ours, owner=owner, at=at)
        patch = {
            "metadata": {"resourceVersion": version, "annotations": {CORDONED_BY_ANNOTATION: CORDONED_BY_US}},
            "spec": {"unschedulable": True},
        }
        failpoints.hit("kube.cordon.before")
        try:
            updated = await request_json(
                api, "PATCH", node_path(node_name), query=_QUERY, body=patch, content_type=MERGE_PATCH
            )
        except Conflict:
            log.info("cordon_conflict_retry", node=node_name)
            continue
        failpoints.hit("kube.cordon.after")
        owner, at = unschedulable_owner(updated)
        log.info("node_cordoned", node=node_name, owner=owner, owned_since=at)
        return CordonResult(ours=True, owner=owner, at=at)
    raise Conflict(f"node {node_name} kept changing while cordoning", status=409)


async def cordon(api: ApiClient, node_name: str) -> bool:
    """Cordon the node. True when it is cordoned by us (now or already); False when someone else
    had already cordoned it (then we leave it alone and must never uncordon it)."""
    return (await cordon_owned(api, node_name)).ours


async def uncordon(
    api: ApiClient, node_name: str, *, owner: str | None = None, at: str | None = None
) -> bool:
    """Uncordon the node if (and only if) the cordon is provably ours; True when we uncordoned it.

    With ``owner`` (and ``at``) from ``cordon_owned``: only while managedFields still show that
    manager owning ``spec.unschedulable`` with that same time. Without them (no record to go by):
    only while our annotation is there and one of our managers owns the field. A cordon that is
    no longer ours stays; our stale annotation is removed from it.
    """
    for _ in range(_ATTEMPTS):
        node = await request_json(api, "GET", node_path(node_name))
        unschedulable, cordoned_by, version = _cordon_state(node)
        current_owner, current_at = unschedulable_owner(node)
        if owner is not None:
            ours = unschedulable and (current_owner, current_at) == (owner, at)
        else:
            ours = unschedulable and _ours_without_record(node, cordoned_by)
        if not ours and cordoned_by != CORDONED_BY_US:
            if unschedulable:
                log.info("uncordon_skipped_not_ours", node=node_name, owner=current_owner)
            return False
        annotations = {CORDONED_BY_ANNOTATION: None}
        patch: dict[str, Any] = {"metadata": {"resourceVersion": version, "annotations": annotations}}
        if ours:
            patch["spec"] = {"unschedulable": None}
        elif unschedulable:
            log.warning(
                "uncordon_refused_cordon_taken_over",
                node=node_name,
                owner=current_owner,
                owned_since=current_at,
                our_owner=owner,
                our_time=at,
            )
        failpoints.hit("kube.uncordon.before")
        try:
            await request_json(
                api, "PATCH", node_path(node_name), query=_QUERY, body=patch, content_type=MERGE_PATCH
            )
        except Conflict:
            log.info("uncordon_conflict_retry", node=node_name)
            continue
        failpoints.hit("kube.uncordon.after")
        if ours:
            log.info("node_uncordoned", node=node_name)
        return ours
    raise Conflict(f"node {node_name} kept changing while uncordoning", status=409)
