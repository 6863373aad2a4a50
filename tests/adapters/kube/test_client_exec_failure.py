"""A failing kubeconfig exec credential plugin: its stderr may hold tokens, keys and passwords,
and the error text goes to /readyz, /status and the logs, so only a redacted summary may leave."""

from __future__ import annotations

import stat
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from noderescue.adapters.kube.client import ExecPluginFailed, make_api_client, summarize_exec_failure
from noderescue.adapters.kube.errors import KubeError
from noderescue.adapters.kube.transport import request_json

SECRETS = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJub2RlcmVzY3VlIn0.c2lnbmF0dXJl",
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)
STDERR = (
    f"error: refreshing token {SECRETS[0]} for AccessKeyId {SECRETS[1]} failed: password={SECRETS[2]}\n"
    f"secret access key: {SECRETS[3]}\n"
)

# Fails from its `fail_from`-th run on (the first runs hand out a token about to expire).
PLUGIN = """#!/bin/sh
echo run >> "{counter}"
n=$(wc -l < "{counter}" | tr -d ' ')
if [ "$n" -ge {fail_from} ]; then
  printf '%s' '{stderr}' >&2
  exit 3
fi
printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",\
"status":{{"token":"tok-%s","expirationTimestamp":"{expires}"}}}}' "$n"
"""


def _kubeconfig(tmp_path: Path, fail_from: int) -> Path:
    plugin = tmp_path / "plugin.sh"
    expires = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin.write_text(
        PLUGIN.format(counter=tmp_path / "runs", fail_from=fail_from, stderr=STDERR, expires=expires)
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
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
    return path


def _everything_printed(exc: BaseException) -> str:
    """What log.exception or a crash would print: the message and the whole chain."""
    return "".join(traceback.format_exception(exc))


def _assert_redacted(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "secret access key" not in text  # only the first line of stderr survives


async def test_failing_plugin_at_start_gives_a_summary_without_secrets(tmp_path: Path) -> None:
    with pytest.raises(ExecPluginFailed) as caught:
        await make_api_client(_kubeconfig(tmp_path, fail_from=1), None)
    message = str(caught.value)
    assert "exec credential plugin plugin.sh exited with status 3" in message
    assert "refreshing token" in message  # the operator still learns what went wrong
    _assert_redacted(_everything_printed(caught.value))


async def test_failing_plugin_on_refresh_gives_a_summary_without_secrets(tmp_path: Path) -> None:
    api = await make_api_client(_kubeconfig(tmp_path, fail_from=2), None, timeout_s=2)
    try:
        with pytest.raises(KubeError) as caught:
            await request_json(api, "GET", "/api/v1/nodes")
    finally:
        await api.close()
    assert "exited with status 3" in str(caught.value)
    _assert_redacted(_everything_printed(caught.value))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "exec: process returned 1", "exec credential plugin exited with status 1", id="no-stderr"
        ),
        pytest.param(
            "exec: process returned 2. see https://u:pw@sso.example.com/x?token=abc&b=1",
            "exec credential plugin exited with status 2: see https://[REDACTED]@sso.example.com/x?[REDACTED]",
            id="url-credentials",
        ),
        pytest.param(
            "exec: failed to decode process output: Expecting value",
            "exec: failed to decode process output: Expecting value",
            id="other-exec-errors-pass",
        ),
    ],
)
def test_summaries(text: str, expected: str) -> None:
    assert summarize_exec_failure(text, command=None) == expected


def test_summary_is_bounded() -> None:
    assert len(summarize_exec_failure("exec: process returned 1. " + "word " * 1000, command="x")) <= 240
