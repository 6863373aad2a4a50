"""WebhookNotifier against a real aiohttp server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from noderescue import USER_AGENT
from noderescue.adapters.notify import NOTIFICATION_KINDS, Notification, WebhookNotifier, safe_url
from noderescue.adapters.notify.webhook import build_payload, parse_retry_after

SECRET_PATH = "/services/T0001/B0002/s3cr3tPathT0k3n"
SECRET_QUERY = "token=s3cr3tQueryT0k3n"
ALL = frozenset(NOTIFICATION_KINDS)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class Received:
    at: float
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


class Receiver:
    """A webhook endpoint that answers from a script (then 200) and records what it got."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[Received] = []
        self.got_request = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Received(
                time.monotonic(),
                request.path,
                request.query_string,
                dict(request.headers),
                await request.json(),
            )
        )
        self.got_request.set()
        reply = self.script.pop(0) if self.script else Reply()
        if reply.hang:
            await self.release.wait()
        return web.Response(status=reply.status, headers=reply.headers, text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}?{SECRET_QUERY}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rcv = Receiver()
    app = web.Application()
    app.router.add_post(SECRET_PATH, rcv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rcv.port = runner.addresses[0][1]
    yield rcv
    rcv.release.set()
    await runner.cleanup()


def event(kind: str = "started", node: str | None = "workers-1") -> Notification:
    return Notification(
        kind=kind,  # type: ignore[arg-type]
        cluster="prod-eu1",
        node=node,
        cls="workers",
        action="replace",
        message="KernelDeadlock for 1m",
        ts=datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC),
    )


def make_notifier(
    url: str,
    *,
    events: frozenset[str] = ALL,
    headers: dict[str, str] | None = None,
    timeout_s: float = 2.0,
    max_attempts: int = 5,
    queue_size: int = 1000,
    backoff_max_s: float = 0.05,
) -> WebhookNotifier:
    # Backoff in milliseconds: the tests check the retry logic, not the wall clock.
    return WebhookNotifier(
        url,
        events=events,
        headers=headers,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        queue_size=queue_size,
        backoff_initial_s=0.01,
        backoff_max_s=backoff_max_s,
    )


