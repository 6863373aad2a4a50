"""ladder_hash and check_record: which records noderescue could have written under a policy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from noderescue.core.model import Action, History, HistoryEvent, Phase, Record, Step, Window
from noderescue.core.records import (
    CLOCK_SKEW_S,
    DEADLINE_SLACK_S,
    HISTORY_SLACK_S,
    check_record,
    ladder_hash,
    operation_instance,
)
from tests.core.factories import NOW, admitted, node_class, policy, record

PETS = (
    Step(Action.REPAIR, 300.0, command="systemctl restart kubelet"),
    Step(Action.REBOOT, 900.0, window=Window(frozenset({5, 0}), 60, 240, "Europe/Paris")),
    Step(Action.NOTIFY),
)
POLICY = policy(node_class("pets", ladder=PETS), node_class("workers"))
HOLD = POLICY.safety.max_hold_s


# --- ladder_hash ------------------------------------------------------------------------------------


def test_ladder_hash_is_sha256_of_the_canonical_text() -> None:
    # Written out by hand: the same text in every process and every version, or records written
    # before an upgrade would all look as if their ladder changed.
    text = (
        '[{"action":"repair","command":"systemctl restart kubelet","timeout":300.0,"window":null},'
        '{"action":"reboot","command":null,"timeout":900.0,"window":{"days":[0,5],"end":240,'
        '"overnight":false,"start":60,"strict":false,"timezone":"Europe/Paris"}},'
        '{"action":"notify","command":null,"timeout":null,"window":null}]'
    )
    assert ladder_hash(PETS) == hashlib.sha256(text.encode()).hexdigest()


def test_ladder_hash_ignores_how_days_were_written() -> None:
    other = replace(PETS[1], window=Window(frozenset({0, 5}), 60, 240, "Europe/Paris"))
    assert ladder_hash((PETS[0], other, PETS[2])) == ladder_hash(PETS)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param((replace(PETS[0], action=Action.REBOOT), *PETS[1:]), id="action"),
        pytest.param((replace(PETS[0], timeout_s=301.0), *PETS[1:]), id="timeout"),
        pytest.param((replace(PETS[0], command="reboot"), *PETS[1:]), id="command"),
        pytest.param((PETS[0], replace(PETS[1], window=None), PETS[2]), id="window-removed"),
        pytest.param(
            (PETS[0], replace(PETS[1], window=replace(PETS[1].window, strict=True)), PETS[2]),  # type: ignore[type-var]
            id="window-strict",
        ),
        pytest.param((PETS[1], PETS[0], PETS[2]), id="order"),
        pytest.param(PETS[:2], id="step-removed"),
        pytest.param((*PETS, Step(Action.NOTIFY)), id="step-added"),
    ],
)
def test_any_change_to_a_ladder_changes_its_hash(changed: tuple[Step, ...]) -> None:
    assert ladder_hash(changed) != ladder_hash(PETS)


# --- operation_instance -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "instance"),
    [
        pytest.param(json.dumps({"id": "x", "instance_id": "i-1"}), "i-1", id="stored"),
        pytest.param("not json", None, id="not-json"),
        pytest.param("[1, 2]", None, id="not-an-object"),
        pytest.param(json.dumps({"id": "x"}), None, id="no-instance"),
        pytest.param(json.dumps({"instance_id": 7}), None, id="instance-not-a-string"),
        pytest.param(json.dumps({"instance_id": ""}), None, id="instance-empty"),
    ],
)
def test_operation_instance(text: str, instance: str | None) -> None:
    assert operation_instance(text) == instance


# --- check_record -----------------------------------------------------------------------------------


def op(instance: str) -> str:
    return json.dumps({"id": "cmd-1", "kind": "repair", "instance_id": instance, "provider": "aws"})


REPAIR = record("p", cls="pets", action=Action.REPAIR, phase=Phase.ACTING, deadline=NOW - 120 + 300)
REBOOT = replace(REPAIR, step=1, action=Action.REBOOT, step_started=NOW - 60, deadline=NOW - 60 + 900)


@pytest.mark.parametrize(
    ("rec", "history", "why"),
    [
        pytest.param(REPAIR, admitted(REPAIR), None, id="valid-first-step"),
        pytest.param(REBOOT, admitted(REBOOT), None, id="valid-escalated-step"),
        pytest.param(
            replace(REPAIR, instance_id="i-p", operation_id=op("i-p")),
            admitted(REPAIR),
            None,
            id="valid-with-operation",
        ),
        pytest.param(
            replace(REPAIR, ladder_hash=ladder_hash(PETS)), admitted(REPAIR), None, id="hash-matches"
        ),
        pytest.param(
            replace(REPAIR, phase=Phase.NEEDS_HUMAN, action=Action.NOTIFY, deadline=None),
            History(),
            None,
            id="parked-records-drive-nothing",
        ),
        pytest.param(
            replace(REPAIR, cls="gone"), admitted(REPAIR), "class gone is not configured", id="no-class"
        ),
        pytest.param(
            replace(REPAIR, action=Action.REPLACE),
            admitted(replace(REPAIR, action=Action.REPLACE)),
            "not step 1 of class pets",
            id="action-not-the-ladders",
        ),
        pytest.param(
            replace(REPAIR, step=5),
            admitted(replace(REPAIR, step=5)),
            "past the end",
            id="step-past-the-ladder",
        ),
        pytest.param(replace(REPAIR, step=-1), admitted(REPAIR), "does not exist", id="negative-step"),
        pytest.param(
            replace(REPAIR, action=Action.NOTIFY),
            History(),
            "not a remediation",
            id="notify-in-flight",
        ),
        pytest.param(
            replace(REPAIR, deadline=NOW + 10 * 365 * 86400),
            admitted(REPAIR),
            "deadline",
            id="ten-year-deadline",
        ),
        pytest.param(
            replace(REPAIR, deadline=REPAIR.step_started + 300 + HOLD + DEADLINE_SLACK_S),
            admitted(REPAIR),
            None,
            id="deadline-moved-out-by-a-full-hold",
        ),
        pytest.param(
            replace(REPAIR, deadline=REPAIR.step_started + 300 + HOLD + DEADLINE_SLACK_S + 1),
            admitted(REPAIR),
            "deadline",
            id="deadline-past-the-bound",
        ),
        pytest.param(replace(REPAIR, deadline=None), admitted(REPAIR), "no deadline", id="no-deadline"),
        pytest.param(
            replace(REPAIR, started=NOW + 3600, step_started=NOW + 3600, deadline=NOW + 3900),
            admitted(replace(REPAIR, step_started=NOW + 3600)),
            "in the future",
            id="starts-in-the-future",
        ),
        pytest.param(
            replace(REPAIR, started=NOW + CLOCK_SKEW_S, step_started=NOW + CLOCK_SKEW_S, deadline=NOW + 300),
            admitted(replace(REPAIR, step_started=NOW + CLOCK_SKEW_S)),
            None,
            id="clock-skew-tolerated",
        ),
        pytest.param(
            replace(REBOOT, started=REBOOT.step_started + 1),
            admitted(REBOOT),
            "after its current step",
            id="started-after-step",
        ),
        pytest.param(
            replace(REPAIR, instance_id="i-p", operation_id=op("i-other")),
            admitted(REPAIR),
            "not on the record's instance",
            id="operation-of-another-instance",
        ),
        pytest.param(
            replace(REPAIR, operation_id=op("i-p")),
            admitted(REPAIR),
            "names no instance",
            id="operation-without-instance",
        ),
        pytest.param(
            replace(REPAIR, instance_id="i-p", operation_id="{garbage"),
            admitted(REPAIR),
            "cannot be read",
            id="operation-unreadable",
        ),
        pytest.param(REPAIR, History(), "no history entry", id="no-history"),
        pytest.param(
            REPAIR,
            History((HistoryEvent(REPAIR.step_started, Action.REPAIR, "other", attempt_start=True),)),
            "no history entry",
            id="history-of-another-node",
        ),
        pytest.param(
            REPAIR,
            History((HistoryEvent(REPAIR.step_started, Action.REBOOT, "p", attempt_start=True),)),
            "no history entry",
            id="history-of-another-action",
        ),
        pytest.param(
            REPAIR,
            History((HistoryEvent(REPAIR.step_started - HISTORY_SLACK_S - 1, Action.REPAIR, "p", True),)),
            "no history entry",
            id="history-too-early",
        ),
        pytest.param(
            REPAIR,
            History((HistoryEvent(REPAIR.step_started + HISTORY_SLACK_S, Action.REPAIR, "p", True),)),
            None,
            id="history-within-slack",
        ),
        pytest.param(
            REPAIR,
            History((HistoryEvent(REPAIR.step_started, Action.REPAIR, "p", attempt_start=False),)),
            "no history entry",
            id="first-step-needs-an-attempt-start",
        ),
    ],
)
def test_check_record(rec: Record, history: History, why: str | None) -> None:
    got = check_record(rec, POLICY, history, NOW)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got, got


def test_changed_ladder_cannot_check_the_step_but_still_bounds_the_deadline() -> None:
    moved = replace(REPAIR, ladder_hash="0" * 64, action=Action.REBOOT)
    history = admitted(moved)
    assert check_record(moved, POLICY, history, NOW) is None  # the old ladder's step is unknown
    # The longest timeout of the current ladder (reboot, 15m) bounds it.
    bound = moved.step_started + 900 + HOLD + DEADLINE_SLACK_S
    assert check_record(replace(moved, deadline=bound), POLICY, history, NOW) is None
    assert "deadline" in (check_record(replace(moved, deadline=bound + 1), POLICY, history, NOW) or "")
    assert "not a remediation" in (
        check_record(replace(moved, action=Action.NOTIFY), POLICY, history, NOW) or ""
    )
