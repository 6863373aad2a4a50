"""Secrets in the configuration: from a file or the environment, never echoed.

A secret setting ``x`` comes in three spellings, exactly one of which is given: ``x`` (inline:
a warning in ``check-config``, an error under ``--strict``, because the configuration file is a
ConfigMap or a world-readable file), ``xFile`` (a path, read when the daemon starts: a mounted
Secret, a systemd credential) and ``xEnv`` (the name of an environment variable). Webhook URLs
and webhook headers use it now; later secrets (PagerDuty routing keys, BMC credentials) take the
same three keys and :func:`read_secret`.

Nothing here prints a secret: messages name the YAML path and the file or variable, and a URL
shows as scheme and host only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from noderescue.config_errors import ConfigIssue
from noderescue.config_yaml import LineMap, YamlPath, format_path

# Header names whose values are credentials (Authorization, X-Api-Key, X-Auth-Token ...).
SECRET_HEADER = re.compile(r"authorization|token|secret|key|signature|password|cookie", re.IGNORECASE)
# An environment variable name as POSIX shells accept it.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_SECRET_BYTES = 64 * 1024


class SecretError(ValueError):
    """A secret could not be read; the message names where from, never the value."""


def redact_url(value: object) -> str:
    """A URL as it may appear in a message: scheme and host, the rest (path, query, userinfo:
    where webhook secrets live) cut to ``…``."""
    if not isinstance(value, str):
        return "a non-text value"
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = netloc.rpartition("@")[2]
    cut = len(host) < len(rest)
    shown = f"{scheme}://{host}" if sep else host
    return f"'{shown}/…'" if cut else f"'{shown}'"


def read_secret(*, inline: str | None, file: Path | None, env: str | None, where: str) -> str:
    """The secret's value from whichever of the three spellings is set (validation made sure
    exactly one is). ``where`` is the YAML path, for messages."""
    if inline is not None:
        return inline
    if file is not None:
        try:
            with file.open("rb") as handle:
                raw = handle.read(_MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            raise SecretError(f"{where}File: {file}: no such file") from None
        except PermissionError:
            raise SecretError(f"{where}File: {file}: permission denied") from None
        except OSError as exc:
            raise SecretError(
                f"{where}File: {file}: cannot read ({exc.strerror or type(exc).__name__})"
            ) from None
        if len(raw) > _MAX_SECRET_BYTES:
            raise SecretError(f"{where}File: {file}: larger than {_MAX_SECRET_BYTES} bytes")
        try:
            value = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise SecretError(f"{where}File: {file}: not UTF-8 text") from None
        if not value:
            raise SecretError(f"{where}File: {file}: the file is empty")
        return value
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"{where}Env: the environment variable {env} is not set or empty")
        return value
    raise SecretError(f"{where}: not configured")


def resolve_url(value: str, where: str) -> str:
    """A secret URL read from a file or the environment must still be http(s) with a host."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise SecretError(f"{where}: invalid URL {redact_url(value)}: expected http://... or https://...")
    return value


def inline_secret_warnings(data: Mapping[str, Any], lines: LineMap) -> list[ConfigIssue]:
    """Secrets written into the configuration itself (run on the raw YAML data)."""
    issues: list[ConfigIssue] = []

    def add(path: YamlPath, message: str) -> None:
        issues.append(ConfigIssue(format_path(path), lines.line_for(path), message))

    notifications = data.get("notifications")
    if not isinstance(notifications, list):
        return issues
    for index, item in enumerate(notifications):
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("url"), str):
            add(
                ("notifications", index, "url"),
                "the webhook URL is written inline (webhook URLs carry their secret): "
                "use urlFile (a mounted Secret, a systemd credential) or urlEnv",
            )
        headers = item.get("headers")
        if isinstance(headers, dict):
            for name in headers:
                if isinstance(name, str) and SECRET_HEADER.search(name):
                    add(
                        ("notifications", index, "headers", name),
                        f"header {name} looks like a credential written inline: "
                        "use headersFile or headersEnv",
                    )
    return issues
