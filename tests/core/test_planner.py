"""plan(): each gate in §4 order, ladder transitions, records, wake-ups."""

from __future__ import annotations

import pytest

from noderescue.core.model import (
    Action,
    Condition,
    DecisionKind,
    Gate,
    History,
    HistoryEvent,
    Pause,
    Phase,
    Plan,
    Quantity,
    RateLimit,
    Selector,
    SelectorRequirement,
    Step,
    Window,
)
from noderescue.core.planner import plan
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


def only(result: Plan, node_name: str):  # type: ignore[no-untyped-def]
    found = [d for d in result.decisions if d.node == node_name]
    assert len(found) == 1, found
    return found[0]


def kinds(result: Plan) -> dict[str, DecisionKind]:
    return {d.node: d.kind for d in result.decisions}


def test_healthy_cluster_decides_nothing() -> None:
    result = plan(snapshot(node("a"), node("b")), {}, History(), policy(), NOW)
    assert result.decisions == ()
    assert result.reports == ()  # plainly healthy nodes are listed, not reported one by one
    assert result.node_classes == {"a": "workers", "b": "workers"}
    assert result.counts == {("workers", "healthy"): 2}


def test_unhealthy_node_starts_first_step() -> None:
    result = plan(snapshot(node("a"), bad("b")), {}, History(), policy(), NOW)
    decision = only(result, "b")
    assert decision.kind is DecisionKind.START
    assert (decision.cls, decision.step, decision.action) == ("workers", 0, Action.REPLACE)
    assert "Ready=False" in decision.reason


def test_pending_node_schedules_wakeup_exactly_when_for_elapses() -> None:
    result = plan(snapshot(node("a", ready="False", ready_since=NOW - 60)), {}, History(), policy(), NOW)
    assert result.decisions == ()
    assert result.next_wakeup == NOW + 2 * MIN
    assert result.reports[0].note == "pending"


# --- gates, in §4 order ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snap", "pol", "history", "gate"),
    [
        pytest.param(
            snapshot(bad("b"), synced_at=NOW - 61),
            policy(stale_after=60.0),
            History(),
            Gate.STALE_VIEW,
            id="stale-view",
        ),
        pytest.param(
            snapshot(bad("b"), synced_at=None), policy(), History(), Gate.STALE_VIEW, id="never-synced"
        ),
        pytest.param(
            snapshot(bad("b"), reachable=False),
            policy(),
            History(),
            Gate.STALE_VIEW,
            id="unreachable",
        ),
        pytest.param(
            snapshot(bad("b"), pause=Pause("change freeze")),
            policy(),
            History(),
            Gate.PAUSE,
            id="paused",
        ),
        pytest.param(
            snapshot(bad("b", labels={"noderescue.io/class": "workers", "noderescue.io/exclude": "true"})),
            policy(),
            History(),
            Gate.EXCLUDED,
            id="excluded",
        ),
        pytest.param(
            # 40% of 6 is 2 (rounded down, as Cluster API): 3 unhealthy trips it.
            snapshot(bad("a"), bad("b"), bad("c"), node("d"), node("e"), node("f")),
            policy(max_unhealthy=Quantity(40, percent=True)),
            History(),
            Gate.SHORT_CIRCUIT,
            id="short-circuit-3-of-6-over-40pct",
        ),
        pytest.param(
            snapshot(bad("b", zone="b"), bad("c", zone="b"), node("a", zone="a"), node("d", zone="b")),
            policy(per_zone=Quantity(50, percent=True)),
            History(),
            Gate.ZONE,
            id="zone-2-of-3",
        ),
        pytest.param(
            snapshot(bad("b"), node("a")),
            policy(max_concurrent=0),
            History(),
            Gate.MAX_CONCURRENT,
            id="max-concurrent",
        ),
        pytest.param(
            snapshot(bad("b"), node("a", unschedulable=True), node("c"), node("d")),
            policy(node_class(max_unavailable=Quantity(1))),
            History(),
            Gate.MAX_UNAVAILABLE,
            id="max-unavailable-human-cordon-counts",
        ),
        pytest.param(
            snapshot(bad("b"), node("a")),
            policy(rate_limits=(RateLimit(Action.REPLACE, 1, 3600.0),)),
            History((HistoryEvent(NOW - 600, Action.REPLACE, "x"),)),
            Gate.RATE_LIMIT,
            id="rate-limit",
        ),
        pytest.param(
            snapshot(bad("b"), node("a")),
            policy(
                node_class(ladder=(Step(Action.REBOOT, 600.0, window=Window(frozenset({4}), 0, 60, "UTC")),))
            ),
            History(),
            Gate.WINDOW,
            id="window-closed",
        ),
    ],
)
def test_gate_blocks_start(snap, pol, history, gate):  # type: ignore[no-untyped-def]
    result = plan(snap, {}, history, pol, NOW)
    skipped = [d for d in result.decisions if d.kind is DecisionKind.SKIP]
    assert skipped, result.decisions
    assert {d.blocked.gate for d in skipped if d.blocked} == {gate}
    assert not [d for d in result.decisions if d.kind is DecisionKind.START]
    reports = {r.node: r for r in result.reports}
    for d in skipped:
        assert reports[d.node].blocked == d.blocked  # plan reports every skipped node with its reason


