"""Our own error tree for Kubernetes API failures, mapped once at the edge.

Callers above the adapter never see ``ApiException``, aiohttp errors or bare timeouts: they see a
``KubeError`` subclass that says what happened and carries what they need to react (the server's
message, a retry-after, the HTTP status).
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from kubernetes_asyncio.client.exceptions import ApiException


class KubeError(Exception):
    """A Kubernetes API request failed. ``status`` is the HTTP status (None: no response)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason  # the Status object's machine-readable reason, e.g. "NotFound"

    def __str__(self) -> str:
        code = f"{self.status} " if self.status is not None else ""
        return f"{code}{self.message}"


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: a resourceVersion / precondition race, or the object already exists."""


class TooManyRequests(KubeError):
    """429: throttled, or an eviction a PodDisruptionBudget does not allow right now."""

    def __init__(
        self, message: str, *, status: int | None = 429, reason: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class Unavailable(KubeError):
    """The server could not be reached or failed (connection error, timeout, 5xx)."""


class Forbidden(KubeError):
    """401/403: not authenticated or not allowed."""


class Expired(KubeError):
    """410: the resourceVersion we asked for is too old; the caller must relist."""


class Invalid(KubeError):
    """400/422: the server rejected the request itself (a bad patch, a failed JSON-patch test)."""


_BY_STATUS: dict[int, type[KubeError]] = {
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Expired,
    400: Invalid,
    422: Invalid,
}


def _retry_after(headers: object) -> float | None:
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None  # an HTTP-date Retry-After: not sent by kube-apiserver


def error_from_response(status: int, body: bytes | str | None, headers: object = None) -> KubeError:
    """Build the error for a non-2xx response from its status code and Status body."""
    message, reason = "", ""
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body)[:500]
        else:
            if isinstance(parsed, dict):
                message = str(parsed.get("message") or "")
                reason = str(parsed.get("reason") or "")
    message = message or f"HTTP {status}"
    if status == 429:
        return TooManyRequests(message, status=status, reason=reason, retry_after=_retry_after(headers))
    if status >= 500:
        return Unavailable(message, status=status, reason=reason)
    return _BY_STATUS.get(status, KubeError)(message, status=status, reason=reason)


def map_error(exc: BaseException) -> KubeError:
    """Map a client-side exception to our tree: ``raise map_error(e) from e``."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        return error_from_response(int(exc.status or 0), exc.body, exc.headers)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Unavailable("request timed out")
    if isinstance(exc, aiohttp.ClientResponseError):
        return error_from_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"{type(exc).__name__}: {exc}")
    return KubeError(f"{type(exc).__name__}: {exc}")
