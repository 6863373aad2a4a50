"""resume(): what to do about a step's destructive call after a crash, a lost response or a
takeover. Exhaustive over the inputs against an oracle written from the rules, plus named rows
for the cases that went wrong in practice."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from noderescue.core.model import Action, Phase, Record
from noderescue.core.resume import (
    CALLS,
    MachineState,
    Observed,
    OpOutcome,
    ResumeKind,
    on_load,
    resume,
    step_calls,
)
from tests.core.factories import NOW, record

K = ResumeKind
DEADLINE = NOW + 300.0
GOING_OR_GONE = (MachineState.GOING, MachineState.GONE)


def stored_op(kind: str, instance: str = "i-1") -> str:
    """As the cloud adapter stores an accepted call (Operation.to_str)."""
    return json.dumps(
        {"id": "op-1", "instance_id": instance, "kind": kind, "provider": "aws", "started": NOW, "token": ""},
        separators=(",", ":"),
        sort_keys=True,
    )


def rec_of(
    action: Action,
    phase: Phase,
    *,
    calls: tuple[str, ...] = (),
    operation_id: str | None = None,
    instance_id: str | None = "i-1",
) -> Record:
    return record(
        "n1",
        action=action,
        phase=phase,
        started=NOW - 600,
        deadline=DEADLINE,
        boot_id_before="b1",
        instance_id=instance_id,
        operation_id=operation_id,
        calls=calls,
    )


# --- the oracle -----------------------------------------------------------------------------------

# How the recorded operation relates to the call being judged.
OP_NONE = "none"  # no operation id recorded
OP_THIS = "this"  # an operation of this call, on the record's instance
OP_SIBLING = "sibling"  # an operation of the step's other call (replace <-> capacity)
OP_FOREIGN = "foreign"  # an operation of a kind this step never makes
OP_OTHER_INSTANCE = "other-instance"
OP_UNREADABLE = "unreadable"


def op_cases(action: Action) -> tuple[str, ...]:
    base = (OP_NONE, OP_THIS, OP_FOREIGN, OP_OTHER_INSTANCE, OP_UNREADABLE)
    return (*base, OP_SIBLING) if action is Action.REPLACE else base


def op_text(case: str, action: Action, call: str) -> str | None:
    foreign = "reboot" if action is Action.REPLACE else "replace"
    sibling = "capacity" if call == "replace" else "replace"
    return {
        OP_NONE: None,
        OP_THIS: stored_op(call),
        OP_SIBLING: stored_op(sibling),
        OP_FOREIGN: stored_op(foreign),
        OP_OTHER_INSTANCE: stored_op(call, "i-2"),
        OP_UNREADABLE: "{not json",
    }[case]


def oracle(
    phase: Phase,
    call: str,
    op: str,
    intent: bool,
    machine: MachineState | None,
    boot_changed: bool,
    present: bool,
    healthy: bool,
    outcome: OpOutcome | None,
    late: bool,
) -> ResumeKind:
    """The rules, written out once more, independently of the implementation."""
    # Contradictions first: nothing is sent or polled on a record that contradicts itself.
    if phase == Phase.NEEDS_HUMAN or op in (OP_UNREADABLE, OP_OTHER_INSTANCE, OP_FOREIGN):
        return K.PARK
    # The record's own word about the step.
    if phase == Phase.FAILED:
        return K.FAIL
    if phase == Phase.VERIFYING:
        return K.VERIFY
    # The capacity change follows the replace: its operation proves the replace was made.
    if op == OP_SIBLING and call == "replace":
        return K.VERIFY
    # Visible effect of the call.
    effect = {
        "replace": machine in GOING_OR_GONE or (present and boot_changed),
        "reboot": present and boot_changed,
        "repair": present and healthy,
        "capacity": outcome == OpOutcome.SUCCEEDED,
    }[call]
    if effect:
        return K.VERIFY
    if op == OP_THIS:
        if outcome == OpOutcome.SUCCEEDED:
            return K.VERIFY
        if outcome == OpOutcome.FAILED:
            return K.FAIL
        return K.FAIL if late else K.POLL
    if late:
        return K.FAIL
    return K.WAIT if intent else K.SEND


ACTION_CALLS = (
    (Action.REPAIR, "repair"),
    (Action.REBOOT, "reboot"),
    (Action.REPLACE, "replace"),
    (Action.REPLACE, "capacity"),
)
MACHINES = (None, *MachineState)
OUTCOMES = (None, *OpOutcome)
B = (False, True)


def test_exhaustively_against_the_oracle() -> None:
    mismatches: list[str] = []
    seen_kinds: set[ResumeKind] = set()
    rows = 0
    for phase, (action, call) in itertools.product(Phase, ACTION_CALLS):
        for op, intent in itertools.product(op_cases(action), B):
            rec = rec_of(
                action,
                phase,
                calls=(call,) if intent else (),
                operation_id=op_text(op, action, call),
            )
            for machine, boot_changed, present, healthy, outcome, late in itertools.product(
                MACHINES, B, B, B, OUTCOMES, B
            ):
                seen = Observed(
                    node_present=present,
                    boot_id="b2" if boot_changed else "b1",
                    healthy=healthy,
                    machine=machine,
                    operation=outcome,
                )
                now = DEADLINE + 1 if late else NOW
                got = resume(rec, call, seen, now)
                want = oracle(phase, call, op, intent, machine, boot_changed, present, healthy, outcome, late)
                rows += 1
                seen_kinds.add(got.kind)
                if got.kind is not want:
                    mismatches.append(
                        f"{phase} {call} op={op} intent={intent} machine={machine} "
                        f"boot_changed={boot_changed} present={present} healthy={healthy} "
                        f"outcome={outcome} late={late}: "
                        f"got {got.kind} ({got.reason}), want {want}"
                    )
                assert got.reason  # every answer says why
    assert not mismatches, f"{len(mismatches)} of {rows}:\n" + "\n".join(mismatches[:20])
    assert seen_kinds == set(ResumeKind)
    assert rows > 40_000


# --- named rows -------------------------------------------------------------------------------------

PRESENT = Observed(node_present=True, boot_id="b1", machine=MachineState.RUNNING)


@pytest.mark.parametrize(
    ("rec", "call", "seen", "now", "kind"),
    [
        pytest.param(
            rec_of(Action.REBOOT, Phase.ACTING, calls=("reboot",)),
            "reboot",
            PRESENT,
            NOW,
            K.WAIT,
            id="reboot-sent-before-crash-not-back-yet-is-not-sent-again",
        ),
        pytest.param(
            rec_of(Action.REBOOT, Phase.ACTING, calls=("reboot",)),
            "reboot",
            replace(PRESENT, boot_id="b2"),
            NOW,
            K.VERIFY,
            id="reboot-sent-before-crash-boot-id-changed",
        ),
        pytest.param(
            rec_of(Action.REBOOT, Phase.ACTING, calls=("reboot",)),
            "reboot",
            PRESENT,
            DEADLINE,
            K.FAIL,
            id="reboot-never-proven-by-the-deadline-fails-the-step",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",)),
            "replace",
            PRESENT,
            NOW,
            K.WAIT,
            id="azure-reimage-sent-before-crash-vm-reports-running",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",)),
            "replace",
            replace(PRESENT, boot_id="b2"),
            NOW,
            K.VERIFY,
            id="azure-reimage-done-boot-id-changed",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",)),
            "replace",
            Observed(node_present=False, machine=MachineState.GONE),
            NOW,
            K.VERIFY,
            id="terminate-sent-before-crash-instance-gone",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",)),
            "replace",
            Observed(node_present=False),
            NOW,
            K.WAIT,
            id="node-object-gone-is-no-proof-without-the-machine",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING),
            "replace",
            PRESENT,
            NOW,
            K.SEND,
            id="intent-never-recorded-call-never-sent",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.DRAINING),
            "replace",
            replace(PRESENT, machine=MachineState.GOING),
            NOW,
            K.VERIFY,
            id="instance-already-terminating-by-someone-else-is-not-terminated-again",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",), operation_id=stored_op("replace")),
            "replace",
            PRESENT,
            NOW,
            K.POLL,
            id="operation-recorded-is-polled",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",), operation_id=stored_op("replace")),
            "replace",
            replace(PRESENT, operation=OpOutcome.FAILED),
            NOW,
            K.FAIL,
            id="operation-failed-fails-the-step",
        ),
        pytest.param(
            rec_of(
                Action.REPLACE, Phase.ACTING, calls=("replace",), operation_id=stored_op("replace", "i-9")
            ),
            "replace",
            PRESENT,
            NOW,
            K.PARK,
            id="operation-of-another-instance-parks",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, operation_id=stored_op("replace"), instance_id=None),
            "replace",
            PRESENT,
            NOW,
            K.PARK,
            id="operation-without-a-recorded-instance-parks",
        ),
        pytest.param(
            rec_of(Action.REPAIR, Phase.ACTING, calls=("repair",), operation_id="garbage"),
            "repair",
            PRESENT,
            NOW,
            K.PARK,
            id="unreadable-operation-parks",
        ),
        pytest.param(
            rec_of(Action.REPAIR, Phase.ACTING, calls=("repair",)),
            "repair",
            PRESENT,
            NOW,
            K.WAIT,
            id="run-command-may-have-run-nothing-proves-it",
        ),
        pytest.param(
            rec_of(Action.REPAIR, Phase.ACTING, calls=("repair",)),
            "repair",
            replace(PRESENT, healthy=True),
            NOW,
            K.VERIFY,
            id="run-command-node-healthy-again",
        ),
        pytest.param(
            rec_of(Action.REPAIR, Phase.ACTING, calls=("repair",)),
            "repair",
            Observed(node_present=False, healthy=True),
            NOW,
            K.WAIT,
            id="health-of-an-absent-node-proves-nothing",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.ACTING, calls=("replace",), operation_id=stored_op("replace")),
            "capacity",
            Observed(node_present=False, machine=MachineState.GONE),
            NOW,
            K.SEND,
            id="capacity-after-delete-not-yet-sent",
        ),
        pytest.param(
            rec_of(
                Action.REPLACE, Phase.ACTING, calls=("replace", "capacity"), operation_id=stored_op("replace")
            ),
            "capacity",
            Observed(node_present=False, machine=MachineState.GONE),
            NOW,
            K.WAIT,
            id="capacity-sent-before-crash-not-proven",
        ),
        pytest.param(
            rec_of(
                Action.REPLACE, Phase.ACTING, calls=("replace", "capacity"), operation_id=stored_op("replace")
            ),
            "capacity",
            Observed(node_present=False, operation=OpOutcome.SUCCEEDED),
            NOW,
            K.VERIFY,
            id="capacity-at-target",
        ),
        pytest.param(
            rec_of(
                Action.REPLACE,
                Phase.ACTING,
                calls=("replace", "capacity"),
                operation_id=stored_op("capacity"),
            ),
            "replace",
            Observed(node_present=False),
            NOW,
            K.VERIFY,
            id="capacity-operation-proves-the-delete",
        ),
        pytest.param(
            rec_of(Action.REPLACE, Phase.NEEDS_HUMAN),
            "replace",
            PRESENT,
            NOW,
            K.PARK,
            id="parked-record",
        ),
    ],
)
def test_named_rows(rec: Record, call: str, seen: Observed, now: float, kind: ResumeKind) -> None:
    assert resume(rec, call, seen, now).kind is kind


def test_deadline_none_never_fails_by_time() -> None:
    rec = replace(rec_of(Action.REBOOT, Phase.ACTING, calls=("reboot",)), deadline=None)
    assert resume(rec, "reboot", PRESENT, NOW + 10**9).kind is K.WAIT


@pytest.mark.parametrize(
    ("action", "call"),
    [
        pytest.param(Action.REPAIR, "reboot", id="repair-step-reboot"),
        pytest.param(Action.REBOOT, "capacity", id="reboot-step-capacity"),
        pytest.param(Action.NOTIFY, "repair", id="notify-step"),
        pytest.param(Action.REPLACE, "terminate", id="unknown-call"),
    ],
)
def test_a_call_the_step_does_not_make_is_a_bug(action: Action, call: str) -> None:
    with pytest.raises(ValueError, match="makes no"):
        resume(rec_of(action, Phase.ACTING), call, PRESENT, NOW)


@pytest.mark.parametrize(
    ("action", "calls"),
    [
        pytest.param(Action.REPAIR, ("repair",), id="repair"),
        pytest.param(Action.REBOOT, ("reboot",), id="reboot"),
        pytest.param(Action.REPLACE, ("replace", "capacity"), id="replace"),
        pytest.param(Action.NOTIFY, (), id="notify"),
    ],
)
def test_step_calls(action: Action, calls: tuple[str, ...]) -> None:
    assert step_calls(action) == calls
    assert set(calls) <= set(CALLS)


# --- on_load ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "intents", "judged"),
    [
        pytest.param(Action.REPAIR, (), "repair", id="repair-nothing-sent"),
        pytest.param(Action.REBOOT, ("reboot",), "reboot", id="reboot-sent"),
        pytest.param(Action.REPLACE, (), "replace", id="replace-nothing-sent"),
        pytest.param(Action.REPLACE, ("replace",), "replace", id="replace-sent"),
        pytest.param(Action.REPLACE, ("replace", "capacity"), "capacity", id="capacity-sent"),
    ],
)
def test_on_load_judges_the_latest_call_of_the_step(
    action: Action, intents: tuple[str, ...], judged: str
) -> None:
    for phase, machine, boot, late in itertools.product(
        (Phase.STARTED, Phase.DRAINING, Phase.ACTING), MACHINES, ("b1", "b2"), B
    ):
        rec = rec_of(action, phase, calls=intents)
        seen = Observed(node_present=True, boot_id=boot, machine=machine)
        now = DEADLINE if late else NOW
        assert on_load(rec, seen, now) == resume(rec, judged, seen, now)


@pytest.mark.parametrize(
    "rec",
    [
        pytest.param(rec_of(Action.NOTIFY, Phase.STARTED), id="notify"),
        pytest.param(rec_of(Action.REPLACE, Phase.NEEDS_HUMAN), id="parked"),
    ],
)
def test_on_load_parks_what_has_nothing_to_resume(rec: Record) -> None:
    assert on_load(rec, PRESENT, NOW).kind is K.PARK


def test_on_load_from_an_early_phase_sends_nothing_twice() -> None:
    # Crashed mid-drain: no intent recorded, so the call was never sent: resume the step.
    assert on_load(rec_of(Action.REPLACE, Phase.DRAINING), PRESENT, NOW).kind is K.SEND
