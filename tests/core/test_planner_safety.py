"""plan() under adversarial inputs: forged records, gates that trip under work in flight,
exclusion mid-remediation, Cluster API's counting of pending and starting nodes."""

from __future__ import annotations

import json

import pytest

from noderescue.core.model import (
    Action,
    Condition,
    DecisionKind,
    Gate,
    History,
    HistoryEvent,
    NodeView,
    Pause,
    Phase,
    Plan,
    Quantity,
    Record,
    Step,
)
from noderescue.core.planner import plan
from noderescue.core.records import ladder_hash
from tests.core.factories import (
    MIN,
    NOW,
    admitted,
    bad,
    node,
    node_class,
    policy,
    record,
    snapshot,
)

REPLACE = (Step(Action.REPLACE, 600.0),)
PETS = (
    Step(Action.REPAIR, 300.0, command="systemctl restart kubelet"),
    Step(Action.REBOOT, 900.0),
    Step(Action.NOTIFY),
)
PET_CLASS = node_class("pets", ladder=PETS)
YEAR = 365 * 86400.0


def only(result: Plan, node_name: str):  # type: ignore[no-untyped-def]
    found = [d for d in result.decisions if d.node == node_name]
    assert len(found) == 1, found
    return found[0]


def kinds(result: Plan) -> dict[str, DecisionKind]:
    return {d.node: d.kind for d in result.decisions}


def pet(name: str, **kw: object) -> NodeView:
    return node(name, labels={"noderescue.io/class": "pets"}, **kw)  # type: ignore[arg-type]


def op(instance: str) -> str:
    return json.dumps(
        {"id": "op-1", "kind": "replace", "instance_id": instance, "started": NOW, "provider": "aws"}
    )


# --- Cluster API counting: pending and starting nodes count toward maxUnhealthy -----------------


def test_mhc_replay_two_unhealthy_and_one_pending_of_six_start_nothing() -> None:
    # 40% of 6 allows 2 (rounded down). c matches the Ready rule but its 3m have not elapsed:
    # Cluster API counts it as unhealthy (not remediated): 3 > 2, the short-circuit trips.
    pending = node("c", ready="False", ready_since=NOW - 60)
    nodes = [bad("a"), bad("b"), pending, node("d"), node("e"), node("f")]
    result = plan(snapshot(*nodes), {}, History(), policy(max_unhealthy=Quantity(40, percent=True)), NOW)
    assert not [d for d in result.decisions if d.kind is DecisionKind.START]
    assert {d.blocked.gate for d in result.decisions if d.blocked} == {Gate.SHORT_CIRCUIT}
    assert [scope for scope, _ in result.tripped] == ["class/workers", "cluster"]


def test_mhc_replay_two_unhealthy_of_six_both_start() -> None:
    nodes = [bad("a"), bad("b"), node("c"), node("d"), node("e"), node("f")]
    result = plan(snapshot(*nodes), {}, History(), policy(max_unhealthy=Quantity(40, percent=True)), NOW)
    assert kinds(result) == {"a": DecisionKind.START, "b": DecisionKind.START}


def test_node_inside_its_startup_timeout_counts_toward_max_unhealthy() -> None:
    # c registered 2 minutes ago and is not Ready yet (startup timeout 10m): not remediated,
    # but counted, as Cluster API does.
    starting = node("c", ready="False", ready_since=NOW - 120, created=NOW - 120)
    cls = node_class(startup_timeout=600.0)
    nodes = [bad("a"), bad("b"), starting, node("d"), node("e"), node("f")]
    result = plan(snapshot(*nodes), {}, History(), policy(cls, max_unhealthy=Quantity(40, percent=True)), NOW)
    assert "c" not in kinds(result)
    assert not [d for d in result.decisions if d.kind is DecisionKind.START]


def test_joining_node_does_not_dilute_the_zone() -> None:
    # Zone b: one bad node of two (50% allows 1). A third node joining zone b (not Ready, no
    # rule about it in this class) must not make it 1 of 3 healthy-looking nodes... it counts.
    cls = node_class(rules=(node_class().rules[1],))  # KernelDeadlock only: NotReady matches no rule
    deadlock = (Condition("KernelDeadlock", "True", "", NOW - 600),)
    nodes = [
        node("a", zone="b", conditions=deadlock),
        node("b", zone="b"),
        node("j", zone="b", ready="False", ready_since=NOW - 30, created=NOW - 30),
        node("x", zone="c"),
    ]
    result = plan(snapshot(*nodes), {}, History(), policy(cls, per_zone=Quantity(50, percent=True)), NOW)
    decision = only(result, "a")
    assert decision.kind is DecisionKind.SKIP and decision.blocked and decision.blocked.gate is Gate.ZONE


