"""health.classify: every rule kind, pending vs unhealthy, clock skew, startup timeout."""

from __future__ import annotations

import pytest

from noderescue.core.health import CompiledRules, classify
from noderescue.core.model import Condition, ConditionRule, HealthState, LeaseRule
from tests.core.factories import KERNEL_RULE, MIN, NOW, READY_RULE, node, node_class

RULES = CompiledRules.of(node_class(rules=(READY_RULE, KERNEL_RULE, LeaseRule(2 * MIN))))


@pytest.mark.parametrize(
    ("view", "state", "until"),
    [
        pytest.param(
            node(lease_renew=NOW - 5), HealthState.HEALTHY, NOW - 5 + 2 * MIN, id="healthy-lease-recheck"
        ),
        pytest.param(
            node(lease_renew=NOW - 10), HealthState.HEALTHY, NOW + 110, id="healthy-until-lease-stale"
        ),
        pytest.param(
            node(ready="False", ready_since=NOW - 60, lease_renew=NOW),
            HealthState.PENDING,
            NOW + 120,
            id="not-ready-for-1m-of-3m-pending",
        ),
        pytest.param(
            node(ready="Unknown", ready_since=NOW - 180, lease_renew=NOW),
            HealthState.UNHEALTHY,
            None,
            id="unknown-exactly-3m-unhealthy",
        ),
        pytest.param(
            node(ready="False", ready_since=NOW - 179, lease_renew=NOW),
            HealthState.PENDING,
            NOW + 1,
            id="one-second-short-pending",
        ),
        pytest.param(
            node(conditions=(Condition("KernelDeadlock", "True", "DockerHung", NOW - 61),), lease_renew=NOW),
            HealthState.UNHEALTHY,
            None,
            id="kernel-deadlock-over-1m",
        ),
        pytest.param(
            node(conditions=(Condition("KernelDeadlock", "False", "", NOW - 600),), lease_renew=NOW),
            HealthState.HEALTHY,
            NOW + 120,
            id="npd-condition-false-is-fine",
        ),
        pytest.param(
            node(lease_renew=NOW - 121),
            HealthState.UNHEALTHY,
            None,
            id="lease-stale-2m",
        ),
        pytest.param(
            node(lease_renew=NOW + 30),
            HealthState.HEALTHY,
            NOW + 30 + 120,  # still fresh, and re-checked when it turns stale
            id="lease-from-the-future-is-not-stale",
        ),
        pytest.param(
            # lastTransitionTime in the future (node clock ahead): count from first observation.
            node(ready="False", ready_since=NOW + 600, first_seen=NOW - 200, lease_renew=NOW),
            HealthState.UNHEALTHY,
            None,
            id="future-transition-uses-first-seen",
        ),
        pytest.param(
            node(ready="False", ready_since=None, first_seen=NOW - 30, lease_renew=NOW),
            HealthState.PENDING,
            NOW - 30 + 180,
            id="missing-transition-uses-first-seen",
        ),
        pytest.param(
            node(ready="False", ready_since=None, first_seen=None, lease_renew=NOW),
            HealthState.PENDING,
            NOW + 180,
            id="nothing-known-starts-now",
        ),
    ],
)
def test_classify(view, state, until):  # type: ignore[no-untyped-def]
    health = classify(view, RULES, NOW)
    assert health.state is state
    assert health.until == until
    assert bool(health.reasons) is (state is not HealthState.HEALTHY)


def test_reasons_name_condition_reason_and_duration() -> None:
    view = node(
        ready="Unknown",
        ready_since=NOW - 300,
        conditions=(Condition("KernelDeadlock", "True", "DockerHung", NOW - 90),),
        lease_renew=NOW - 130,
    )
    health = classify(view, RULES, NOW)
    assert health.reasons == (
        "Ready=Unknown for 5m",
        "KernelDeadlock=True (DockerHung) for 1m30s",
        "NodeLease not renewed for 2m10s",
    )


def test_pending_says_what_matches_and_for_how_long() -> None:
    view = node(ready="False", ready_since=NOW - 60, lease_renew=NOW)
    assert classify(view, RULES, NOW).reasons == ("Ready=False for 1m of 3m",)


def test_pending_until_is_the_earliest_rule() -> None:
    rules = CompiledRules.of(
        node_class(rules=(ConditionRule("Ready", frozenset({"False"}), 10 * MIN), KERNEL_RULE))
    )
    view = node(
        ready="False",
        ready_since=NOW - 60,
        conditions=(Condition("KernelDeadlock", "True", "", NOW - 30),),
    )
    assert classify(view, rules, NOW).until == NOW + 30


def test_two_rules_on_one_condition_type() -> None:
    rules = CompiledRules.of(
        node_class(
            rules=(
                ConditionRule("Ready", frozenset({"False"}), 10 * MIN),
                ConditionRule("Ready", frozenset({"Unknown"}), 1 * MIN),
            )
        )
    )
    assert classify(node(ready="Unknown", ready_since=NOW - 61), rules, NOW).unhealthy
    assert classify(node(ready="False", ready_since=NOW - 61), rules, NOW).state is HealthState.PENDING


@pytest.mark.parametrize(
    ("view", "state"),
    [
        pytest.param(
            node(ready="False", ready_since=NOW - 700, created=NOW - 700),
            HealthState.UNHEALTHY,
            id="never-ready-past-timeout",
        ),
        pytest.param(
            node(ready="False", ready_since=NOW - 300, created=NOW - 300),
            HealthState.PENDING,
            id="never-ready-within-timeout",
        ),
        pytest.param(
            node(ready="Unknown", ready_since=None, created=NOW - 900, first_seen=NOW - 1),
            HealthState.UNHEALTHY,
            id="no-ready-transition-old-node",
        ),
        pytest.param(
            # Was Ready once (transition long after creation), then went NotReady: not a startup
            # failure, and the Ready rule (absent here) decides.
            node(ready="False", ready_since=NOW - 100, created=NOW - 86400),
            HealthState.HEALTHY,
            id="became-ready-once",
        ),
        pytest.param(node(created=NOW - 900), HealthState.HEALTHY, id="ready-node"),
    ],
)
def test_startup_timeout(view, state):  # type: ignore[no-untyped-def]
    rules = CompiledRules.of(node_class(rules=(), startup_timeout=600.0))
    assert classify(view, rules, NOW).state is state


def test_missing_lease_counts_from_first_seen() -> None:
    rules = CompiledRules.of(node_class(rules=(LeaseRule(2 * MIN),)))
    assert classify(node(lease_renew=None, first_seen=NOW - 200), rules, NOW).unhealthy
    assert classify(node(lease_renew=None, first_seen=NOW - 20), rules, NOW).until == NOW + 100
