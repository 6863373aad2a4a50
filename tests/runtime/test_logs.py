"""configure_logging: JSON lines shape, context variables, stdlib routing, secret redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from structlog.contextvars import bound_contextvars

from noderescue.runtime.logs import NOISY_LIBRARIES, REDACTED, configure_logging, redact_text


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the tests that run after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    library_levels = {name: logging.getLogger(name).level for name in NOISY_LIBRARIES}
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, library_level in library_levels.items():
        logging.getLogger(name).setLevel(library_level)


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(stream=stream, level="info")
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_line_has_event_level_and_iso_utc_timestamp(out: io.StringIO) -> None:
    structlog.get_logger("noderescue.test").info("node_cordoned", reason="KernelDeadlock")

    [line] = lines(out)
    assert line["event"] == "node_cordoned"
    assert line["level"] == "info"
    assert line["reason"] == "KernelDeadlock"
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]


def test_bound_context_vars_are_on_every_line(out: io.StringIO) -> None:
    log = structlog.get_logger("noderescue.test")
    with bound_contextvars(cluster="prod-eu1", node="workers-1", action="replace", dry_run=True):
        log.info("drain_started")
        log.warning("drain_slow", pods_left=3)
    log.info("outside")

    first, second, third = lines(out)
    for line in (first, second):
        assert (line["cluster"], line["node"], line["action"], line["dry_run"]) == (
            "prod-eu1",
            "workers-1",
            "replace",
            True,
        )
    assert "cluster" not in third


def test_level_threshold_drops_debug(out: io.StringIO) -> None:
    log = structlog.get_logger("noderescue.test")
    log.debug("too_chatty")
    log.info("kept")

    assert [line["event"] for line in lines(out)] == ["kept"]


def test_stdlib_libraries_go_through_structlog_at_warning(out: io.StringIO) -> None:
    logging.getLogger("aiohttp.client").info("request details nobody needs")
    logging.getLogger("botocore.retryhandler").warning("retrying Throttling")
    with bound_contextvars(cluster="prod-eu1"):
        logging.getLogger("kubernetes_asyncio.watch").error("watch failed")

    got = lines(out)
    assert [(line["logger"], line["level"], line["event"]) for line in got] == [
        ("botocore.retryhandler", "warning", "retrying Throttling"),
        ("kubernetes_asyncio.watch", "error", "watch failed"),
    ]
    assert got[1]["cluster"] == "prod-eu1"


def test_exceptions_render_as_structured_traceback(out: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("noderescue.test").exception("step_crashed")

    [line] = lines(out)
    assert line["exception"][0]["exc_type"] == "RuntimeError"


@pytest.mark.parametrize(
    ("fields", "secret"),
    [
        pytest.param({"token": "abc123tok"}, "abc123tok", id="token-key"),
        pytest.param({"client_secret": "s3cr3t"}, "s3cr3t", id="secret-in-key-name"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "dXNlcjpwYXNz", id="authorization-key"),
        pytest.param({"password": "hunter2"}, "hunter2", id="password-key"),
        pytest.param({"header": "Bearer eyJhbGciOi.payload.sig"}, "eyJhbGciOi", id="bearer-in-value"),
        pytest.param({"url": "https://admin:pa55w0rd@api.example.com/x"}, "pa55w0rd", id="url-userinfo"),
        pytest.param(
            {"url": "https://acct.blob.core.windows.net/c?sv=2024&sig=SAS5ig%3D"},
            "SAS5ig",
            id="sas-sig-query",
        ),
        pytest.param(
            {"url": "https://x.example/cb?access_token=qwerty9"}, "qwerty9", id="access-token-query"
        ),
        pytest.param(
            {"url": "https://hooks.slack.com/services/T00/B00/XXsecretXX"},
            "XXsecretXX",
            id="slack-webhook-path",
        ),
        pytest.param(
            {"cfg": {"kubeconfig": {"user": {"token": "nested-tok"}}}}, "nested-tok", id="nested-mapping"
        ),
        pytest.param({"headers": [("x", "Bearer listtok")]}, "listtok", id="inside-list"),
    ],
)
def test_secrets_are_redacted(out: io.StringIO, fields: dict[str, object], secret: str) -> None:
    structlog.get_logger("noderescue.test").info("something_happened", **fields)

    text = out.getvalue()
    assert secret not in text
    assert REDACTED in text or "/…" in text


def test_secret_in_stdlib_message_is_redacted(out: io.StringIO) -> None:
    logging.getLogger("azure.core").warning("GET https://u:topsecret@mgmt.example/x failed")

    assert "topsecret" not in out.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("plain_event", "plain_event", id="untouched"),
        pytest.param(
            "https://api.example.com/nodes?limit=5",
            "https://api.example.com/nodes?limit=5",
            id="harmless-query-kept",
        ),
        pytest.param("https://hooks.slack.com/services/T/B/S", "https://hooks.slack.com/…", id="slack"),
        pytest.param(
            "https://discord.com/api/webhooks/1/tok", "https://discord.com/api/webhooks/…", id="discord"
        ),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_console_renderer_on_a_tty() -> None:
    stream = TtyStringIO()
    configure_logging(stream=stream)
    structlog.get_logger("noderescue.test").info("hello_console", node="n1")
    text = stream.getvalue()
    assert "hello_console" in text
    assert not text.lstrip().startswith("{")


def test_explicit_json_false_gives_console_even_off_a_tty() -> None:
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    structlog.get_logger("noderescue.test").info("hello_console")
    assert "hello_console" in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="verbose", stream=io.StringIO())
