"""Builders for core values with sensible defaults, so each test states only what it varies."""

from __future__ import annotations

from datetime import UTC, datetime

from noderescue.core.model import (
    Action,
    Condition,
    ConditionRule,
    DrainPolicy,
    History,
    HistoryEvent,
    LeaseRule,
    NodeClass,
    NodeView,
    Phase,
    Policy,
    Quantity,
    RateLimit,
    Record,
    Safety,
    Selector,
    Snapshot,
    Step,
)

# Wednesday 2026-11-25 03:00:00 UTC: a fixed `now` for every core test.
NOW = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC).timestamp()
MIN = 60.0

READY_RULE = ConditionRule("Ready", frozenset({"False", "Unknown"}), 3 * MIN)
KERNEL_RULE = ConditionRule("KernelDeadlock", frozenset({"True"}), 1 * MIN)


def node(
    name: str = "n1",
    *,
    ready: str = "True",
    ready_since: float | None = NOW - 3600,
    conditions: tuple[Condition, ...] = (),
    labels: dict[str, str] | None = None,
    zone: str | None = "a",
    unschedulable: bool = False,
    lease_renew: float | None = None,
    boot_id: str | None = "boot-1",
    created: float | None = NOW - 86400,
    first_seen: float | None = NOW - 3600,
    uid: str | None = None,
) -> NodeView:
    all_labels = {"noderescue.io/class": "workers"} if labels is None else labels
    return NodeView(
        name=name,
        uid=uid or f"uid-{name}",
        labels=all_labels,
        zone=zone,
        provider_id=f"aws:///eu-west-1{zone}/i-{name}",
        unschedulable=unschedulable,
        conditions=(Condition("Ready", ready, "", ready_since), *conditions),
        lease_renew=lease_renew,
        boot_id=boot_id,
        created=created,
        first_seen=first_seen,
    )


def bad(name: str, **kw: object) -> NodeView:
    """A node that has been NotReady for an hour (unhealthy under READY_RULE)."""
    return node(name, ready="False", ready_since=NOW - 3600, **kw)  # type: ignore[arg-type]


def node_class(
    name: str = "workers",
    *,
    ladder: tuple[Step, ...] = (Step(Action.REPLACE, 600.0),),
    rules: tuple[ConditionRule | LeaseRule, ...] = (READY_RULE, KERNEL_RULE),
    max_unavailable: Quantity = Quantity(100, percent=True),
    selector: Selector | None = None,
    startup_timeout: float | None = None,
) -> NodeClass:
    return NodeClass(
        name=name,
        selector=selector or Selector(match_labels=(("noderescue.io/class", name),)),
        rules=rules,
        ladder=ladder,
        drain=DrainPolicy(),
        max_unavailable=max_unavailable,
        node_startup_timeout_s=startup_timeout,
    )


def policy(
    *classes: NodeClass,
    max_unhealthy: Quantity = Quantity(100, percent=True),
    per_zone: Quantity = Quantity(100, percent=True),
    max_concurrent: int = 100,
    rate_limits: tuple[RateLimit, ...] = (),
    max_attempts: int = 3,
    stale_after: float = 3600.0,
) -> Policy:
    return Policy(
        cluster="test",
        provider="aws",
        safety=Safety(
            max_unhealthy=max_unhealthy,
            max_unhealthy_per_zone=per_zone,
            max_concurrent=max_concurrent,
            stale_after_s=stale_after,
            rate_limits=rate_limits,
            max_attempts=max_attempts,
            max_attempts_per_s=86400.0,
        ),
        classes=classes or (node_class(),),
    )


def snapshot(*nodes: NodeView, synced_at: float | None = NOW - 1, **kw: object) -> Snapshot:
    return Snapshot(nodes=tuple(nodes), synced_at=synced_at, **kw)  # type: ignore[arg-type]


def record(
    name: str,
    *,
    step: int = 0,
    action: Action = Action.REPLACE,
    phase: Phase = Phase.DRAINING,
    started: float = NOW - 120,
    deadline: float | None = NOW + 480,
    cls: str = "workers",
    boot_id_before: str | None = None,
    uid: str | None = None,
    step_started: float | None = None,
    instance_id: str | None = None,
    operation_id: str | None = None,
    calls: tuple[str, ...] = (),
    ladder_hash: str = "",
) -> Record:
    return Record(
        node=name,
        node_uid=uid or f"uid-{name}",
        cls=cls,
        step=step,
        action=action,
        phase=phase,
        attempt=1,
        started=started,
        step_started=started if step_started is None else step_started,
        deadline=deadline,
        boot_id_before=boot_id_before,
        instance_id=instance_id,
        operation_id=operation_id,
        calls=calls,
        ladder_hash=ladder_hash,
    )


def admitted(*records: Record, extra: tuple[HistoryEvent, ...] = ()) -> History:
    """The history the runtime writes for ``records``: one event per record at its step's start
    (an attempt start for a first step), as the executor appends before writing a record."""
    events = tuple(HistoryEvent(r.step_started, r.action, r.node, attempt_start=r.step == 0) for r in records)
    return History(extra + events)
