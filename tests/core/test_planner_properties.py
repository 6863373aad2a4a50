"""Property tests: over random clusters, records, histories and configs the plan never breaks a
budget or acts on a node it must not touch, is deterministic, and never wakes up in the past."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from noderescue.core import gates
from noderescue.core.health import CompiledRules, classify
from noderescue.core.model import (
    CLOUD_ACTIONS,
    Action,
    Condition,
    DecisionKind,
    HealthState,
    History,
    HistoryEvent,
    NodeView,
    Phase,
    Plan,
    Policy,
    Quantity,
    RateLimit,
    Record,
    Safety,
    Snapshot,
    Step,
)
from noderescue.core.planner import plan
from noderescue.core.records import check_record
from tests.core.factories import KERNEL_RULE, NOW, READY_RULE, node_class

CLASSES = (
    node_class(
        "pets",
        ladder=(Step(Action.REPAIR, 300.0, command="x"), Step(Action.REBOOT, 600.0), Step(Action.NOTIFY)),
    ),
    node_class("workers", ladder=(Step(Action.REPLACE, 600.0),)),
    node_class("cp", ladder=(Step(Action.NOTIFY),)),
)
STARTS = (DecisionKind.START, DecisionKind.ESCALATE)

# Biased towards permissive limits, so that plans often reach the later gates with several
# candidates: a property over plans that never start anything proves nothing.
quantities = st.one_of(
    st.just(Quantity(100, percent=True)),
    st.just(Quantity(100, percent=True)),
    st.integers(0, 6).map(Quantity),
    st.integers(0, 100).map(lambda v: Quantity(v, percent=True)),
)


@st.composite
def nodes(draw: st.DrawFn, name: str) -> NodeView:
    cls = draw(st.sampled_from(["pets", "workers", "cp", None]))
    labels = {"noderescue.io/class": cls} if cls else {"role": "other"}
    if draw(st.integers(0, 5)) == 0:
        labels["noderescue.io/exclude"] = "true"
    conditions = [
        Condition(
            "Ready",
            draw(st.sampled_from(["True", "False", "False", "Unknown"])),
            "",
            draw(st.one_of(st.none(), st.floats(NOW - 7200, NOW), st.floats(NOW - 7200, NOW + 600))),
        )
    ]
    if draw(st.booleans()):
        conditions.append(Condition("KernelDeadlock", "True", "", draw(st.floats(NOW - 600, NOW))))
    return NodeView(
        name=name,
        uid=f"uid-{name}",
        labels=labels,
        zone=draw(st.sampled_from(["a", "b", "c", None])),
        unschedulable=draw(st.booleans()),
        conditions=tuple(conditions),
        boot_id=draw(st.sampled_from(["b1", "b2"])),
        created=NOW - 86400,
        first_seen=draw(st.floats(NOW - 7200, NOW)),
    )


@st.composite
def records(draw: st.DrawFn, name: str) -> Record:
    cls = draw(st.sampled_from(CLASSES))
    step = draw(st.integers(0, len(cls.ladder) - 1))
    return Record(
        node=name,
        node_uid=draw(st.sampled_from([f"uid-{name}", "someone-else"])),
        cls=cls.name,
        step=step,
        action=cls.ladder[step].action,
        phase=draw(st.sampled_from(list(Phase))),
        attempt=1,
        started=NOW - 600,
        step_started=NOW - 300,
        deadline=draw(st.one_of(st.none(), st.floats(NOW - 600, NOW + 600))),
        boot_id_before="b1",
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, dict[str, Record], History, Policy]:
    count = draw(st.integers(0, 14))
    views = [draw(nodes(f"n{i:02d}")) for i in range(count)]
    recs = {}
    for view in views:
        if draw(st.integers(0, 5)) == 0:
            recs[view.name] = draw(records(view.name))
    for i in range(draw(st.integers(0, 2))):  # records of nodes that are gone
        recs[f"gone{i}"] = draw(records(f"gone{i}"))
    # Most records are admitted by the history entry the runtime writes; the others are forged.
    admitting = tuple(
        HistoryEvent(r.step_started, r.action, r.node, attempt_start=r.step == 0)
        for r in recs.values()
        if draw(st.integers(0, 4)) > 0
    )
    events = admitting + tuple(
        HistoryEvent(
            draw(st.floats(NOW - 7200, NOW)),
            draw(st.sampled_from([Action.REPAIR, Action.REBOOT, Action.REPLACE])),
            draw(st.sampled_from([v.name for v in views] or ["x"])),
            attempt_start=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 8)))
    )
    classes = tuple(
        node_class(c.name, ladder=c.ladder, rules=(READY_RULE, KERNEL_RULE), max_unavailable=draw(quantities))
        for c in CLASSES
    )
    safety = Safety(
        max_unhealthy=draw(quantities),
        max_unhealthy_per_zone=draw(quantities),
        max_concurrent=draw(st.integers(0, 6)),
        stale_after_s=60.0,
        rate_limits=tuple(
            RateLimit(a, draw(st.integers(0, 3)), 3600.0)
            for a in (Action.REPAIR, Action.REBOOT, Action.REPLACE)
            if draw(st.booleans())
        ),
        max_attempts=draw(st.integers(1, 3)),
        max_attempts_per_s=86400.0,
    )
    snap = Snapshot(
        nodes=tuple(views),
        synced_at=draw(st.sampled_from([NOW - 1, NOW - 1, NOW - 1, NOW - 120, None])),
        reachable=draw(st.booleans()) or True,
    )
    return snap, recs, History(events), Policy("prop", "aws", safety, classes)


def _new_starts(result: Plan) -> list[str]:
    return [d.node for d in result.decisions if d.kind is DecisionKind.START]


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_budgets_are_never_exceeded(case: tuple[Snapshot, dict[str, Record], History, Policy]) -> None:
    snap, recs, history, pol = case
    result = plan(snap, recs, history, pol, NOW)
    by_name = {v.name: v for v in snap.nodes}
    live = {
        n: r
        for n, r in recs.items()
        if (n not in by_name or r.node_uid == by_name[n].uid) and check_record(r, pol, history, NOW) is None
    }
    in_flight = sum(1 for r in live.values() if r.in_flight)

    starts = _new_starts(result)
    assert len(starts) <= max(0, pol.safety.max_concurrent - in_flight)

    # maxUnavailable per class: unavailable nodes after the new starts stay within the budget.
    for cls in pol.classes:
        members = [v for v in snap.nodes if cls.selector.matches(v.labels)]
        total = len(members) + sum(
            1 for n, r in live.items() if n not in by_name and r.in_flight and r.cls == cls.name
        )
        unavailable = {
            v.name
            for v in members
            if v.unschedulable or not v.ready or (v.name in live and live[v.name].in_flight)
        } | {n for n, r in live.items() if n not in by_name and r.in_flight and r.cls == cls.name}
        mine = {d.node for d in result.decisions if d.kind is DecisionKind.START and d.cls == cls.name}
        if mine:
            assert len(unavailable | mine) <= cls.max_unavailable.ceil_of(total)

    # Rate limits: room in the sliding window covers every cloud action started this pass.
    for limit in pol.safety.rate_limits:
        used = history.count_action_since(limit.action, NOW - limit.per_s)
        acted = [d for d in result.decisions if d.kind in STARTS and d.action == limit.action]
        assert len(acted) <= max(0, limit.max - used)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_never_acts_on_excluded_unmatched_or_short_circuited_nodes(
    case: tuple[Snapshot, dict[str, Record], History, Policy],
) -> None:
    snap, recs, history, pol = case
    result = plan(snap, recs, history, pol, NOW)
    by_name = {v.name: v for v in snap.nodes}
    acted = [d for d in result.decisions if d.kind in STARTS]
    stale = gates.stale_view(snap, pol.safety, NOW)
    tripped = {scope for scope, _ in result.tripped}
    for d in acted:
        view = by_name[d.node]
        assert not view.excluded
        assert any(c.selector.matches(view.labels) for c in pol.classes)
        assert stale is None
        assert snap.pause is None
        assert f"class/{d.cls}" not in tripped and "cluster" not in tripped
        assert view.zone is None or f"zone/{view.zone}" not in tripped
        assert d.action in CLOUD_ACTIONS
    # Nothing that mutates a node happens on a stale view, except closing records (finish/park).
    if stale is not None:
        assert not acted
    # Work in flight goes on only in scopes that are not tripped; elsewhere it is held.
    for d in result.decisions:
        if d.kind is not DecisionKind.CONTINUE:
            continue
        assert stale is None and snap.pause is None
        assert f"class/{d.cls}" not in tripped and "cluster" not in tripped
        held_view = by_name.get(d.node)
        assert held_view is None or held_view.zone is None or f"zone/{held_view.zone}" not in tripped


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_inputs_same_plan_whatever_the_node_order(
    case: tuple[Snapshot, dict[str, Record], History, Policy], rnd: random.Random
) -> None:
    snap, recs, history, pol = case
    first = plan(snap, recs, history, pol, NOW)
    assert plan(snap, recs, history, pol, NOW) == first
    shuffled = list(snap.nodes)
    rnd.shuffle(shuffled)
    again = plan(
        Snapshot(tuple(shuffled), snap.synced_at, snap.reachable, snap.pause), recs, history, pol, NOW
    )
    assert sorted(again.decisions, key=repr) == sorted(first.decisions, key=repr)
    assert again.next_wakeup == first.next_wakeup


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(-3600, 3600))
def test_next_wakeup_is_never_in_the_past(
    case: tuple[Snapshot, dict[str, Record], History, Policy], shift: float
) -> None:
    snap, recs, history, pol = case
    now = NOW + shift
    result = plan(snap, recs, history, pol, now)
    assert result.next_wakeup is None or result.next_wakeup > now


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_every_node_is_listed_and_every_noteworthy_one_reported(
    case: tuple[Snapshot, dict[str, Record], History, Policy],
) -> None:
    snap, recs, history, pol = case
    result = plan(snap, recs, history, pol, NOW)
    reports = {r.node: r for r in result.reports}
    assert set(result.node_classes) == {v.name for v in snap.nodes}
    for view in snap.nodes:
        cls = next((c for c in pol.classes if c.selector.matches(view.labels)), None)
        assert result.node_classes[view.name] == (cls.name if cls else None)
        if cls is None:
            assert reports[view.name].cls is None
            assert view.name in recs or "unmatched" in reports[view.name].note
            continue
        health = classify(view, CompiledRules.of(cls), NOW)
        if health.state is not HealthState.HEALTHY or view.name in recs or view.excluded:
            assert reports[view.name].health == health
        else:
            assert view.name not in reports
    # Every node held back by a gate is reported with that gate.
    for d in result.decisions:
        if d.kind is DecisionKind.SKIP and d.node in reports:
            assert reports[d.node].blocked == d.blocked
