"""What a remediation record may claim: the hash of the ladder it follows, and whether a record
loaded from storage is one noderescue could have written under the current policy.

A record drives destructive calls, so it is never trusted because of where it was found: before
it holds a ``maxConcurrent`` slot or leads to any call, ``check_record`` holds it against the
policy and the history. A record that fails is parked for a human, never followed.
"""

from __future__ import annotations

import hashlib
import json
import math

from noderescue.core.durations import format_duration
from noderescue.core.model import CLOUD_ACTIONS, History, Policy, Record, Step, Window

# Clocks of two replicas (and of the API server) differ a little: a step may look as if it
# started this far in our future.
CLOCK_SKEW_S = 60.0
# Slack on top of a step's timeout when its deadline is judged (rounding, a slow write).
DEADLINE_SLACK_S = 60.0
# The runtime appends the history event of a step and writes the record with the same `now`;
# this covers a runtime that reads the clock twice.
HISTORY_SLACK_S = 60.0


def _window_text(win: Window | None) -> object:
    if win is None:
        return None
    return {
        "days": sorted(win.days),
        "start": win.start,
        "end": win.end,
        "timezone": win.timezone,
        "overnight": win.overnight,
        "strict": win.strict,
    }


def _step_text(step: Step) -> object:
    return {
        "action": str(step.action),
        "timeout": None if step.timeout_s is None else float(step.timeout_s),
        "command": step.command,
        "window": _window_text(step.window),
    }


def ladder_hash(steps: tuple[Step, ...]) -> str:
    """A stable digest of a ladder: the same steps give the same hash in every process and
    version (a canonical JSON text, sorted keys, no whitespace), any change to an action, a
    timeout, a command or a window gives another."""
    text = json.dumps([_step_text(s) for s in steps], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def operation_instance(operation_id: str) -> str | None:
    """The instance a stored operation names, or None when the text is not a stored operation.
    Only the ``instance_id`` key is read: the rest belongs to the cloud adapter."""
    try:
        raw = json.loads(operation_id)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    value = raw.get("instance_id")
    return value if isinstance(value, str) and value else None


def check_record(rec: Record, policy: Policy, history: History, now: float) -> str | None:
    """None when ``rec`` is a record noderescue could have written under ``policy``; otherwise
    why it is refused.

    Only a record that can drive work (its phase is in flight) is judged. A parked record drives
    nothing (it keeps the node out of new remediations until it is healthy or a human acts), so
    it is accepted as it is.

    With ``rec.ladder_hash`` equal to the class's current ladder hash (or empty: records written
    before ladders were hashed), the record's step must exist in the ladder with the record's
    action, and its deadline is bounded by that step's timeout. When the ladder changed under the
    record, its step cannot be looked up any more: its action must still be a cloud action and its
    deadline is bounded by the longest timeout of the current ladder (a ladder whose timeouts all
    shrank parks records made under the old one: safe).
    """
    if not rec.in_flight:
        return None
    cls = next((c for c in policy.classes if c.name == rec.cls), None)
    if cls is None:
        return f"class {rec.cls} is not configured"
    if rec.action not in CLOUD_ACTIONS:
        return f"action {rec.action} is not a remediation"
    if rec.step < 0:
        return f"step {rec.step} does not exist"

    timeout: float | None
    if not rec.ladder_hash or rec.ladder_hash == ladder_hash(cls.ladder):
        if rec.step >= len(cls.ladder):
            return f"step {rec.step + 1} is past the end of class {cls.name}'s ladder"
        step = cls.ladder[rec.step]
        if step.action is not rec.action:
            return f"action {rec.action} is not step {rec.step + 1} of class {cls.name} ({step.action})"
        timeout = step.timeout_s
    else:
        timeouts = [s.timeout_s for s in cls.ladder if s.timeout_s is not None]
        timeout = max(timeouts) if timeouts else None

    if not all(math.isfinite(t) for t in (rec.started, rec.step_started, rec.deadline or 0.0)):
        return "a time of the record is not a finite number"
    if rec.step_started > now + CLOCK_SKEW_S:
        return f"step starts {format_duration(int(rec.step_started - now))} in the future"
    if rec.started > rec.step_started:
        return "remediation starts after its current step"
    if timeout is not None:
        if rec.deadline is None:
            return "no deadline for a step with a timeout"
        bound = rec.step_started + timeout + policy.safety.max_hold_s + DEADLINE_SLACK_S
        if rec.deadline > bound:
            return (
                f"deadline is {format_duration(int(rec.deadline - rec.step_started))} after the step "
                f"started; the step's timeout is {format_duration(timeout)}"
            )

    if rec.operation_id is not None:
        instance = operation_instance(rec.operation_id)
        if instance is None:
            return "operation cannot be read"
        if rec.instance_id is None:
            return f"operation on instance {instance} but the record names no instance"
        if instance != rec.instance_id:
            return f"operation on instance {instance}, not on the record's instance {rec.instance_id}"

    if not _admitted(rec, history):
        return f"no history entry admits {rec.action} of {rec.node} at the step's start"
    return None


def _admitted(rec: Record, history: History) -> bool:
    """A history event for this node and action at the step's start: the runtime appends one
    before it writes the record of a new step (an attempt start for the first step)."""
    first = rec.step == 0
    return any(
        e.node == rec.node
        and e.action is rec.action
        and abs(e.ts - rec.step_started) <= HISTORY_SLACK_S
        and (e.attempt_start or not first)
        for e in history.events
    )
