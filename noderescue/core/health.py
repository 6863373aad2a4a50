"""Health of one node under its class's rules (DESIGN §2).

Three-way: healthy, pending(until) — a rule matches but its ``for`` has not elapsed — or
unhealthy(reasons). Every result also says when it can change by itself (``until``): the end of a
pending ``for``, the moment a still-fresh Lease turns stale, the end of a startup timeout. The
planner sleeps until the earliest of those instead of polling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from noderescue.core.durations import format_duration
from noderescue.core.model import (
    ConditionRule,
    Health,
    HealthState,
    LeaseRule,
    NodeClass,
    NodeView,
)

# A Ready condition whose last transition lies this close to the node's creation has been
# not-Ready since the kubelet registered it: the node never became Ready.
_REGISTRATION_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A class's rules indexed for one pass over a node's conditions."""

    by_type: Mapping[str, tuple[ConditionRule, ...]]
    lease: tuple[LeaseRule, ...]
    startup_timeout_s: float | None
    # Per condition type, every status some rule matches: most conditions fail this one test.
    watched: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, node_class: NodeClass) -> CompiledRules:
        by_type: dict[str, list[ConditionRule]] = {}
        lease: list[LeaseRule] = []
        for rule in node_class.rules:
            if isinstance(rule, LeaseRule):
                lease.append(rule)
            else:
                by_type.setdefault(rule.type, []).append(rule)
        return cls(
            by_type={k: tuple(v) for k, v in by_type.items()},
            lease=tuple(lease),
            startup_timeout_s=node_class.node_startup_timeout_s,
            watched={k: frozenset().union(*(r.statuses for r in v)) for k, v in by_type.items()},
        )


def _since(observed: float | None, node: NodeView, now: float) -> float:
    """When a condition started matching: its lastTransitionTime, or — when that is missing or
    lies in the future (clock skew between the node and us) — when we first saw the node."""
    if observed is not None and observed <= now:
        return observed
    if node.first_seen is not None and node.first_seen <= now:
        return node.first_seen
    return now


def classify(node: NodeView, rules: CompiledRules, now: float) -> Health:
    reasons: list[str] = []
    pending_until: float | None = None
    pending: list[str] = []  # what matches but has not lasted long enough yet
    recheck: float | None = None  # when a healthy verdict can turn by itself

    watched = rules.watched
    for cond in node.conditions:
        statuses = watched.get(cond.type)
        if statuses is None or cond.status not in statuses:
            continue
        for rule in rules.by_type[cond.type]:
            if cond.status not in rule.statuses:
                continue
            since = _since(cond.last_transition, node, now)
            due = since + rule.for_s
            if now >= due:
                detail = f" ({cond.reason})" if cond.reason else ""
                reasons.append(f"{cond.type}={cond.status}{detail} for {format_duration(int(now - since))}")
            else:
                detail = f" ({cond.reason})" if cond.reason else ""
                pending.append(
                    f"{cond.type}={cond.status}{detail} for {format_duration(int(now - since))}"
                    f" of {format_duration(rule.for_s)}"
                )
                if pending_until is None or due < pending_until:
                    pending_until = due

    for lease_rule in rules.lease:
        renewed = node.lease_renew
        if renewed is None:  # no Lease seen: count from when we first saw the node
            renewed = node.first_seen if node.first_seen is not None else node.created
        if renewed is None:
            continue
        # A renewTime in our future (the node's clock runs ahead) is fresh until renewTime +
        # staleFor like any other: skipping it would also drop the wake-up at that moment.
        stale_at = renewed + lease_rule.stale_for_s
        if now >= stale_at:
            reasons.append(f"NodeLease not renewed for {format_duration(int(now - renewed))}")
        elif recheck is None or stale_at < recheck:
            recheck = stale_at

    timeout = rules.startup_timeout_s
    if timeout is not None and node.created is not None:
        ready = node.condition("Ready")
        if ready is None or ready.status != "True":
            transition = ready.last_transition if ready is not None else None
            never_ready = transition is None or transition <= node.created + _REGISTRATION_SLACK_S
            if never_ready:
                due = min(node.created, now) + timeout
                if now >= due:
                    reasons.append(f"not Ready {format_duration(timeout)} after creation")
                else:
                    pending.append(f"not Ready yet, startup timeout {format_duration(timeout)}")
                    if pending_until is None or due < pending_until:
                        pending_until = due

    if reasons:
        return Health(HealthState.UNHEALTHY, tuple(reasons))
    if pending_until is not None:
        return Health(HealthState.PENDING, tuple(pending), until=pending_until)
    if recheck is not None:
        return Health(HealthState.HEALTHY, until=recheck)
    return Health(HealthState.HEALTHY)