def test_short_circuit_allows_exactly_the_rounded_down_count() -> None:
    nodes = [bad("a"), bad("b")] + [node(f"h{i}") for i in range(4)]
    result = plan(snapshot(*nodes), {}, History(), policy(max_unhealthy=Quantity(40, percent=True)), NOW)
    assert kinds(result) == {"a": DecisionKind.START, "b": DecisionKind.START}
    assert result.tripped == ()


def test_short_circuit_is_reported_once_per_scope() -> None:
    nodes = [bad("a"), bad("b"), bad("c")] + [node(f"h{i}") for i in range(3)]
    result = plan(snapshot(*nodes), {}, History(), policy(max_unhealthy=Quantity(40, percent=True)), NOW)
    assert [scope for scope, _ in result.tripped] == ["class/workers", "cluster"]


def test_in_remediation_nodes_count_as_unhealthy_for_short_circuit() -> None:
    # a and b are being replaced and look healthy (drained, still Ready); c turning bad makes 3 of 6.
    nodes = [node("a"), node("b"), bad("c")] + [node(f"h{i}") for i in range(3)]
    records = {"a": record("a"), "b": record("b")}
    result = plan(
        snapshot(*nodes),
        records,
        admitted(*records.values()),
        policy(max_unhealthy=Quantity(40, percent=True)),
        NOW,
    )
    decision = only(result, "c")
    assert decision.kind is DecisionKind.SKIP and decision.blocked
    assert decision.blocked.gate is Gate.SHORT_CIRCUIT


def test_missing_node_with_record_counts_as_unhealthy_and_in_flight() -> None:
    nodes = [bad("c")] + [node(f"h{i}") for i in range(3)]
    records = {"gone": record("gone", phase=Phase.VERIFYING)}
    result = plan(snapshot(*nodes), records, admitted(*records.values()), policy(max_concurrent=1), NOW)
    assert kinds(result) == {"gone": DecisionKind.CONTINUE, "c": DecisionKind.SKIP}
    assert only(result, "c").blocked.gate is Gate.MAX_CONCURRENT  # type: ignore[union-attr]


def test_max_concurrent_admits_in_name_order_within_one_pass() -> None:
    nodes = [bad("c"), bad("a"), bad("b"), node("h")]
    result = plan(snapshot(*nodes), {}, History(), policy(max_concurrent=2), NOW)
    assert kinds(result) == {"a": DecisionKind.START, "b": DecisionKind.START, "c": DecisionKind.SKIP}


