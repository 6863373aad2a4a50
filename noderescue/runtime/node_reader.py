"""The identity guard's view of a Node, read fresh from the API server (never from the cache)."""

from __future__ import annotations

from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.cloud.guard import NodeIdentity
from noderescue.adapters.kube import NotFound
from noderescue.adapters.kube.transport import request_json


class KubeNodeReader:
    """Implements ``adapters.cloud.guard.NodeReader`` over the Kubernetes API (GET is a read,
    so this is also what dry-run uses)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

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
        )
