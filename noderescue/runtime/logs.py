"""Logging setup (DESIGN §6): structlog, JSON lines when not a TTY, console on a TTY.

``configure_logging()`` is called once by the command line before anything logs. Every line
carries an ISO-8601 UTC timestamp, the level and whatever is bound with
``structlog.contextvars.bound_contextvars(cluster=..., node=..., ...)``. Records from libraries
that use the standard ``logging`` module (aiohttp, kubernetes_asyncio, botocore, azure) go
through the same processors, so they are JSON too and are redacted the same way.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Libraries that log request details at debug/info level; warning and above is what an operator
# needs from them, and it keeps full API bodies out of the logs (DESIGN §6).
NOISY_LIBRARIES = (
    "aiohttp",
    "kubernetes_asyncio",
    "botocore",
    "boto3",
    "urllib3",
    "azure",
    "asyncio",
)

_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose values are secret whatever they hold (matched case-insensitively, anywhere in the key:
# ``x_auth_token``, ``client_secret``, ``Authorization`` ...).
_SECRET_KEY = re.compile(
    r"token|passw(or)?d|secret|authorization|api[_-]?key|credential|cookie|signature|private[_-]?key",
    re.IGNORECASE,
)
# Inside free text: ``Bearer <token>`` / ``Basic <b64>`` (e.g. a header echoed in an error message).
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# ``scheme://user:password@host`` -> ``scheme://[REDACTED]@host``.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)
# Query parameters that carry credentials (Azure SAS ``sig``, OAuth ``access_token``, ``key`` ...).
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&](?:[a-z0-9_-]*token|sig|signature|secret|password|key|api[_-]?key|code|auth)=)[^&#\s]+",
    re.IGNORECASE,
)
# Webhook URLs whose path *is* the secret (Slack, Discord, Teams/Office 365 incoming webhooks).
_WEBHOOK_PATH = re.compile(
    r"(?P<base>https?://(?:hooks\.slack\.com|(?:[a-z0-9-]+\.)?discord(?:app)?\.com/api/webhooks"
    r"|[a-z0-9-]+\.webhook\.office\.com|outlook\.office\.com/webhook))[^\s\"']*",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Remove credentials from free text: auth headers, URL userinfo, secret query values."""
    # Cheap pre-check: most log values have none of the trigger characters.
    if "://" not in text and "=" not in text and " " not in text:
        return text
    text = _WEBHOOK_PATH.sub(r"\g<base>/…", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    return _SECRET_QUERY.sub(rf"\g<name>{REDACTED}", text)


def _redact_value(value: object, depth: int) -> object:
    if isinstance(value, str):
        return redact_text(value)
    # Bounded recursion: log values are small; a deep structure is a bug, not worth a stack walk.
    if depth >= 4:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: blank secret-named keys and scrub credentials out of string values."""
    for key, value in event_dict.items():
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value, 0)
    return event_dict


def _orjson_dumps(obj: Any, **_kwargs: Any) -> str:
    # default=str: a stray datetime/enum/Path in a log call must not kill the line.
    return orjson.dumps(obj, default=str).decode()


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _renderer(json: bool, stream: TextIO) -> Sequence[Processor]:
    if json:
        return [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    colors = stream.isatty()
    return [structlog.dev.ConsoleRenderer(colors=colors)]


def configure_logging(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and route the standard ``logging`` module through it.

    ``json=None`` picks JSON lines when ``stream`` (default stderr) is not a TTY. ``level`` is one
    of debug/info/warning/error/critical. Safe to call again (tests, ``--log-level`` changes).
    """
    out = stream if stream is not None else sys.stderr
    try:
        threshold = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None
    use_json = (not out.isatty()) if json is None else json
    shared = _shared_processors()
    render = _renderer(use_json, out)

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: tests (and structlog.testing.capture_logs) reconfigure after loggers exist,
        # and the daemon logs little enough that the lookup does not matter.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))
