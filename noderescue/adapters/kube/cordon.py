"""Cordon and uncordon, remembering on the Node who cordoned it.

We cordon with a merge patch that carries the resourceVersion we read (optimistic concurrency):
if a human cordons between our read and our write, we get 409, re-read, and see their cordon
instead of claiming it. We only uncordon a node whose ``noderescue.io/cordoned-by`` annotation
says we cordoned it.
"""

from __future__ import annotations

import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
from noderescue.adapters.kube.errors import Conflict
from noderescue.adapters.kube.transport import MERGE_PATCH, JsonObject, request_json
from noderescue.core.model import CORDONED_BY_ANNOTATION

log = structlog.get_logger(__name__)

CORDONED_BY_US = "noderescue"
_ATTEMPTS = 5


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


async def cordon(api: ApiClient, node_name: str) -> bool:
    """Cordon the node. True when it is cordoned by us (now or already); False when someone else
    had already cordoned it (then we leave it alone and must never uncordon it)."""
    for _ in range(_ATTEMPTS):
        node = await request_json(api, "GET", node_path(node_name))
        unschedulable, cordoned_by, version = _cordon_state(node)
        if unschedulable:
            return cordoned_by == CORDONED_BY_US
        patch = {
            "metadata": {"resourceVersion": version, "annotations": {CORDONED_BY_ANNOTATION: CORDONED_BY_US}},
            "spec": {"unschedulable": True},
        }
        failpoints.hit("kube.cordon.before")
        try:
            await request_json(api, "PATCH", node_path(node_name), body=patch, content_type=MERGE_PATCH)
        except Conflict:
            log.info("cordon_conflict_retry", node=node_name)
            continue
        failpoints.hit("kube.cordon.after")
        log.info("node_cordoned", node=node_name)
        return True
    raise Conflict(f"node {node_name} kept changing while cordoning", status=409)


async def uncordon(api: ApiClient, node_name: str) -> bool:
    """Uncordon the node if (and only if) we cordoned it; True when we uncordoned it."""
    for _ in range(_ATTEMPTS):
        node = await request_json(api, "GET", node_path(node_name))
        unschedulable, cordoned_by, version = _cordon_state(node)
        if cordoned_by != CORDONED_BY_US:
            if unschedulable:
                log.info("uncordon_skipped_not_ours", node=node_name, cordoned_by=cordoned_by)
            return False
        patch = {
            "metadata": {"resourceVersion": version, "annotations": {CORDONED_BY_ANNOTATION: None}},
            "spec": {"unschedulable": None},
        }
        failpoints.hit("kube.uncordon.before")
        try:
            await request_json(api, "PATCH", node_path(node_name), body=patch, content_type=MERGE_PATCH)
        except Conflict:
            log.info("uncordon_conflict_retry", node=node_name)
            continue
        failpoints.hit("kube.uncordon.after")
        log.info("node_uncordoned", node=node_name)
        return unschedulable
    raise Conflict(f"node {node_name} kept changing while uncordoning", status=409)
