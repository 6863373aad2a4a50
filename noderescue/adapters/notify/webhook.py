"""Webhook notifications (issue 6 item 6): tell humans without ever slowing remediation down.

``notify()`` only filters and enqueues (bounded; on overflow the oldest notification is dropped
and counted); a background task delivers one at a time, with jittered exponential backoff on
5xx, 429 (honouring ``Retry-After``), timeouts and connection errors. The body is JSON with a
Slack-compatible ``text`` field plus the structured fields, so Slack/Mattermost/Rocket.Chat
incoming webhooks and custom receivers both work.

Slack, Discord and Teams webhook URLs carry their secret in the path or query: logs name the
target by scheme and host only (:func:`safe_url`), and no exception text (aiohttp puts the full
URL into some) is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Protocol, TypedDict, get_args
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from noderescue import USER_AGENT
from noderescue.adapters.notify.escape import TextFormat, escape

log = structlog.get_logger(__name__)

NotificationKind = Literal["started", "succeeded", "failed", "shortCircuit", "needsHuman", "skipped"]
NOTIFICATION_KINDS: frozenset[str] = frozenset(get_args(NotificationKind))

_ICONS: Mapping[str, str] = {
    "started": ":wrench:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "shortCircuit": ":octagonal_sign:",
    "needsHuman": ":rotating_light:",
    "skipped": ":pause_button:",
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing humans should hear about. ``node``/``cls``/``action`` are None for cluster-wide
    events (a short-circuit of a whole cluster)."""

    kind: NotificationKind
    cluster: str
    node: str | None
    cls: str | None
    action: str | None
    message: str
    ts: datetime

    def text(self, fmt: TextFormat = "mrkdwn") -> str:
        """The one-line human text (Slack ``text``). Every part but our own template may come
        from a node (its name, its condition reasons and messages): escaped for ``fmt``."""

        def esc(value: str) -> str:
            return escape(value, fmt)

        where = esc(self.cluster) if self.node is None else f"{esc(self.cluster)}/{esc(self.node)}"
        details = ", ".join(
            part
            for part in (
                f"class {esc(self.cls)}" if self.cls else "",
                f"action {esc(self.action)}" if self.action else "",
            )
            if part
        )
        suffix = f" ({details})" if details else ""
        message = esc(self.message)
        return f"{_ICONS.get(self.kind, '')} noderescue {self.kind}: {where}{suffix}: {message}".strip()


# Functional form because the JSON key "class" is a Python keyword.
WebhookPayload = TypedDict(
    "WebhookPayload",
    {
        "text": str,
        "kind": str,
        "cluster": str,
        "node": str | None,
        "class": str | None,
        "action": str | None,
        "message": str,
        "ts": str,
        "source": str,
    },
)


def build_payload(event: Notification) -> WebhookPayload:
    # `text` is Slack-style mrkdwn and escaped; the other fields are raw values, JSON-encoded.
    ts = event.ts if event.ts.tzinfo is not None else event.ts.replace(tzinfo=UTC)
    return {
        "text": event.text(),
        "kind": event.kind,
        "cluster": event.cluster,
        "node": event.node,
        "class": event.cls,
        "action": event.action,
        "message": event.message,
        "ts": ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": USER_AGENT,
    }


class Notifier(Protocol):
    """The seam the runtime calls; must return at once."""

    def notify(self, event: Notification) -> bool: ...