def test_max_unavailable_percentage_rounds_up() -> None:
    # 20% of 3 is 0.6 -> 1 (as a PDB's maxUnavailable): one node may go, the second waits.
    # a is NotReady (unavailable already, remediating it costs no capacity); b is still Ready.
    deadlock = (Condition("KernelDeadlock", "True", "", NOW - 600),)
    nodes = [bad("a"), node("b", conditions=deadlock), node("c")]
    result = plan(
        snapshot(*nodes), {}, History(), policy(node_class(max_unavailable=Quantity(20, percent=True))), NOW
    )
    assert kinds(result) == {"a": DecisionKind.START, "b": DecisionKind.SKIP}
    assert only(result, "b").blocked.gate is Gate.MAX_UNAVAILABLE  # type: ignore[union-attr]


def test_rate_limit_counts_starts_in_this_pass_and_wakes_when_a_slot_frees() -> None:
    history = History((HistoryEvent(NOW - 3000, Action.REPLACE, "old"),))
    pol = policy(rate_limits=(RateLimit(Action.REPLACE, 2, 3600.0),))
    result = plan(snapshot(bad("a"), bad("b"), node("c")), {}, history, pol, NOW)
    assert kinds(result) == {"a": DecisionKind.START, "b": DecisionKind.SKIP}
    assert only(result, "b").blocked.until == NOW - 3000 + 3600  # type: ignore[union-attr]
    assert result.next_wakeup == NOW + 600


def test_rate_limit_window_is_sliding() -> None:
    history = History((HistoryEvent(NOW - 3601, Action.REPLACE, "old"),))
    pol = policy(rate_limits=(RateLimit(Action.REPLACE, 1, 3600.0),))
    assert kinds(plan(snapshot(bad("a")), {}, history, pol, NOW)) == {"a": DecisionKind.START}


def test_attempts_used_up_parks_the_node_for_a_human() -> None:
    history = History(
        tuple(HistoryEvent(NOW - 1000 * i, Action.REPLACE, "a", attempt_start=True) for i in range(1, 4))
    )
    result = plan(snapshot(bad("a"), node("b")), {}, history, policy(), NOW)
    decision = only(result, "a")
    assert decision.kind is DecisionKind.NEEDS_HUMAN
    assert decision.blocked and decision.blocked.gate is Gate.ATTEMPTS


def test_window_opening_is_the_next_wakeup() -> None:
    win = Window(frozenset({3}), 120, 300, "UTC")  # Thursdays 02:00-05:00; NOW is Wednesday 03:00
    result = plan(
        snapshot(bad("a")),
        {},
        History(),
        policy(node_class(ladder=(Step(Action.REBOOT, 600.0, window=win),))),
        NOW,
    )
    assert result.next_wakeup == NOW + 23 * 3600


@pytest.mark.parametrize(
    ("strict", "ready", "expected"),
    [
        pytest.param(False, "False", DecisionKind.START, id="down-node-replace-skips-window"),
        pytest.param(True, "False", DecisionKind.SKIP, id="strict-window-holds-even-down-node"),
        pytest.param(False, "True", DecisionKind.SKIP, id="ready-node-waits-for-window"),
    ],
)
def test_urgent_replace_and_windows(strict: bool, ready: str, expected: DecisionKind) -> None:
    from noderescue.core.model import ConditionRule

    win = Window(frozenset({4}), 0, 60, "UTC", strict=strict)
    cls = node_class(
        ladder=(Step(Action.REPLACE, 600.0, window=win),),
        rules=(ConditionRule("ReadonlyFilesystem", frozenset({"True"}), 30.0),),
    )
    view = node("a", ready=ready, conditions=(Condition("ReadonlyFilesystem", "True", "", NOW - 600),))
    assert only(plan(snapshot(view), {}, History(), policy(cls), NOW), "a").kind is expected


# --- classes -------------------------------------------------------------------------------------


