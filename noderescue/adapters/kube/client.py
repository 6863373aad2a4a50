"""One kubernetes-asyncio client per cluster: kubeconfig or in-cluster, our User-Agent, timeouts."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePath
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import kube_config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import load_incluster_config

from noderescue import USER_AGENT

DEFAULT_TIMEOUT_S = 10.0


class ExecPluginFailed(Exception):
    """The kubeconfig's exec credential plugin failed; the message is a redacted summary."""


# A failing plugin's stderr can hold tokens, keys and passwords (it prints what it tried), and
# the error travels to /readyz, /status and the logs: only its first line survives, with
# anything that looks like a credential cut out, and bounded in length.
_EXEC_FAILED = re.compile(r"^exec: process returned (?P<code>-?\d+)(?:\. (?P<stderr>.*))?$", re.DOTALL)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)
_URL_QUERY = re.compile(r"(?P<url>[a-z][a-z0-9+.-]*://[^\s?#]*)\?\S*", re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[\w.-]*(?:token|secret|password|passwd|key|credential|signature|sig|auth)[\w.-]*\s*[=:]\s*)\S+",
    re.IGNORECASE,
)
# JWTs, access keys, base64 blobs: a long run without spaces of the characters they are made of.
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_.~-]{20,}")
_MAX_STDERR = 160
REDACTED = "[REDACTED]"


def _scrub(line: str) -> str:
    line = _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", line)
    line = _URL_QUERY.sub(rf"\g<url>?{REDACTED}", line)
    line = _ASSIGNMENT.sub(rf"\g<name>{REDACTED}", line)
    line = _OPAQUE.sub(lambda m: m.group(0) if "://" in m.group(0) else REDACTED, line)
    if len(line) > _MAX_STDERR:
        line = line[: _MAX_STDERR - 1] + "…"
    return line


def summarize_exec_failure(message: str, *, command: str | None) -> str:
    """kubernetes-asyncio's ``exec: process returned N. <stderr>`` as something safe to show."""
    match = _EXEC_FAILED.match(message.strip())
    if match is None:
        return _scrub(message.strip().splitlines()[0]) if message.strip() else "exec credential plugin failed"
    name = f" {PurePath(command).name}" if command else ""
    summary = f"exec credential plugin{name} exited with status {match.group('code')}"
    stderr = (match.group("stderr") or "").strip()
    if stderr:
        summary += f": {_scrub(stderr.splitlines()[0].strip())}"
    return summary


class _SummarizeExecErrors(logging.Filter):
    """kubernetes-asyncio logs the plugin's whole stderr itself (``logger.error(str(e))``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("exec:"):
            record.msg, record.args = summarize_exec_failure(text, command=None), None
        return True


logging.getLogger(kube_config.__name__).addFilter(_SummarizeExecErrors())


class KubeClient(ApiClient):
    """An ``ApiClient`` that also knows the per-request timeout the transport applies."""

    def __init__(self, configuration: Configuration, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(configuration=configuration)
        self.timeout_s = timeout_s
        self.user_agent = USER_AGENT


def request_timeout_of(api: ApiClient) -> float:
    """The client's per-request timeout (a plain ApiClient gets the default)."""
    return float(getattr(api, "timeout_s", DEFAULT_TIMEOUT_S))


async def make_api_client(
    kubeconfig: Path | None, context: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> KubeClient:
    """A client for one cluster. Must be called inside a running event loop.

    ``kubeconfig`` None means in-cluster (service account token, refreshed from its file).
    Exec credential plugins are re-run when their token expires: the loader is wired into the
    configuration's refresh hook, which kubernetes-asyncio awaits before every request.
    """
    configuration = Configuration()
    if kubeconfig is None:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            loader = await kube_config.load_kube_config(
                config_file=str(kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except ConfigException as exc:
            if not str(exc).startswith("exec:"):
                raise
            # `from None`: the original (with the plugin's stderr) must not ride along in a traceback.
            raise ExecPluginFailed(
                summarize_exec_failure(str(exc), command=_exec_command(kubeconfig, context))
            ) from None
        if loader._user is not None and "exec" in loader._user:
            configuration.refresh_api_key_hook = _exec_token_refresher(loader)
    return KubeClient(configuration, timeout_s=timeout_s)


def _exec_command(kubeconfig: Path, context: str | None) -> str | None:
    """The exec plugin's command, for the summary (None when the kubeconfig says otherwise)."""
    try:
        loader = kube_config.KubeConfigLoader(
            config_dict=kube_config.KubeConfigMerger(str(kubeconfig)).config, active_context=context
        )
        return _command_of(loader._user)
    except Exception:  # only a name for a message: never fail for it
        return None


def _command_of(user: Any) -> str | None:
    try:
        command = user["exec"]["command"]
    except (KeyError, TypeError, ConfigException):
        return None
    return str(command) if command else None


def _exec_token_refresher(loader: Any) -> Any:
    command = _command_of(loader._user)

    async def refresh(configuration: Configuration) -> None:
        # load_from_exec_plugin returns at once while the cached credential has not expired.
        try:
            refreshed = await loader.load_from_exec_plugin()
        except ConfigException as exc:
            if not str(exc).startswith("exec:"):
                raise
            raise ExecPluginFailed(summarize_exec_failure(str(exc), command=command)) from None
        if refreshed and getattr(loader, "token", None):
            configuration.api_key["BearerToken"] = loader.token

    return refresh
