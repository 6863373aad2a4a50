"""Raw JSON requests through the kubernetes-asyncio client (auth, User-Agent, TLS from it).

We call ``ApiClient.call_api`` with ``_preload_content=False`` and parse the bytes with orjson:
the generated models cost ~2 ms per Node (FACTS), and most of our calls only need a few fields.
With ``_preload_content=False`` kubernetes-asyncio neither reads the body nor checks the status,
so both happen here, and every failure leaves as a ``KubeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube.client import request_timeout_of
from noderescue.adapters.kube.errors import KubeError, error_from_response, map_error

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


async def open_response(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: object = None,
    content_type: str = "application/json",
    client_timeout: aiohttp.ClientTimeout | float | None = None,
) -> aiohttp.ClientResponse:
    """Send a request; return the open response of a 2xx, raise a KubeError otherwise.

    The caller owns the response (``release()`` it). Used directly for watch streams.
    """
    headers = {"Accept": "application/json", "Content-Type": content_type}
    try:
        resp: aiohttp.ClientResponse = await api.call_api(
            path,
            method,
            query_params=dict(query) if query else None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout if client_timeout is not None else request_timeout_of(api),
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise map_error(exc) from exc
    if 200 <= resp.status <= 299:
        return resp
    try:
        data = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise map_error(exc) from exc
    finally:
        resp.release()
    raise error_from_response(resp.status, data, resp.headers)


async def request_json(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: object = None,
    content_type: str = "application/json",
    timeout_s: float | None = None,
) -> JsonObject:
    """One request with a whole-call timeout; the parsed JSON object of the response."""
    total = timeout_s if timeout_s is not None else request_timeout_of(api)
    try:
        async with asyncio.timeout(total):
            resp = await open_response(
                api, method, path, query=query, body=body, content_type=content_type, client_timeout=total
            )
            try:
                data = await resp.read()
            finally:
                resp.release()
    except KubeError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise map_error(exc) from exc
    if not data:
        return {}
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KubeError(f"response is not JSON: {exc}", status=resp.status) from exc
    if not isinstance(parsed, dict):
        raise KubeError("response is not a JSON object", status=resp.status)
    return parsed


async def list_pages(
    api: ApiClient,
    path: str,
    on_page: Callable[[list[JsonObject]], None],
    *,
    query: Mapping[str, str] | None = None,
    page_size: int = 500,
) -> str:
    """A collection page by page (``limit``/``continue``), each page handed to ``on_page``;
    returns the list's resourceVersion.

    While ``on_page`` digests page k (CPU work on the loop), the request for page k+1 is
    already on its way, so the server prepares it in parallel. At most two pages in memory.
    """
    params = dict(query or {})
    params["limit"] = str(page_size)
    fetch = asyncio.ensure_future(request_json(api, "GET", path, query=dict(params)))
    try:
        while True:
            page = await fetch
            items = page.get("items") or []
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if token:
                params["continue"] = token
                fetch = asyncio.ensure_future(request_json(api, "GET", path, query=dict(params)))
                # Let the prefetch send its request before on_page holds the loop.
                for _ in range(3):
                    await asyncio.sleep(0)
            on_page(items)
            if not token:
                return str(meta.get("resourceVersion") or "")
    finally:
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, KubeError):
                await fetch


async def list_all(
    api: ApiClient, path: str, *, query: Mapping[str, str] | None = None, page_size: int = 500
) -> tuple[list[JsonObject], str]:
    """Every item of a collection, with the list's resourceVersion."""
    items: list[JsonObject] = []
    version = await list_pages(api, path, items.extend, query=query, page_size=page_size)
    return items, version
