"""One retry layer for every cloud call: jittered exponential backoff under a total deadline.

The SDKs' own retries are switched off (botocore ``total_max_attempts=1``, azure-core
``retry_total=0``) so that this is the only layer: the deadline is exact (no hidden SDK backoff
inside an attempt), every attempt is counted in ``noderescue_cloud_api_calls_total``, and a
throttled cloud gets one coherent backoff instead of two multiplied ones.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay
from tenacity.wait import wait_random_exponential

from noderescue.adapters.cloud.base import CloudError, DeadlineExceeded, Throttled
from noderescue.metrics import Metrics

T = TypeVar("T")

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    deadline_s: float = 60.0  # whole call, all attempts and backoff included
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Failure:
    """A vendor exception, classified by the provider."""

    error: CloudError  # what the caller sees if this is the last word
    retryable: bool
    result: str  # metric label: throttled | server_error | connection_error | client_error | not_found


Classifier = Callable[[Exception], Failure]


class _RetryableFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure.error))
        self.failure = failure


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    jittered = wait_random_exponential(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s)

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RetryableFailure) and isinstance(exc.failure.error, Throttled):
            retry_after = exc.failure.error.retry_after_s
            # The server said when; the deadline (stop_before_delay) still bounds it. Zero,
            # negative or NaN would make a tight loop of requests (or a sleep that never ends):
            # those fall back to our own backoff.
            if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
                return retry_after
        return float(jittered(state))

    return wait


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    provider: str,
    operation: str,
    classify: Classifier,
    policy: RetryPolicy,
    metrics: Metrics,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the deadline passes.

    Raises the classified ``CloudError`` of a non-retryable failure, or ``DeadlineExceeded``
    (caused by the last retryable failure) when retries run out of time.
    """
    last: list[Failure] = []
    in_flight = False

    def count(result: str) -> None:
        metrics.cloud_api_calls.labels(provider, operation, result).inc()

    async def attempt() -> T:
        nonlocal in_flight
        in_flight = True
        try:
            result = await call()
        except asyncio.CancelledError:
            raise  # in_flight stays set: the deadline cut this attempt short
        except Exception as e:
            in_flight = False
            failure = classify(e)
            count(failure.result)
            last.append(failure)
            if failure.retryable:
                log.info(
                    "cloud_call_retrying",
                    provider=provider,
                    operation=operation,
                    result=failure.result,
                    error=str(failure.error),
                )
                raise _RetryableFailure(failure) from e
            raise failure.error from e
        in_flight = False
        count("ok")
        return result

    retrying = AsyncRetrying(
        stop=stop_before_delay(policy.deadline_s),
        wait=_wait(policy),
        retry=retry_if_exception_type(_RetryableFailure),
        reraise=True,
    )
    try:
        async with asyncio.timeout(policy.deadline_s):
            return await retrying(attempt)
    except TimeoutError as e:
        if in_flight:
            count("timeout")
        raise _deadline(provider, operation, policy, last) from (last[-1].error if last else e)
    except _RetryableFailure as e:
        raise _deadline(provider, operation, policy, last) from e.failure.error


def _deadline(provider: str, operation: str, policy: RetryPolicy, last: list[Failure]) -> DeadlineExceeded:
    detail = f"; last error: {last[-1].error}" if last else ""
    log.warning(
        "cloud_call_deadline_exceeded",
        provider=provider,
        operation=operation,
        deadline_s=policy.deadline_s,
        attempts=len(last),
    )
    return DeadlineExceeded(
        f"{provider} {operation}: no success within {policy.deadline_s:g}s "
        f"({len(last)} failed attempts){detail}"
    )