def test_pending_node_is_counted_but_never_remediated() -> None:
    pending = node("c", ready="False", ready_since=NOW - 60)
    result = plan(snapshot(pending, node("d")), {}, History(), policy(), NOW)
    assert result.decisions == ()


def test_a_replacement_joining_counts_once_with_the_replace_it_belongs_to() -> None:
    # 6 nodes at 40% allow 2: a and b are being replaced (a's instance is terminating, its
    # replacement r is joining). r belongs to a's remediation: 2 unhealthy, nothing holds.
    ra = record("a", phase=Phase.VERIFYING, started=NOW - 300)
    rb = record("b", phase=Phase.DRAINING)
    joining = node("r", ready="False", ready_since=NOW - 30, created=NOW - 60)
    cls = node_class(startup_timeout=600.0)
    nodes = [bad("a"), bad("b"), joining, node("d"), node("e"), node("f")]
    result = plan(
        snapshot(*nodes),
        {"a": ra, "b": rb},
        admitted(ra, rb),
        policy(cls, max_unhealthy=Quantity(40, percent=True)),
        NOW,
    )
    assert kinds(result) == {"a": DecisionKind.CONTINUE, "b": DecisionKind.CONTINUE}


def test_replacement_of_a_missing_node_counts_once() -> None:
    # The old node is gone (counted as missing) and its replacement is joining: one remediation.
    # 40% of 5 expected nodes allows 2; b is bad: 2 unhealthy, b may start.
    rec = record("gone", phase=Phase.VERIFYING, started=NOW - 300)
    joining = node("r", ready="False", ready_since=NOW - 30, created=NOW - 60)
    nodes = [bad("b"), joining, node("d"), node("e"), node("f")]
    pol = policy(node_class(startup_timeout=600.0), max_unhealthy=Quantity(40, percent=True))
    result = plan(snapshot(*nodes), {"gone": rec}, admitted(rec), pol, NOW)
    assert kinds(result) == {"gone": DecisionKind.CONTINUE, "b": DecisionKind.START}


def test_a_node_that_joined_before_the_replace_started_is_not_its_replacement() -> None:
    rec = record("gone", phase=Phase.VERIFYING, started=NOW - 300)
    joining = node("r", ready="False", ready_since=NOW - 30, created=NOW - 400)
    nodes = [bad("b"), joining, node("d"), node("e"), node("f")]
    pol = policy(node_class(startup_timeout=600.0), max_unhealthy=Quantity(40, percent=True))
    result = plan(snapshot(*nodes), {"gone": rec}, admitted(rec), pol, NOW)
    # gone + r + b = 3 of 6: over 40% (2): the short-circuit holds the replace and b.
    assert kinds(result) == {"gone": DecisionKind.HOLD, "b": DecisionKind.SKIP}


def test_a_replace_that_has_not_acted_yet_has_no_replacement() -> None:
    ra = record("a", phase=Phase.DRAINING, started=NOW - 300)
    joining = node("r", ready="False", ready_since=NOW - 30, created=NOW - 60)
    nodes = [bad("a"), bad("b"), joining, node("d"), node("e"), node("f")]
    pol = policy(node_class(startup_timeout=600.0), max_unhealthy=Quantity(40, percent=True))
    result = plan(snapshot(*nodes), {"a": ra}, admitted(ra), pol, NOW)
    assert kinds(result) == {"a": DecisionKind.HOLD, "b": DecisionKind.SKIP}


# --- forged or stale records are parked and hold no slot -----------------------------------------


def _forged_cases() -> list[object]:
    base = record("f", phase=Phase.ACTING)
    return [
        pytest.param(
            record("f", cls="pets", action=Action.REPLACE, phase=Phase.ACTING),
            "not step 1 of class pets",
            id="action-not-the-ladders",
        ),
        pytest.param(
            record("f", phase=Phase.ACTING, deadline=NOW + 10 * YEAR),
            "deadline",
            id="ten-year-deadline",
        ),
        pytest.param(
            record("f", phase=Phase.ACTING, instance_id="i-f", operation_id=op("i-other")),
            "not on the record's instance",
            id="operation-of-another-instance",
        ),
        pytest.param(base, "no history entry", id="no-history-entry"),
        pytest.param(
            record("f", phase=Phase.ACTING, cls="gone"),
            "class gone is not configured",
            id="class-gone",
        ),
        pytest.param(
            record("f", phase=Phase.ACTING, started=NOW + 3600),
            "in the future",
            id="step-in-the-future",
        ),
    ]