def safe_url(url: str) -> str:
    """The loggable form of a webhook URL: scheme and host only (``https://hooks.slack.com/…``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{netloc}{rest}"


class RetryableStatus(Exception):
    """The receiver answered 5xx or 429; ``retry_after`` is its ``Retry-After`` in seconds."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class RejectedStatus(Exception):
    """The receiver refused the notification (4xx other than 408/429): retrying cannot help."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class WebhookNotifier:
    """Delivers :class:`Notification` s to one webhook URL.

    Use as ``async with WebhookNotifier(url, events=...) as notifier:`` (starts the delivery task,
    drains on exit), or call :meth:`start` / :meth:`close` yourself.
    """

    def __init__(
        self,
        url: str,
        *,
        events: frozenset[str],
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        queue_size: int = 1000,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        unknown = sorted(events - NOTIFICATION_KINDS)
        if unknown:
            raise ValueError(f"unknown notification events {unknown}; known: {sorted(NOTIFICATION_KINDS)}")
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"webhook URL {safe_url(url)} must be http or https")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._url = url
        self.target = safe_url(url)
        self.events = events
        self._headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_max_s = backoff_max_s
        self._backoff = wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    # -- the non-blocking side ------------------------------------------------------------------

    def notify(self, event: Notification) -> bool:
        """Queue ``event`` for delivery and return at once; False when filtered out.

        Call it from the event loop's thread (the queue is an ``asyncio.Queue``).
        """
        if event.kind not in self.events:
            return False
        if self._queue.full():
            oldest = self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
            log.warning(
                "notification_dropped",
                webhook=self.target,
                reason="queue_full",
                dropped_kind=oldest.kind,
                cluster=oldest.cluster,
                node=oldest.node,
            )
        self._queue.put_nowait(event)
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- the delivery side ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"notify-webhook {self.target}"
            )
        return self._task

    async def run(self) -> None:
        """Deliver queued notifications until cancelled."""
        # The session belongs to the running loop: create it here, never in __init__.
        async with aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT, **self._headers},
            timeout=aiohttp.ClientTimeout(total=None),  # asyncio.timeout() bounds each attempt
        ) as session:
            while True:
                event = await self._queue.get()
                try:
                    await self._deliver(session, event)
                finally:
                    self._queue.task_done()

    async def close(self, *, deadline_s: float = 5.0) -> None:
        """Deliver what is queued for at most ``deadline_s``, then stop; undelivered are logged."""
        task = self._task
        if task is None:
            return
        if not task.done():
            try:
                async with asyncio.timeout(deadline_s):
                    await self._queue.join()
            except TimeoutError:
                pass
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None
        left = self._queue.qsize()
        if left:
            log.warning("notifications_undelivered", webhook=self.target, count=left)
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()

    async def __aenter__(self) -> WebhookNotifier:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            # The receiver said when; capped so a silly Retry-After cannot park the queue for hours.
            return min(exc.retry_after, self._backoff_max_s)
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "notification_retry",
            webhook=self.target,
            attempt=state.attempt_number,
            error=_describe(exc),
            wait_s=round(state.upcoming_sleep, 3),
        )

    async def _deliver(self, session: aiohttp.ClientSession, event: Notification) -> None:
        try:
            body = orjson.dumps(build_payload(event))
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._max_attempts),
                wait=self._wait,
                retry=retry_if_exception_type((RetryableStatus, aiohttp.ClientError, TimeoutError)),
                before_sleep=self._before_sleep,
                reraise=True,
            ):
                with attempt:
                    await self._post(session, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            log.error(
                "notification_failed",
                webhook=self.target,
                kind=event.kind,
                cluster=event.cluster,
                node=event.node,
                error=_describe(exc),
            )
            return
        self.delivered += 1
        log.debug("notification_delivered", webhook=self.target, kind=event.kind, node=event.node)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        async with (
            asyncio.timeout(self._timeout_s),
            session.post(
                self._url,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as response,
        ):
            # Read (and drop) the body so the connection can be reused.
            await response.read()
            status = response.status
            if status < 300:
                return
            if status == 429 or status == 408 or status >= 500:
                raise RetryableStatus(status, parse_retry_after(response.headers.get("Retry-After")))
            raise RejectedStatus(status)


def _describe(exc: BaseException | None) -> str:
    """Error text safe to log: our own status errors, else the exception's type only (aiohttp
    exception messages can contain the full URL, i.e. the secret)."""
    if exc is None:
        return "unknown"
    if isinstance(exc, RetryableStatus | RejectedStatus):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__
