"""Client setup: kubeconfig with an exec credential plugin, token refresh, User-Agent, timeouts.

A tiny aiohttp server records the headers of each request (the emulator does not check tokens).
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from noderescue import USER_AGENT
from noderescue.adapters.kube.client import make_api_client
from noderescue.adapters.kube.errors import NotFound, Unavailable
from noderescue.adapters.kube.transport import request_json

PLUGIN = """#!/bin/sh
echo run >> "{counter}"
n=$(wc -l < "{counter}" | tr -d ' ')
printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",\
"status":{{"token":"tok-%s","expirationTimestamp":"{expires}"}}}}' "$n"
"""


class Recorder:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.hang = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if request.path == "/api/v1/nodes/slow":
            await self.hang.wait()
        if request.path == "/api/v1/nodes/missing":
            return web.json_response({"kind": "Status", "message": 'nodes "missing" not found'}, status=404)
        return web.json_response({"kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": []})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rec, f"http://127.0.0.1:{port}"
    finally:
        rec.hang.set()
        await runner.cleanup()


def exec_kubeconfig(tmp_path: Path, url: str, expires: datetime) -> tuple[Path, Path]:
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(PLUGIN.format(counter=counter, expires=expires.strftime("%Y-%m-%dT%H:%M:%SZ")))
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [
            {
                "name": "u",
                "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}},
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_bytes(orjson.dumps(config))
    return path, counter


@pytest.mark.parametrize(
    ("valid_for", "expected_tokens"),
    [
        pytest.param(timedelta(minutes=1), ["tok-2", "tok-3"], id="expiring-token-is-refreshed"),
        pytest.param(timedelta(hours=1), ["tok-1", "tok-1"], id="valid-token-is-reused"),
    ],
)
async def test_exec_plugin_token_and_user_agent_on_every_request(
    recorder: tuple[Recorder, str], tmp_path: Path, valid_for: timedelta, expected_tokens: list[str]
) -> None:
    rec, url = recorder
    # Within kubernetes-asyncio's 5-minute skew margin, a credential counts as expired.
    kubeconfig, _ = exec_kubeconfig(tmp_path, url, datetime.now(UTC) + valid_for)
    api = await make_api_client(kubeconfig, None, timeout_s=2)
    try:
        for _ in expected_tokens:
            await request_json(api, "GET", "/api/v1/nodes")
    finally:
        await api.close()
    assert [h["Authorization"] for h in rec.headers] == [f"Bearer {t}" for t in expected_tokens]
    assert {h["User-Agent"] for h in rec.headers} == {USER_AGENT}


async def test_errors_and_timeouts_are_mapped(recorder: tuple[Recorder, str], tmp_path: Path) -> None:
    _, url = recorder
    kubeconfig, _ = exec_kubeconfig(tmp_path, url, datetime.now(UTC) + timedelta(hours=1))
    api = await make_api_client(kubeconfig, None, timeout_s=0.3)
    try:
        with pytest.raises(NotFound, match="not found"):
            await request_json(api, "GET", "/api/v1/nodes/missing")
        with pytest.raises(Unavailable, match="timed out"):
            await request_json(api, "GET", "/api/v1/nodes/slow")
    finally:
        await api.close()


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    kubeconfig, _ = exec_kubeconfig(tmp_path, "http://127.0.0.1:9", datetime.now(UTC) + timedelta(hours=1))
    api = await make_api_client(kubeconfig, None, timeout_s=1)
    try:
        with pytest.raises(Unavailable):
            await request_json(api, "GET", "/api/v1/nodes")
    finally:
        await api.close()
