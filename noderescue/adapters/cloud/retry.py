"""One retry layer for every cloud call: jittered exponential backoff under a total deadline.

The SDKs' own retries are switched off (botocore ``total_max_attempts=1``, azure-core
``retry_total=0``) so that this is the only layer: the deadline is exact (no hidden SDK backoff
inside an attempt), every attempt is counted in ``noderescue_cloud_api_calls_total``, a
throttled cloud gets one coherent backoff instead of two multiplied ones, and nothing re-sends
a mutating request behind our back.

What is retried depends on the failure's kind (``base`` module docstring) and on the call:

* reads retry refused and ambiguous failures until the deadline (``DeadlineExceeded``);
* mutating calls retry refusals only. An ambiguous failure raises ``AmbiguousOutcome`` at once;
  a deadline (or a lease bound) that cuts an attempt in flight is ambiguous too; running out of
  time on refusals alone is ``DeadlineExceeded`` (nothing ran).

Fencing: right before each attempt of a mutating call the leader lease is asked how long it is
still certainly held (``LeaseFence``). Not held, or held for less than the attempt needs
(``min_attempt_s``): ``Fenced``, and nothing is sent. Held: the attempt is bounded by what is
left of it. The lease bounds each attempt, never the retries: the policy's deadline does, so a
throttled call still gets its backoff (and sees the lease again before its next attempt).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from noderescue import failpoints
from noderescue.adapters.cloud.base import (
    AmbiguousOutcome,
    CloudError,
    CloudUnavailable,
    DeadlineExceeded,
    Fenced,
    LeaseFence,
    Operation,
    Throttled,
)
from noderescue.metrics import Metrics

T = TypeVar("T")

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    deadline_s: float = 60.0  # whole call, all attempts and backoff included
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


class FailureKind(enum.StrEnum):
    REFUSED = "refused"  # nothing ran; worth another attempt
    AMBIGUOUS = "ambiguous"  # may have been applied
    FAILED = "failed"  # a definite answer; another attempt would get it again


@dataclass(frozen=True, slots=True)
class Failure:
    """A vendor exception, classified once by its provider."""

    error: CloudError  # what the caller sees if this is the last word
    kind: FailureKind
    result: str  # metric label: throttled | server_error | connection_error | client_error | not_found | ...

    def retryable(self, *, mutating: bool) -> bool:
        if self.kind is FailureKind.FAILED:
            return False
        return self.kind is FailureKind.REFUSED or not mutating


Classifier = Callable[[Exception], Failure]
# One attempt; its argument is the seconds this attempt may take (for per-request timeouts).
Attempt = Callable[[float], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class Mutation:
    """What a mutating call adds to ``call_with_retries``."""

    failpoint: str  # e.g. "cloud.aws.reboot": hit as <name>.before / <name>.after
    fence: LeaseFence | None = None
    # An attempt needs at least this much lease left (AWS: its socket timeouts, which cannot be
    # shortened per call); less than that is fenced.
    min_attempt_s: float = 0.0
    # The operation to follow by state when the outcome is ambiguous (see AmbiguousOutcome).
    ambiguous_operation: Operation | None = None


def _backoff(policy: RetryPolicy, failure: Failure, attempt: int) -> float:
    if isinstance(failure.error, Throttled):
        retry_after = failure.error.retry_after_s
        # The server said when; the deadline still bounds it. Zero, negative or NaN would make
        # a tight loop of requests (or a sleep that never ends): those fall back to our backoff.
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            return retry_after
    # Full jitter: uniform over [0, min(max, initial * 2^attempt)].
    cap = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** min(attempt, 30))
    return random.uniform(0, cap)  # jitter, not cryptography


async def call_with_retries(
    call: Attempt[T],
    *,
    provider: str,
    operation: str,
    classify: Classifier,
    policy: RetryPolicy,
    metrics: Metrics,
    mutation: Mutation | None = None,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the deadline passes.

    ``mutation`` (``None`` for reads) makes it a mutating call: retried on refusals only, fenced
    and failpointed before each attempt. Raises the classified ``CloudError`` of a definite
    failure, ``AmbiguousOutcome``, ``Fenced``, or ``DeadlineExceeded`` (caused by the last
    failure) when retries run out of time.
    """
    mutating = mutation is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.deadline_s
    failures: list[Failure] = []
    vendor: Exception

    def count(result: str) -> None:
        metrics.cloud_api_calls.labels(provider, operation, result).inc()

    def ambiguous(reason: str) -> AmbiguousOutcome:
        assert mutation is not None
        log.warning(
            "cloud_call_ambiguous",
            provider=provider,
            operation=operation,
            reason=reason,
            attempts=len(failures) + 1,
        )
        return AmbiguousOutcome(
            f"{provider} {operation}: may have been applied ({reason}); not sent again",
            mutation.ambiguous_operation,
        )

    for attempt in itertools.count():
        budget = deadline - loop.time()
        if budget <= 0:
            last = failures[-1].error if failures else None
            raise _deadline(provider, operation, policy, failures) from last
        lease_bound = False
        if mutation is not None:
            held = mutation.fence.remaining_s() if mutation.fence is not None else None
            if held is not None:
                if held <= 0 or held < mutation.min_attempt_s:
                    count("fenced")
                    log.warning(
                        "cloud_call_fenced",
                        provider=provider,
                        operation=operation,
                        lease_remaining_s=round(held, 3),
                        needed_s=mutation.min_attempt_s,
                    )
                    raise Fenced(
                        f"{provider} {operation}: not sent, the leader lease is "
                        + ("not held" if held <= 0 else f"held for only {held:.1f}s more")
                    )
                if held < budget:
                    budget, lease_bound = held, True
            failpoints.hit(f"{mutation.failpoint}.before")
        timeout = asyncio.timeout(budget)
        try:
            async with timeout:
                result = await call(budget)
        except asyncio.CancelledError:
            raise
        except TimeoutError as e:
            if not timeout.expired():
                vendor, failure = e, classify(e)  # the SDK's own timeout: classified like any error
            else:
                count("timeout")
                if mutation is not None:
                    failpoints.hit(f"{mutation.failpoint}.after")
                    why = "the leader lease ran out" if lease_bound else "the deadline passed"
                    raise ambiguous(f"{why} with the attempt in flight") from e
                failures.append(_timed_out(provider, operation))
                continue  # the deadline is checked at the top of the loop
        except Exception as e:
            if mutation is not None:
                failpoints.hit(f"{mutation.failpoint}.after")
            vendor, failure = e, classify(e)
        else:
            if mutation is not None:
                failpoints.hit(f"{mutation.failpoint}.after")
            count("ok")
            return result
        count(failure.result)
        failures.append(failure)
        failure.error.__cause__ = vendor
        if not failure.retryable(mutating=mutating):
            if failure.kind is FailureKind.AMBIGUOUS:
                raise ambiguous(str(failure.error)) from failure.error
            raise failure.error from vendor
        delay = _backoff(policy, failure, attempt)
        log.info(
            "cloud_call_retrying",
            provider=provider,
            operation=operation,
            result=failure.result,
            kind=str(failure.kind),
            delay_s=round(delay, 3),
            error=str(failure.error),
        )
        if loop.time() + delay >= deadline:
            raise _deadline(provider, operation, policy, failures) from failure.error
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _timed_out(provider: str, operation: str) -> Failure:
    return Failure(
        CloudUnavailable(f"{provider} {operation}: attempt cut by the deadline"),
        FailureKind.AMBIGUOUS,
        "timeout",
    )


def _deadline(
    provider: str, operation: str, policy: RetryPolicy, failures: list[Failure]
) -> DeadlineExceeded:
    # An attempt the deadline cut says less than the error before it.
    told = [f for f in failures if f.result != "timeout"] or failures
    detail = f"; last error: {told[-1].error}" if told else ""
    log.warning(
        "cloud_call_deadline_exceeded",
        provider=provider,
        operation=operation,
        deadline_s=policy.deadline_s,
        attempts=len(failures),
    )
    return DeadlineExceeded(
        f"{provider} {operation}: no success within {policy.deadline_s:g}s "
        f"({len(failures)} failed attempts){detail}"
    )