@pytest.mark.parametrize(("rec", "why"), _forged_cases())
def test_forged_record_is_parked_and_holds_no_slot(rec: Record, why: str) -> None:
    # maxConcurrent 1: were the forged record counted, b could not start.
    view = pet("f", ready="False") if rec.cls == "pets" else bad("f")
    # The history admits each forged record (but the last): what refuses it is the record.
    history = admitted(rec) if why != "no history entry" else History()
    pol = policy(PET_CLASS, node_class(), max_concurrent=1)
    result = plan(snapshot(view, bad("b"), node("h")), {"f": rec}, history, pol, NOW)
    decision = only(result, "f")
    assert decision.kind is DecisionKind.NEEDS_HUMAN, decision
    assert decision.reason.startswith("record refused: ") and why in decision.reason
    assert decision.record == rec
    assert only(result, "b").kind is DecisionKind.START


def test_forged_record_of_a_missing_node_is_parked_and_holds_no_slot() -> None:
    rec = record("gone", phase=Phase.VERIFYING)  # no history admits it
    result = plan(snapshot(bad("b"), node("h")), {"gone": rec}, History(), policy(max_concurrent=1), NOW)
    assert kinds(result) == {"gone": DecisionKind.NEEDS_HUMAN, "b": DecisionKind.START}
    assert only(result, "gone").reason.startswith("record refused: ")


def test_admitted_record_holds_its_slot() -> None:
    rec = record("f", phase=Phase.ACTING)
    result = plan(snapshot(bad("f"), bad("b")), {"f": rec}, admitted(rec), policy(max_concurrent=1), NOW)
    assert kinds(result) == {"f": DecisionKind.CONTINUE, "b": DecisionKind.SKIP}
    assert only(result, "b").blocked.gate is Gate.MAX_CONCURRENT


def test_history_event_of_another_action_does_not_admit() -> None:
    rec = record("f", phase=Phase.ACTING)
    history = History((HistoryEvent(rec.step_started, Action.REBOOT, "f", attempt_start=True),))
    decision = only(plan(snapshot(bad("f")), {"f": rec}, history, policy(), NOW), "f")
    assert decision.kind is DecisionKind.NEEDS_HUMAN


# --- ladder changed under a live record ------------------------------------------------------------


def test_record_of_a_changed_ladder_finishes_its_step() -> None:
    rec = record("p", cls="pets", action=Action.REPAIR, phase=Phase.ACTING, ladder_hash="0" * 64)
    result = plan(snapshot(pet("p", ready="False")), {"p": rec}, admitted(rec), policy(PET_CLASS), NOW)
    assert only(result, "p").kind is DecisionKind.CONTINUE


def test_record_of_a_changed_ladder_parks_instead_of_escalating() -> None:
    rec = record("p", cls="pets", action=Action.REPAIR, phase=Phase.FAILED, ladder_hash="0" * 64)
    decision = only(
        plan(snapshot(pet("p", ready="False")), {"p": rec}, admitted(rec), policy(PET_CLASS), NOW), "p"
    )
    assert decision.kind is DecisionKind.NEEDS_HUMAN
    assert "ladder changed under a live remediation" in decision.reason


@pytest.mark.parametrize(
    "hash_",
    [pytest.param("", id="older-record-without-hash"), pytest.param(ladder_hash(PETS), id="same-ladder")],
)
def test_record_of_the_current_ladder_escalates(hash_: str) -> None:
    rec = record("p", cls="pets", action=Action.REPAIR, phase=Phase.FAILED, ladder_hash=hash_)
    decision = only(
        plan(snapshot(pet("p", ready="False")), {"p": rec}, admitted(rec), policy(PET_CLASS), NOW), "p"
    )
    assert (decision.kind, decision.action) == (DecisionKind.ESCALATE, Action.REBOOT)


# --- holds for in-flight work ----------------------------------------------------------------------


def test_zone_that_trips_while_a_replace_is_mid_flight_holds_it() -> None:
    # a is being replaced (mid-drain) in zone b; then zone b fails: c and d go NotReady.
    # 3 of 4 unhealthy in zone b (50% allows 2): the replace must not go on to terminate a.
    rec = record("a", phase=Phase.DRAINING)
    nodes = [
        bad("a", zone="b"),
        bad("c", zone="b"),
        bad("d", zone="b"),
        node("e", zone="b"),
        node("x", zone="c"),
    ]
    result = plan(
        snapshot(*nodes), {"a": rec}, admitted(rec), policy(per_zone=Quantity(50, percent=True)), NOW
    )
    decision = only(result, "a")
    assert decision.kind is DecisionKind.HOLD
    assert decision.blocked is not None and decision.blocked.gate is Gate.ZONE
    assert decision.record == rec
    assert {r.node: r.decision for r in result.reports}["a"] is DecisionKind.HOLD
    assert kinds(result)["c"] is DecisionKind.SKIP