async def wait_for(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        # Polling the notifier's counters: it exposes no events, and 5 ms steps are cheap.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_delivers_json_with_slack_text_and_fields(receiver: Receiver) -> None:
    async with make_notifier(receiver.url, headers={"X-Team": "sre"}) as notifier:
        assert notifier.notify(event()) is True
        await wait_for(lambda: notifier.delivered == 1)

    [req] = receiver.requests
    assert req.path == SECRET_PATH
    assert req.query == SECRET_QUERY
    assert req.headers["User-Agent"] == USER_AGENT
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Team"] == "sre"
    assert req.body == {
        "text": ":wrench: noderescue started: prod-eu1/workers-1 (class workers, action replace): "
        "KernelDeadlock for 1m",
        "kind": "started",
        "cluster": "prod-eu1",
        "node": "workers-1",
        "class": "workers",
        "action": "replace",
        "message": "KernelDeadlock for 1m",
        "ts": "2026-11-26T12:00:00Z",
        "source": USER_AGENT,
    }


@pytest.mark.parametrize(
    ("events", "sent", "delivered_kinds"),
    [
        pytest.param(frozenset({"failed"}), ["started", "failed", "succeeded"], ["failed"], id="only-failed"),
        pytest.param(frozenset(), ["started", "failed"], [], id="none"),
        pytest.param(
            ALL, ["started", "skipped", "needsHuman"], ["started", "skipped", "needsHuman"], id="all"
        ),
    ],
)
async def test_per_event_filter(
    receiver: Receiver, events: frozenset[str], sent: list[str], delivered_kinds: list[str]
) -> None:
    async with make_notifier(receiver.url, events=events) as notifier:
        accepted = [notifier.notify(event(kind)) for kind in sent]
        await wait_for(lambda: notifier.pending == 0 and notifier.delivered == len(delivered_kinds))
    assert accepted == [kind in events for kind in sent]
    assert [r.body["kind"] for r in receiver.requests] == delivered_kinds


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification events"):
        WebhookNotifier("https://hooks.example.com/x", events=frozenset({"started", "exploded"}))


@pytest.mark.parametrize(
    "status",
    [pytest.param(500, id="500"), pytest.param(502, id="502"), pytest.param(503, id="503")],
)
async def test_retries_after_server_errors(receiver: Receiver, status: int) -> None:
    receiver.script = [Reply(status), Reply(status)]
    async with make_notifier(receiver.url) as notifier:
        notifier.notify(event())
        await wait_for(lambda: notifier.delivered == 1)
    assert len(receiver.requests) == 3
    assert notifier.failed == 0


async def test_429_waits_for_retry_after(receiver: Receiver) -> None:
    receiver.script = [Reply(429, {"Retry-After": "1"})]
    async with make_notifier(receiver.url, backoff_max_s=5.0) as notifier:
        notifier.notify(event())
        await wait_for(lambda: notifier.delivered == 1)
    first, second = receiver.requests
    # Without Retry-After the backoff would be a few milliseconds.
    assert 0.95 <= second.at - first.at < 2.0


async def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.script = [Reply(500)] * 3
    with capture_logs() as logs:
        async with make_notifier(receiver.url, max_attempts=3) as notifier:
            notifier.notify(event())
            notifier.notify(event("succeeded"))  # the queue moves on after a failure
            await wait_for(lambda: notifier.failed == 1 and notifier.delivered == 1)
    assert len(receiver.requests) == 4
    assert [r.body["kind"] for r in receiver.requests] == ["started"] * 3 + ["succeeded"]
    events = [entry["event"] for entry in logs]
    assert events.count("notification_retry") == 2
    failed = [entry for entry in logs if entry["event"] == "notification_failed"]
    assert failed[0]["error"] == "HTTP 500"


async def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.script = [Reply(404)]
    async with make_notifier(receiver.url) as notifier:
        notifier.notify(event())
        await wait_for(lambda: notifier.failed == 1)
    assert len(receiver.requests) == 1


async def test_hung_server_does_not_block_notify(receiver: Receiver) -> None:
    receiver.script = [Reply(hang=True)] * 10
    notifier = make_notifier(receiver.url, timeout_s=0.2)
    notifier.start()
    try:
        notifier.notify(event())
        await receiver.got_request.wait()
        started = time.perf_counter()
        for _ in range(100):
            assert notifier.notify(event("succeeded")) is True
        assert time.perf_counter() - started < 0.5  # vs. forever if it waited for the server
        # The hung attempt times out and is retried: the loop is not stuck on it.
        await wait_for(lambda: len(receiver.requests) >= 2)
    finally:
        started = time.perf_counter()
        await notifier.close(deadline_s=0.3)
        closed_in = time.perf_counter() - started
    assert closed_in < 1.0


async def test_overflow_drops_oldest_and_counts(receiver: Receiver) -> None:
    notifier = make_notifier(receiver.url, queue_size=3)
    # Not started yet: everything stays queued.
    for node in ["n1", "n2", "n3", "n4", "n5"]:
        notifier.notify(event(node=node))
    assert notifier.dropped == 2
    assert notifier.pending == 3
    async with notifier:
        await wait_for(lambda: notifier.delivered == 3)
    assert [r.body["node"] for r in receiver.requests] == ["n3", "n4", "n5"]


async def test_close_drains_the_queue(receiver: Receiver) -> None:
    notifier = make_notifier(receiver.url)
    notifier.start()
    for node in ["a", "b", "c", "d"]:
        notifier.notify(event(node=node))
    await notifier.close(deadline_s=5.0)
    assert [r.body["node"] for r in receiver.requests] == ["a", "b", "c", "d"]


async def test_close_deadline_reports_undelivered(receiver: Receiver) -> None:
    receiver.script = [Reply(hang=True)]
    notifier = make_notifier(receiver.url, timeout_s=30.0)
    notifier.start()
    notifier.notify(event(node="stuck"))
    notifier.notify(event(node="behind"))
    await receiver.got_request.wait()
    with capture_logs() as logs:
        await notifier.close(deadline_s=0.1)
    [undelivered] = [entry for entry in logs if entry["event"] == "notifications_undelivered"]
    assert undelivered["count"] == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_secret_never_logged(receiver: Receiver) -> None:
    """Retries, give-up, connection errors, drops and undelivered: no log line has the secret."""
    receiver.script = [Reply(500), Reply(429, {"Retry-After": "0"}), Reply(500)]
    unreachable = f"http://127.0.0.1:{_closed_port()}{SECRET_PATH}?{SECRET_QUERY}"
    with capture_logs() as logs:
        async with make_notifier(receiver.url, max_attempts=3, queue_size=1) as a:
            a.notify(event())
            await wait_for(lambda: a.failed == 1)
            a.notify(event())
            a.notify(event())
            a.notify(event())
        async with make_notifier(unreachable, max_attempts=2) as b:
            b.notify(event())
            await wait_for(lambda: b.failed == 1)
    names = {entry["event"] for entry in logs}
    assert {"notification_retry", "notification_failed", "notification_dropped"} <= names
    text = repr(logs)
    for secret in ("s3cr3tPathT0k3n", "s3cr3tQueryT0k3n", "T0001", SECRET_PATH):
        assert secret not in text
    assert f"http://127.0.0.1:{receiver.port}/…" in text
    connect_failure = [e for e in logs if e["event"] == "notification_failed" and e["webhook"] != a.target]
    assert connect_failure[0]["error"] == "ClientConnectorError"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com/…", id="slack"),
        pytest.param("https://discord.com/api/webhooks/1/tok", "https://discord.com/…", id="discord"),
        pytest.param(
            "https://x.webhook.office.com/webhookb2/abc?k=v", "https://x.webhook.office.com/…", id="teams"
        ),
        pytest.param(
            "https://user:pw@hooks.example.com:8443/", "https://hooks.example.com:8443", id="userinfo"
        ),
        pytest.param("http://[::1]:9000/hook", "http://[::1]:9000/…", id="ipv6"),
    ],
)
def test_safe_url(url: str, expected: str) -> None:
    assert safe_url(url) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("-3", 0.0, id="negative-clamped"),
        pytest.param("Thu, 26 Nov 2026 12:00:30 GMT", 30.0, id="http-date"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected


def test_cluster_wide_event_text() -> None:
    payload = build_payload(
        Notification(
            kind="shortCircuit",
            cluster="prod-eu1",
            node=None,
            cls=None,
            action=None,
            message="5 of 10 workers unhealthy",
            ts=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    assert payload["text"] == ":octagonal_sign: noderescue shortCircuit: prod-eu1: 5 of 10 workers unhealthy"


def test_non_http_url_is_refused_without_echoing_the_secret() -> None:
    with pytest.raises(ValueError, match="must be http or https") as info:
        WebhookNotifier("ftp://hooks.example.com/s3cr3t", events=ALL)
    assert "s3cr3t" not in str(info.value)


def test_naive_timestamp_is_taken_as_utc() -> None:
    naive = Notification(
        kind="failed",
        cluster="c",
        node="n",
        cls="workers",
        action="reboot",
        message="m",
        ts=datetime(2026, 1, 1, 8, 30),
    )
    assert build_payload(naive)["ts"] == "2026-01-01T08:30:00Z"