def test_first_matching_class_wins_and_unmatched_nodes_are_reported_never_acted_on() -> None:
    gpu = node_class(
        "gpu", selector=Selector(match_expressions=(SelectorRequirement("gpu", "Exists"),)), ladder=PETS
    )
    workers = node_class("workers")
    nodes = [
        bad("g", labels={"gpu": "a100", "noderescue.io/class": "workers"}),
        bad("w"),
        bad("x", labels={"other": "1"}),
    ]
    result = plan(snapshot(*nodes), {}, History(), policy(gpu, workers), NOW)
    assert {d.node: (d.cls, d.action) for d in result.decisions} == {
        "g": ("gpu", Action.REPAIR),
        "w": ("workers", Action.REPLACE),
    }
    report = {r.node: r for r in result.reports}["x"]
    assert report.cls is None and report.decision is None and "unmatched" in report.note
    assert result.counts[("-", "healthy")] == 1


def test_notify_only_class_parks_for_humans() -> None:
    cp = node_class("cp", ladder=(Step(Action.NOTIFY),))
    result = plan(snapshot(bad("m", labels={"noderescue.io/class": "cp"})), {}, History(), policy(cp), NOW)
    decision = only(result, "m")
    assert decision.kind is DecisionKind.NEEDS_HUMAN and decision.action is Action.NOTIFY


# --- ladder --------------------------------------------------------------------------------------

PET_CLASS = node_class("pets", ladder=PETS)


def pet(name: str, **kw: object):  # type: ignore[no-untyped-def]
    return node(name, labels={"noderescue.io/class": "pets"}, **kw)  # type: ignore[arg-type]


def bad_pet(name: str, **kw: object):  # type: ignore[no-untyped-def]
    return pet(name, ready="False", ready_since=NOW - 3600, **kw)


@pytest.mark.parametrize(
    ("view", "rec", "kind", "step", "result_"),
    [
        pytest.param(
            bad_pet("p"),
            record("p", cls="pets", action=Action.REPAIR, phase=Phase.VERIFYING),
            DecisionKind.CONTINUE,
            0,
            None,
            id="in-flight-continues",
        ),
        pytest.param(
            bad_pet("p"),
            record("p", cls="pets", action=Action.REPAIR, phase=Phase.VERIFYING, deadline=NOW),
            DecisionKind.ESCALATE,
            1,
            None,
            id="timeout-escalates-to-reboot",
        ),
        pytest.param(
            bad_pet("p"),
            record("p", cls="pets", action=Action.REPAIR, phase=Phase.FAILED),
            DecisionKind.ESCALATE,
            1,
            None,
            id="failure-escalates",
        ),
        pytest.param(
            bad_pet("p"),
            record("p", cls="pets", step=1, action=Action.REBOOT, phase=Phase.VERIFYING, deadline=NOW - 1),
            DecisionKind.NEEDS_HUMAN,
            2,
            None,
            id="next-is-notify-needs-human",
        ),
        pytest.param(
            pet("p"),
            record("p", cls="pets", action=Action.REPAIR, phase=Phase.VERIFYING),
            DecisionKind.FINISH,
            0,
            "succeeded",
            id="repair-healed",
        ),
        pytest.param(
            pet("p"),
            record("p", cls="pets", action=Action.REPAIR, phase=Phase.STARTED),
            DecisionKind.FINISH,
            0,
            "recovered",
            id="healed-before-acting",
        ),
        pytest.param(
            pet("p", boot_id="boot-1"),
            record(
                "p", cls="pets", step=1, action=Action.REBOOT, phase=Phase.VERIFYING, boot_id_before="boot-1"
            ),
            DecisionKind.CONTINUE,
            1,
            None,
            id="reboot-not-verified-without-bootid-change",
        ),
        pytest.param(
            pet("p", boot_id="boot-2"),
            record(
                "p", cls="pets", step=1, action=Action.REBOOT, phase=Phase.VERIFYING, boot_id_before="boot-1"
            ),
            DecisionKind.FINISH,
            1,
            "succeeded",
            id="reboot-verified-by-bootid",
        ),
        pytest.param(
            node("w"),
            record("w", phase=Phase.ACTING),
            DecisionKind.CONTINUE,
            0,
            None,
            id="replace-is-verified-by-the-replacement",
        ),
        pytest.param(
            bad_pet("p", uid="new-uid"),
            record("p", cls="pets", action=Action.REPAIR),
            DecisionKind.FINISH,
            0,
            "failed",
            id="name-reused-record-dropped",
        ),
        pytest.param(
            bad_pet("p"),
            record("p", cls="pets", action=Action.NOTIFY, phase=Phase.NEEDS_HUMAN, step=2),
            None,
            None,
            None,
            id="parked-stays-parked",
        ),
        pytest.param(
            pet("p"),
            record("p", cls="pets", action=Action.NOTIFY, phase=Phase.NEEDS_HUMAN, step=2),
            DecisionKind.FINISH,
            2,
            "recovered",
            id="parked-node-recovered",
        ),
    ],
)
def test_ladder(view, rec, kind, step, result_):  # type: ignore[no-untyped-def]
    result = plan(snapshot(view), {view.name: rec}, admitted(rec), policy(PET_CLASS, node_class()), NOW)
    if kind is None:
        assert result.decisions == ()
        assert "needs a human" in result.reports[0].note
        return
    decision = only(result, view.name)
    assert (decision.kind, decision.step, decision.result) == (kind, step, result_)


