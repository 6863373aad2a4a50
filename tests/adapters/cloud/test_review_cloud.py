"""Review findings on the cloud adapters: hostile providerIDs, hostile Retry-After values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from noderescue.adapters.cloud.azure import parse_retry_after
from noderescue.adapters.cloud.base import DeadlineExceeded, Throttled, UnsupportedProviderId
from noderescue.adapters.cloud.provider_ids import parse_aws_provider_id, parse_azure_provider_id
from noderescue.adapters.cloud.retry import Failure, FailureKind, RetryPolicy, call_with_retries
from noderescue.metrics import Metrics

VMSS = "/providers/Microsoft.Compute/virtualMachineScaleSets"
AZURE_OK = f"azure:///subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/3"
AWS_OK = "aws:///eu-west-1a/i-0123456789abcdef0"


@pytest.mark.parametrize(
    "provider_id",
    [
        # `$` also matches before a final newline: the id must be the whole string.
        pytest.param(AWS_OK + "\n", id="trailing-newline"),
        pytest.param(AWS_OK + " ", id="trailing-space"),
        pytest.param(" " + AWS_OK, id="leading-space"),
        pytest.param("aws:///eu-west-1a/i-123/../i-0123456789abcdef0", id="dot-dot-segment"),
        pytest.param("AWS:///eu-west-1a/i-0123456789abcdef0", id="upper-case-scheme"),
    ],
)
def test_hostile_aws_provider_ids_are_refused(provider_id: str) -> None:
    with pytest.raises(UnsupportedProviderId):
        parse_aws_provider_id(provider_id)


@pytest.mark.parametrize(
    "provider_id",
    [
        pytest.param(AZURE_OK + "\n", id="trailing-newline"),
        pytest.param(AZURE_OK[:-1] + "\u0663", id="arabic-indic-digit"),  # int() reads it as 3
        pytest.param(AZURE_OK[:-1] + "\uff13", id="full-width-digit"),
        pytest.param(AZURE_OK.replace("/ss/", "/../ss/"), id="dot-dot-segment"),
        pytest.param(AZURE_OK.replace("/rg/", "/rg /"), id="space-in-group"),
    ],
)
def test_hostile_azure_provider_ids_are_refused(provider_id: str) -> None:
    with pytest.raises(UnsupportedProviderId):
        parse_azure_provider_id(provider_id)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("0.5", 0.5, id="fraction"),
        pytest.param("-1", None, id="negative"),
        pytest.param("0", None, id="zero"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="infinite"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", None, id="http-date"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_retry_after_header_is_a_positive_finite_delay_or_nothing(
    header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(header) == expected


@pytest.mark.parametrize(
    "retry_after_s",
    [
        pytest.param(-5.0, id="negative"),
        pytest.param(0.0, id="zero"),
        pytest.param(float("nan"), id="nan"),
    ],
)
async def test_a_nonsense_retry_after_does_not_hammer_the_cloud(retry_after_s: float) -> None:
    """A Throttled carrying a delay that is not a positive number falls back to our backoff:
    never a tight loop of requests against a throttling API, never a sleep that hangs."""
    policy = RetryPolicy(deadline_s=0.4, backoff_initial_s=0.05, backoff_max_s=0.1)
    attempts = 0

    async def throttled(_budget_s: float) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("throttled")

    def classify(exc: Exception) -> Failure:
        return Failure(Throttled(str(exc), retry_after_s), FailureKind.REFUSED, "throttled")

    with pytest.raises(DeadlineExceeded, match=r"\d+ failed attempts"):
        await call_with_retries(
            throttled,
            provider="test",
            operation="op",
            classify=classify,
            policy=policy,
            metrics=Metrics(CollectorRegistry()),
        )
    # With backoff of 0.05..0.1 s in 0.4 s: a handful of attempts, not thousands.
    assert 2 <= attempts <= 20
