"""The identity guard's view of Nodes: the target read fresh from the API server, and who else
claims its providerID.

Who else claims a providerID is answered from the watch cache when the runtime passes one, and
from a paginated LIST otherwise. The cache is what the daemon decides from anyway, it is kept
current by the watch, and the stale-view gate holds every destructive call while it is not
confirmed within ``staleAfter``; a LIST of every Node before each destructive call would move
the whole Node collection (gigabytes at 100,000 nodes) while the leader's fencing clock runs.
A Node registered in the last moments before a call may be missing from the cache: the guard's
name binding (the cloud's host name of the instance against the Node's name) does not depend on
it, so a forged Node is refused either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.cloud.guard import NodeIdentity
from noderescue.adapters.kube import NotFound
from noderescue.adapters.kube.nodeview import parse_time
from noderescue.adapters.kube.transport import JsonObject, list_pages, request_json
from noderescue.core.model import NodeView

_LIST_PAGE = 500


class NodeViews(Protocol):
    """What the reader needs of the watch cache (``adapters.kube.NodeCache``)."""

    def snapshot(self) -> Sequence[NodeView]: ...


class KubeNodeReader:
    """Implements ``adapters.cloud.guard.NodeReader`` over the Kubernetes API (reads only, so
    this is also what dry-run uses)."""

    def __init__(self, api: ApiClient, cache: NodeViews | None = None) -> None:
        self._api = api
        self._cache = cache

    async def get_node_identity(self, name: str) -> NodeIdentity | None:
        try:
            node = await request_json(self._api, "GET", f"/api/v1/nodes/{name}")
        except NotFound:
            return None
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        provider_id = spec.get("providerID")
        return NodeIdentity(
            uid=str(meta.get("uid") or ""),
            provider_id=provider_id if isinstance(provider_id, str) else None,
            created=parse_time(meta.get("creationTimestamp")),
        )

    async def nodes_claiming(self, provider_id: str) -> Sequence[str]:
        if self._cache is not None:
            return sorted(view.name for view in self._cache.snapshot() if view.provider_id == provider_id)
        claims: list[str] = []

        def on_page(items: list[JsonObject]) -> None:
            for item in items:
                spec = item.get("spec") if isinstance(item, dict) else None
                meta = item.get("metadata") if isinstance(item, dict) else None
                if (
                    isinstance(spec, dict)
                    and spec.get("providerID") == provider_id
                    and isinstance(meta, dict)
                ):
                    claims.append(str(meta.get("name", "")))

        await list_pages(self._api, "/api/v1/nodes", on_page, page_size=_LIST_PAGE)
        return sorted(claims)