def test_exhausted_ladder_without_notify_step_needs_human() -> None:
    cls = node_class(ladder=(Step(Action.REPLACE, 600.0),))
    rec = record("w", deadline=NOW - 1)
    result = plan(snapshot(bad("w")), {"w": rec}, admitted(rec), policy(cls), NOW)
    decision = only(result, "w")
    assert decision.kind is DecisionKind.NEEDS_HUMAN
    assert "ladder exhausted" in decision.reason


def test_escalation_respects_rate_limit_of_next_action() -> None:
    rec = record("p", cls="pets", action=Action.REPAIR, phase=Phase.FAILED)
    history = admitted(rec, extra=(HistoryEvent(NOW - 60, Action.REBOOT, "x"),))
    pol = policy(PET_CLASS, rate_limits=(RateLimit(Action.REBOOT, 1, 3600.0),))
    decision = only(plan(snapshot(bad_pet("p")), {"p": rec}, history, pol, NOW), "p")
    assert decision.kind is DecisionKind.SKIP and decision.record == rec
    assert decision.blocked and decision.blocked.gate is Gate.RATE_LIMIT


def test_in_flight_record_holds_still_while_view_is_stale() -> None:
    rec = record("w", deadline=NOW - 1)
    pol = policy(stale_after=60.0)
    decision = only(plan(snapshot(bad("w"), synced_at=NOW - 300), {"w": rec}, admitted(rec), pol, NOW), "w")
    assert decision.kind is DecisionKind.SKIP and decision.blocked.gate is Gate.STALE_VIEW  # type: ignore[union-attr]


def test_excluded_node_mid_remediation_is_released() -> None:
    # Hands-off: released to the human who excluded it (was "failed", which uncordoned it).
    view = node("w", labels={"noderescue.io/class": "workers", "noderescue.io/exclude": "true"})
    rec = record("w")
    decision = only(plan(snapshot(view), {"w": rec}, admitted(rec), policy(), NOW), "w")
    assert decision.kind is DecisionKind.FINISH and decision.result == "released"


def test_deadline_is_a_wakeup() -> None:
    rec = record("w", deadline=NOW + 42)
    result = plan(snapshot(bad("w")), {"w": rec}, admitted(rec), policy(), NOW)
    assert result.next_wakeup == NOW + 42


def test_lease_staleness_is_a_wakeup_not_a_poll() -> None:
    from noderescue.core.model import LeaseRule

    cls = node_class(rules=(LeaseRule(120.0),))
    pol = policy(cls, stale_after=60.0)
    result = plan(snapshot(node("a", lease_renew=NOW - 10), synced_at=NOW), {}, History(), pol, NOW)
    assert result.next_wakeup == NOW + 110
    result = plan(snapshot(node("a", lease_renew=NOW - 100), synced_at=NOW), {}, History(), pol, NOW)
    assert result.next_wakeup == NOW + 20