def test_in_flight_remediation_is_not_held_by_its_own_count() -> None:
    # 40% of 6 allows 2: a and b were admitted at the limit; they count once each and go on.
    ra, rb = record("a", phase=Phase.DRAINING), record("b", phase=Phase.ACTING)
    nodes = [bad("a"), node("b")] + [node(f"h{i}") for i in range(4)]
    result = plan(
        snapshot(*nodes),
        {"a": ra, "b": rb},
        admitted(ra, rb),
        policy(max_unhealthy=Quantity(40, percent=True)),
        NOW,
    )
    assert kinds(result) == {"a": DecisionKind.CONTINUE, "b": DecisionKind.CONTINUE}
    assert result.tripped == ()


def test_missing_node_being_replaced_is_not_held_by_its_own_count() -> None:
    # The old node is gone (instance terminated): it counts once, as missing.
    rec = record("gone", phase=Phase.VERIFYING)
    nodes = [node(f"h{i}") for i in range(4)]
    result = plan(
        snapshot(*nodes), {"gone": rec}, admitted(rec), policy(max_unhealthy=Quantity(40, percent=True)), NOW
    )
    assert kinds(result) == {"gone": DecisionKind.CONTINUE}


def test_short_circuit_tripping_under_in_flight_work_holds_it() -> None:
    ra = record("a", phase=Phase.DRAINING)
    nodes = [bad("a"), bad("b"), bad("c")] + [node(f"h{i}") for i in range(3)]
    result = plan(
        snapshot(*nodes), {"a": ra}, admitted(ra), policy(max_unhealthy=Quantity(40, percent=True)), NOW
    )
    decision = only(result, "a")
    assert decision.kind is DecisionKind.HOLD and decision.blocked.gate is Gate.SHORT_CIRCUIT


def test_missing_node_record_is_held_by_a_short_circuit() -> None:
    rec = record("gone", phase=Phase.ACTING)
    nodes = [bad("b"), bad("c"), node("h")]
    result = plan(
        snapshot(*nodes), {"gone": rec}, admitted(rec), policy(max_unhealthy=Quantity(40, percent=True)), NOW
    )
    assert only(result, "gone").kind is DecisionKind.HOLD


@pytest.mark.parametrize(
    ("snap_kw", "gate"),
    [
        pytest.param({"pause": Pause("change freeze")}, Gate.PAUSE, id="paused"),
        pytest.param({"synced_at": NOW - 7200}, Gate.STALE_VIEW, id="stale"),
        pytest.param({"reachable": False}, Gate.STALE_VIEW, id="unreachable"),
    ],
)
def test_pause_and_stale_view_hold_in_flight_work(snap_kw: dict[str, object], gate: Gate) -> None:
    rec = record("a", phase=Phase.DRAINING)
    decision = only(plan(snapshot(bad("a"), **snap_kw), {"a": rec}, admitted(rec), policy(), NOW), "a")  # type: ignore[arg-type]
    assert decision.kind is DecisionKind.HOLD and decision.blocked.gate is gate


def test_held_remediation_continues_once_the_gate_clears() -> None:
    rec = record("a", phase=Phase.DRAINING)
    decision = only(plan(snapshot(bad("a")), {"a": rec}, admitted(rec), policy(), NOW), "a")
    assert decision.kind is DecisionKind.CONTINUE


def test_failed_step_under_a_tripped_zone_is_not_escalated() -> None:
    rec = record("p", cls="pets", action=Action.REPAIR, phase=Phase.FAILED)
    nodes = [pet("p", ready="False", zone="b"), pet("q", ready="False", ready_since=NOW - 3600, zone="b")]
    result = plan(
        snapshot(*nodes),
        {"p": rec},
        admitted(rec),
        policy(PET_CLASS, per_zone=Quantity(50, percent=True)),
        NOW,
    )
    decision = only(result, "p")
    assert decision.kind is DecisionKind.SKIP and decision.blocked.gate is Gate.ZONE


# --- exclusion is hands-off -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase",
    [Phase.STARTED, Phase.CORDONED, Phase.DRAINING, Phase.ACTING, Phase.VERIFYING, Phase.FAILED],
)
def test_exclusion_mid_remediation_releases_the_node_to_a_human(phase: Phase) -> None:
    view = node(
        "w", labels={"noderescue.io/class": "workers", "noderescue.io/exclude": "true"}, ready="False"
    )
    rec = record("w", phase=phase)
    decision = only(plan(snapshot(view), {"w": rec}, admitted(rec), policy(), NOW), "w")
    assert (decision.kind, decision.result) == (DecisionKind.FINISH, "released")
    assert decision.reason == "excluded: released to a human"


def test_pending_wakeup_still_scheduled() -> None:
    result = plan(snapshot(node("a", ready="False", ready_since=NOW - 60)), {}, History(), policy(), NOW)
    assert result.next_wakeup == NOW + 2 * MIN
