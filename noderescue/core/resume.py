"""What to do about a step's destructive call, decided from the record and what can be seen now.

Every destructive call goes out at most once per step. The runtime records the call's intent
(``Record.calls``) durably *before* sending it, and the operation id once the cloud accepted it.
After a crash, a lost response or a takeover, the worker does not guess: it asks ``resume`` and
carries the answer out.

=======  ======================================================================================
kind     the executor
=======  ======================================================================================
SEND     the intent is not recorded, so the call was never sent: record the intent, then send
POLL     the operation id is recorded: poll that operation, never send again
VERIFY   the call went out (state or a finished operation proves it): go on to verification
WAIT     the intent is recorded without an operation id: the call may have gone out and nothing
         proves it yet; look again later, never send again
FAIL     the step failed (its deadline passed without proof, its operation failed, or its record
         says so): nothing more is sent, the planner escalates
PARK     the record contradicts itself (an operation of another instance or kind, an operation
         that cannot be read, a parked record): a human must look
=======  ======================================================================================

The proof that a call went out, per call:

- ``replace`` (terminate, delete, or an Azure reimage in place): the machine is going or gone,
  or the Node's boot ID changed (a reimaged VM keeps its Node and reports running, but boots a
  fresh OS disk);
- ``reboot`` (also Azure restart): the Node's boot ID changed;
- ``repair`` (run-command): no machine state proves it; only the node being healthy again does;
- ``capacity`` (a scale set's capacity set back after a delete): there is no machine to look at;
  the caller compares the group's capacity with the target it recorded and passes
  ``operation=SUCCEEDED`` when the target is reached (``PENDING`` when it is not, ``None`` when it
  was not read). When the capacity change has an operation id of its own, its poll result goes
  in the same field.

Proof by state wins over everything but a contradiction: a call whose effect is visible is not
sent (even when no intent is recorded: the instance is being terminated by someone else, the
node rebooted by itself) and is verified even after the deadline (the planner then finishes or
escalates it on what it sees).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from noderescue.core.model import Action, Phase, Record

# Names of the destructive calls a step can make (the values of ``Record.calls``).
CALLS = ("repair", "reboot", "replace", "capacity")


class MachineState(enum.StrEnum):
    """The machine behind a node as the cloud reports it, reduced to what proves a call."""

    RUNNING = "running"
    GOING = "going"  # stopping, terminating, being deleted or reimaged
    GONE = "gone"  # terminated, deleted, not found
    UNKNOWN = "unknown"  # read, but the answer says none of the above


class OpOutcome(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Observed:
    """What the caller read just now. ``node_present``: a Node with the record's UID exists
    (``boot_id`` and ``healthy`` are about that Node and ignored without it). ``machine`` is
    None when the machine was not read; ``operation`` is None when no operation was polled."""

    node_present: bool
    boot_id: str | None = None
    healthy: bool = False
    machine: MachineState | None = None
    operation: OpOutcome | None = None


class ResumeKind(enum.StrEnum):
    SEND = "send"
    POLL = "poll"
    VERIFY = "verify"
    WAIT = "wait"
    FAIL = "fail"
    PARK = "park"


@dataclass(frozen=True, slots=True)
class Resume:
    kind: ResumeKind
    reason: str


def step_calls(action: Action) -> tuple[str, ...]:
    """The destructive calls a step of ``action`` may make, in the order it makes them."""
    if action is Action.REPLACE:
        return ("replace", "capacity")
    if action in (Action.REPAIR, Action.REBOOT):
        return (str(action),)
    return ()


@dataclass(frozen=True, slots=True)
class _Op:
    kind: str
    instance: str


def _parse_operation(text: str) -> _Op | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    kind, instance = raw.get("kind"), raw.get("instance_id")
    if not isinstance(kind, str) or not isinstance(instance, str) or not instance:
        return None
    return _Op(kind, instance)


def _proof(rec: Record, call: str, seen: Observed) -> str | None:
    """Why the state proves ``call`` went out, or None."""
    rebooted = (
        seen.node_present
        and rec.boot_id_before is not None
        and seen.boot_id is not None
        and seen.boot_id != rec.boot_id_before
    )
    if call == "replace":
        if seen.machine in (MachineState.GOING, MachineState.GONE):
            return f"the machine is {seen.machine}"
        if rebooted:
            return "the boot ID changed (reimaged in place)"
    elif call == "reboot":
        if rebooted:
            return "the boot ID changed"
    elif call == "repair":
        if seen.node_present and seen.healthy:
            return "the node is healthy again"
    elif seen.operation is OpOutcome.SUCCEEDED:  # capacity
        return "the group is at its target capacity"
    return None


def resume(rec: Record, call: str, seen: Observed, now: float) -> Resume:
    """What to do about ``call`` of ``rec``'s current step (see the module's table).

    ``call`` must be one the step makes (``step_calls(rec.action)``); anything else is a bug
    of the caller and raises ``ValueError``.
    """
    if call not in step_calls(rec.action):
        raise ValueError(f"a {rec.action} step makes no {call!r} call")
    if rec.phase is Phase.NEEDS_HUMAN:
        return Resume(ResumeKind.PARK, "the record is parked for a human")

    op: _Op | None = None
    if rec.operation_id is not None:
        op = _parse_operation(rec.operation_id)
        if op is None:
            return Resume(ResumeKind.PARK, "the recorded operation cannot be read; not repeating it")
        if rec.instance_id is None or op.instance != rec.instance_id:
            return Resume(
                ResumeKind.PARK,
                f"the recorded operation is on instance {op.instance}, "
                f"not on the record's instance {rec.instance_id}",
            )
        if op.kind not in step_calls(rec.action):
            return Resume(
                ResumeKind.PARK, f"the recorded operation is a {op.kind}, not part of a {rec.action}"
            )

    if rec.phase is Phase.FAILED:
        return Resume(ResumeKind.FAIL, "the record says the step failed")
    if rec.phase is Phase.VERIFYING:
        return Resume(ResumeKind.VERIFY, "the record says the call completed")
    calls = step_calls(rec.action)
    if op is not None and calls.index(op.kind) > calls.index(call):
        return Resume(ResumeKind.VERIFY, f"the {op.kind} call that follows it was made")

    proof = _proof(rec, call, seen)
    if proof is not None:
        return Resume(ResumeKind.VERIFY, proof)

    overdue = rec.deadline is not None and now >= rec.deadline
    if op is not None and op.kind == call:
        if seen.operation is OpOutcome.SUCCEEDED:
            return Resume(ResumeKind.VERIFY, "the operation succeeded")
        if seen.operation is OpOutcome.FAILED:
            return Resume(ResumeKind.FAIL, "the operation failed")
        if overdue:
            return Resume(ResumeKind.FAIL, "the step deadline passed while the operation was not done")
        return Resume(ResumeKind.POLL, "the operation id is recorded: poll it")
    if not rec.sent(call):
        if overdue:
            return Resume(ResumeKind.FAIL, "the step deadline passed before the call was sent")
        return Resume(ResumeKind.SEND, "no intent recorded: the call was never sent")
    if overdue:
        return Resume(ResumeKind.FAIL, "the step deadline passed and nothing proves the call went out")
    return Resume(
        ResumeKind.WAIT, "the call may have gone out and nothing proves it yet: not sending it again"
    )


def on_load(rec: Record, seen: Observed, now: float) -> Resume:
    """What to do with a record found at start-up or takeover, before a worker exists.

    The same decision as ``resume`` for the step's latest call: the last call whose intent is
    recorded, else the step's first call. A ``SEND`` here means no destructive call of the step
    was ever sent: drive the step from its recorded phase (cordon, drain, then record and send).
    A record of a step without destructive calls (notify) or a parked record is ``PARK``.
    """
    calls = step_calls(rec.action)
    if not calls or not rec.in_flight:
        return Resume(ResumeKind.PARK, f"nothing to resume in a {rec.action} record ({rec.phase})")
    recorded = [c for c in calls if rec.sent(c)]
    return resume(rec, recorded[-1] if recorded else calls[0], seen, now)
