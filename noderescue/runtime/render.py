"""What ``noderescue plan`` and ``status`` print: aligned tables for people, JSON for machines.

Pure functions of the plans (no I/O, no clock: times are shown relative to when the cluster was
read). The JSON documents are a stable interface (``apiVersion: noderescue.io/v1``): every key is
always present (null when it has no value), times are RFC 3339 UTC strings, lists are sorted.
The tables never need a table library: columns are padded to their widest cell, and plainly
healthy nodes are summarised per class (a 10,000-node cluster is 10,000 lines only in JSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from noderescue.core.durations import format_duration
from noderescue.core.model import (
    Action,
    Blocked,
    Decision,
    DecisionKind,
    HealthState,
    History,
    NodeReport,
    Pause,
    Phase,
    Plan,
    Policy,
    Record,
)

API_VERSION = "noderescue.io/v1"
OutputFormat = Literal["table", "json"]
UNMATCHED = "-"  # the class column of nodes no class selects
GONE = "gone"  # the health of a node whose object disappeared while a record names it


@dataclass(frozen=True, slots=True)
class ReadInfo:
    """What was read from a cluster besides the nodes the plan covers."""

    read_at: float
    nodes: int
    pause: Pause | None
    records: Mapping[str, Record] = field(default_factory=dict)
    history: History = field(default_factory=History)
    skipped: tuple[tuple[str, str, str], ...] = ()  # (kind, name, why) of unreadable objects


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """One cluster's pass: the plan and what it was made from, or why there is none."""

    cluster: str
    read: ReadInfo | None = None
    plan: Plan | None = None
    policy: Policy | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NodeLine:
    """One node as ``plan`` shows it: health, what would happen now and why."""

    node: str
    cls: str | None
    health: str  # HealthState value, or "gone"
    reasons: tuple[str, ...]
    pending_until: float | None
    decision: DecisionKind | None
    action: Action | None
    step: int | None
    blocked: Blocked | None
    why: str
    record: Record | None

    @property
    def rank(self) -> int:
        """Table order: actions, then blocked (gated or parked), then pending, then the rest."""
        if self.decision is not None and self.decision is not DecisionKind.SKIP:
            return 0
        if self.decision is DecisionKind.SKIP or (
            self.record is not None and self.record.phase is Phase.NEEDS_HUMAN
        ):
            return 1
        if self.health == HealthState.PENDING:
            return 2
        return 3


def output_format(requested: str | None, out: TextIO) -> OutputFormat:
    """``-o`` as given; by default a table on a terminal and JSON when piped."""
    if requested == "json" or (requested is None and not out.isatty()):
        return "json"
    return "table"


# ------------------------------------------------------------------------------------------------
# Building node lines from a plan
# ------------------------------------------------------------------------------------------------


def _planned_action(decision: Decision, policy: Policy | None) -> tuple[Action | None, int | None]:
    """The action a decision runs; for a skip, the one it would run were the gate open."""
    if decision.kind is not DecisionKind.SKIP:
        return decision.action, decision.step
    step = decision.record.step + 1 if decision.record is not None else 0
    for cls in policy.classes if policy is not None else ():
        if cls.name == decision.cls and step < len(cls.ladder):
            return cls.ladder[step].action, step
    return None, None


def _why(report: NodeReport | None, decision: Decision | None, now: float) -> str:
    if decision is not None and decision.blocked is not None and decision.kind is DecisionKind.SKIP:
        until = f" (can open {when_text(decision.blocked.until, now)})" if decision.blocked.until else ""
        return f"{decision.blocked.reason}{until}"
    if decision is not None and decision.reason:
        return decision.reason
    if report is None:
        return ""
    if report.health.state is HealthState.PENDING and report.health.until is not None:
        return f"a rule matches; unhealthy {when_text(report.health.until, now)} unless it recovers"
    return report.note


def node_lines(plan: Plan, policy: Policy | None, now: float, *, healthy: bool) -> list[NodeLine]:
    """Every node the plan reports on or decides about (and, with ``healthy``, the plainly
    healthy ones too), sorted by rank then name."""
    decisions = {d.node: d for d in plan.decisions}
    lines: list[NodeLine] = []
    seen: set[str] = set()
    for report in plan.reports:
        decision = decisions.get(report.node)
        lines.append(_line(report.node, report.cls, report, decision, policy, now))
        seen.add(report.node)
    for decision in plan.decisions:  # decisions about nodes whose object is gone
        if decision.node not in seen:
            lines.append(_line(decision.node, decision.cls, None, decision, policy, now))
            seen.add(decision.node)
    if healthy:
        for name, cls in plan.node_classes.items():
            if name not in seen:
                lines.append(
                    NodeLine(name, cls, HealthState.HEALTHY.value, (), None, None, None, None, None, "", None)
                )
    lines.sort(key=lambda line: (line.rank, line.node))
    return lines


def _line(
    name: str,
    cls: str | None,
    report: NodeReport | None,
    decision: Decision | None,
    policy: Policy | None,
    now: float,
) -> NodeLine:
    action, step = _planned_action(decision, policy) if decision is not None else (None, None)
    record = report.record if report is not None else decision.record if decision is not None else None
    blocked = decision.blocked if decision is not None else report.blocked if report is not None else None
    return NodeLine(
        node=name,
        cls=cls,
        health=report.health.state.value if report is not None else GONE,
        reasons=report.health.reasons if report is not None else (),
        pending_until=report.health.until
        if report is not None and report.health.state is HealthState.PENDING
        else None,
        decision=decision.kind if decision is not None else None,
        action=action,
        step=step,
        blocked=blocked,
        why=_why(report, decision, now),
        record=record,
    )


def healthy_summary(plan: Plan) -> list[tuple[str, int]]:
    """(class, plainly healthy nodes) per class, classes in name order, unmatched as ``-``."""
    reported = {r.node for r in plan.reports}
    per_class: dict[str, int] = {}
    for name, cls in plan.node_classes.items():
        if name not in reported:
            key = cls or UNMATCHED
            per_class[key] = per_class.get(key, 0) + 1
    return sorted(per_class.items())


# ------------------------------------------------------------------------------------------------
# Time and table helpers
# ------------------------------------------------------------------------------------------------


def _moment(ts: float) -> datetime | None:
    """The UTC datetime of ``ts``; None when no calendar date has it (records are annotations
    a node or a bug may have filled with 1e300, inf or nan: show that, do not crash on it)."""
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def rfc3339(ts: float | None) -> str | None:
    """RFC 3339 UTC; None for no time and for a time no calendar has."""
    moment = None if ts is None else _moment(ts)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def when_text(ts: float | None, now: float) -> str:
    """``17:05:45Z (in 45s)``; the date too when it is another day than ``now``."""
    if ts is None:
        return "-"
    moment, today = _moment(ts), _moment(now)
    if moment is None or today is None:
        return f"invalid time ({ts:.6g})"
    same_day = moment.date() == today.date()
    clock = moment.strftime("%H:%M:%SZ" if same_day else "%Y-%m-%d %H:%M:%SZ")
    delta = round(ts - now)
    relative = (
        "now"
        if delta == 0
        else f"in {format_duration(delta)}"
        if delta > 0
        else f"{format_duration(-delta)} ago"
    )
    return f"{clock} ({relative})"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns two spaces apart, padded to the widest cell; no trailing spaces."""
    body = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = []
    for row in [list(headers), *body]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _header(cp: ClusterPlan) -> str:
    read = cp.read
    if cp.error or read is None:
        return f"cluster {cp.cluster}: unreachable: {cp.error}"
    return f"cluster {cp.cluster}: {read.nodes} nodes, read at {rfc3339(read.read_at)}"


def _pause_line(pause: Pause | None, now: float) -> str:
    if pause is None:
        return "pause: not paused"
    since = f" since {when_text(pause.since, now)}" if pause.since is not None else ""
    return f"pause: PAUSED{since}: {pause.reason or 'no reason given'}"


def _tripped_lines(plan: Plan, now: float) -> list[str]:
    if not plan.tripped:
        return ["gates tripped: none"]
    rows = [
        (
            scope,
            blocked.gate.value,
            blocked.reason + (f" (until {when_text(blocked.until, now)})" if blocked.until else ""),
        )
        for scope, blocked in plan.tripped
    ]
    return ["gates tripped:", *format_table(("SCOPE", "GATE", "REASON"), rows, indent="  ")]


# ------------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------------


def plan_table(cp: ClusterPlan) -> list[str]:
    lines = [_header(cp)]
    if cp.plan is None or cp.read is None:
        return lines
    plan, now = cp.plan, cp.read.read_at
    wake = when_text(plan.next_wakeup, now) if plan.next_wakeup is not None else "none (waits for a change)"
    lines.append(f"next wake-up: {wake}")
    if cp.read.pause is not None:
        lines.append(_pause_line(cp.read.pause, now))
    lines += _tripped_lines(plan, now)
    rows = [
        (
            line.node,
            _dash(line.cls),
            line.health,
            _dash(line.decision and line.decision.value),
            _dash(line.action and line.action.value),
            _dash(line.blocked and line.blocked.gate.value),
            _table_why(line),
        )
        for line in node_lines(plan, cp.policy, now, healthy=False)
    ]
    lines.append("")
    if rows:
        lines += format_table(("NODE", "CLASS", "HEALTH", "DECISION", "ACTION", "GATE", "WHY"), rows)
    else:
        lines.append("every node is healthy; nothing to do")
    summary = healthy_summary(plan)
    if summary:
        total = sum(n for _, n in summary)
        per_class = ", ".join(f"{cls} {n}" for cls, n in summary)
        lines.append(f"healthy: {total} ({per_class})")
    for kind, name, why in cp.read.skipped:
        lines.append(f"unreadable {kind} {name}: {why}")
    return lines


def _table_why(line: NodeLine) -> str:
    """The WHY cell: for a held-back node both what is wrong with it and what holds it."""
    reasons = "; ".join(line.reasons)
    if line.decision is DecisionKind.SKIP and reasons:
        return f"{line.why} (node: {reasons})"
    return line.why or reasons or "-"


def plans_table(plans: Sequence[ClusterPlan]) -> str:
    blocks = ["\n".join(plan_table(cp)) for cp in plans]
    return "\n\n".join(blocks) + "\n"


def _blocked_json(blocked: Blocked | None) -> dict[str, Any] | None:
    if blocked is None:
        return None
    return {"gate": blocked.gate.value, "reason": blocked.reason, "until": rfc3339(blocked.until)}


def record_json(record: Record | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "node": record.node,
        "class": record.cls,
        "action": record.action.value,
        "step": record.step,
        "phase": record.phase.value,
        "attempt": record.attempt,
        "started": rfc3339(record.started),
        "stepStarted": rfc3339(record.step_started),
        "deadline": rfc3339(record.deadline),
        "reason": record.reason,
        "instanceID": record.instance_id,
        "operationID": record.operation_id,
        "cordonedByUs": record.cordoned_by_us,
    }


def _node_json(line: NodeLine) -> dict[str, Any]:
    return {
        "name": line.node,
        "class": line.cls,
        "health": line.health,
        "reasons": list(line.reasons),
        "pendingUntil": rfc3339(line.pending_until),
        "decision": line.decision.value if line.decision else None,
        "action": line.action.value if line.action else None,
        "step": line.step,
        "blocked": _blocked_json(line.blocked),
        "why": line.why,
        "record": record_json(line.record),
    }


def _decision_json(decision: Decision, policy: Policy | None) -> dict[str, Any]:
    action, step = _planned_action(decision, policy)  # for a skip: the action held back
    return {
        "node": decision.node,
        "class": decision.cls,
        "kind": decision.kind.value,
        "action": action.value if action else None,
        "step": step,
        "reason": decision.reason,
        "blocked": _blocked_json(decision.blocked),
        "result": decision.result,
    }


def _tripped_json(plan: Plan) -> list[dict[str, Any]]:
    return [{"scope": scope, **(_blocked_json(blocked) or {})} for scope, blocked in plan.tripped]


def _pause_json(pause: Pause | None) -> dict[str, Any] | None:
    return None if pause is None else {"reason": pause.reason, "since": rfc3339(pause.since)}


def _cluster_base(cp: ClusterPlan) -> dict[str, Any]:
    return {
        "name": cp.cluster,
        "reachable": cp.error is None,
        "error": cp.error,
        "readAt": rfc3339(cp.read.read_at) if cp.read else None,
        "nodeCount": cp.read.nodes if cp.read else None,
        "pause": _pause_json(cp.read.pause) if cp.read else None,
        "unreadable": [
            {"kind": kind, "name": name, "error": why}
            for kind, name, why in (cp.read.skipped if cp.read else ())
        ],
    }


def plan_json(cp: ClusterPlan) -> dict[str, Any]:
    doc = _cluster_base(cp)
    plan, read = cp.plan, cp.read
    if plan is None or read is None:
        doc.update(nextWakeup=None, counts=[], tripped=[], decisions=[], nodes=[])
        return doc
    doc.update(
        nextWakeup=rfc3339(plan.next_wakeup),
        counts=[
            {"class": cls, "health": health, "nodes": n} for (cls, health), n in sorted(plan.counts.items())
        ],
        tripped=_tripped_json(plan),
        decisions=[_decision_json(d, cp.policy) for d in sorted(plan.decisions, key=lambda d: d.node)],
        nodes=[
            _node_json(line)
            for line in sorted(node_lines(plan, cp.policy, read.read_at, healthy=True), key=lambda n: n.node)
        ],
    )
    return doc


def _document(kind: str, clusters: list[dict[str, Any]]) -> str:
    doc = {"apiVersion": API_VERSION, "kind": kind, "clusters": clusters}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def plans_json(plans: Sequence[ClusterPlan]) -> str:
    return _document("Plan", [plan_json(cp) for cp in plans])


# ------------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitUsage:
    action: Action
    used: int
    max: int
    per_s: float
    frees_at: float | None  # when the next slot opens, if the window is full


def rate_limit_usage(policy: Policy, history: History, now: float) -> list[RateLimitUsage]:
    """How much of each configured sliding window the durable history uses right now."""
    usage = []
    for limit in policy.safety.rate_limits:
        in_window = sorted(
            e.ts for e in history.events if e.action == limit.action and e.ts > now - limit.per_s
        )
        used = len(in_window)
        # A slot opens when enough of the oldest events have left the window.
        frees = in_window[used - limit.max] + limit.per_s if used >= limit.max else None
        usage.append(RateLimitUsage(limit.action, used, limit.max, limit.per_s, frees))
    return usage


def _in_flight(records: Mapping[str, Record]) -> int:
    return sum(1 for r in records.values() if r.in_flight)


def _needs_human(cp: ClusterPlan) -> list[tuple[str, str | None, str, str]]:
    """(node, class, state, reason): parked records, and nodes this pass would park."""
    assert cp.read is not None and cp.plan is not None
    out: list[tuple[str, str | None, str, str]] = [
        (r.node, r.cls, "parked", r.reason) for r in cp.read.records.values() if r.phase is Phase.NEEDS_HUMAN
    ]
    parked = {name for name, *_ in out}
    out += [
        (d.node, d.cls, "would park now", d.reason)
        for d in cp.plan.decisions
        if d.kind is DecisionKind.NEEDS_HUMAN and d.node not in parked
    ]
    return sorted(out)


def _skips(plan: Plan) -> list[Decision]:
    return sorted((d for d in plan.decisions if d.kind is DecisionKind.SKIP), key=lambda d: d.node)


def status_table(plans: Sequence[ClusterPlan]) -> str:
    blocks = ["\n".join(_status_block(cp)) for cp in plans]
    return "\n\n".join(blocks) + "\n"


def _status_block(cp: ClusterPlan) -> list[str]:
    lines = [_header(cp)]
    if cp.read is None or cp.plan is None or cp.policy is None:
        return lines
    read, plan, now = cp.read, cp.plan, cp.read.read_at
    lines.append(_pause_line(read.pause, now))
    lines.append(f"in flight: {_in_flight(read.records)} (maxConcurrent {cp.policy.safety.max_concurrent})")
    lines.append("")
    records = sorted(
        (r for r in read.records.values() if r.phase is not Phase.NEEDS_HUMAN), key=lambda r: r.node
    )
    if records:
        lines.append("remediations:")
        rows = [
            (
                r.node,
                r.cls,
                r.action.value,
                str(r.step),
                r.phase.value,
                str(r.attempt),
                when_text(r.started, now),
                when_text(r.deadline, now),
                _dash(r.operation_id),
                "yes" if r.cordoned_by_us else "no",
            )
            for r in records
        ]
        headers = (
            "NODE",
            "CLASS",
            "ACTION",
            "STEP",
            "PHASE",
            "ATTEMPT",
            "STARTED",
            "DEADLINE",
            "OPERATION",
            "CORDONED-BY-US",
        )
        lines += format_table(headers, rows, indent="  ")
    else:
        lines.append("remediations: none")
    parked = _needs_human(cp)
    if parked:
        lines.append("needs a human:")
        lines += format_table(
            ("NODE", "CLASS", "STATE", "REASON"), [(n, _dash(c), s, r) for n, c, s, r in parked], indent="  "
        )
    else:
        lines.append("needs a human: none")
    usage = rate_limit_usage(cp.policy, read.history, now)
    if usage:
        lines.append("rate limits:")
        usage_rows = [
            (
                u.action.value,
                f"{u.used}/{u.max}",
                format_duration(u.per_s),
                when_text(u.frees_at, now) if u.frees_at else "-",
            )
            for u in usage
        ]
        lines += format_table(("ACTION", "USED", "PER", "NEXT SLOT"), usage_rows, indent="  ")
    lines += _tripped_lines(plan, now)
    skips = _skips(plan)
    if skips:
        lines.append("held back by a gate:")
        skip_rows = [
            (d.node, _dash(d.cls), d.blocked.gate.value if d.blocked else "-", d.reason) for d in skips
        ]
        lines += format_table(("NODE", "CLASS", "GATE", "REASON"), skip_rows, indent="  ")
    for kind, name, why in read.skipped:
        lines.append(f"unreadable {kind} {name}: {why}")
    return lines


def status_json(plans: Sequence[ClusterPlan]) -> str:
    return _document("Status", [_status_doc(cp) for cp in plans])


def _status_doc(cp: ClusterPlan) -> dict[str, Any]:
    doc = _cluster_base(cp)
    if cp.read is None or cp.plan is None or cp.policy is None:
        doc.update(
            inFlight=None,
            maxConcurrent=None,
            remediations=[],
            needsHuman=[],
            rateLimits=[],
            tripped=[],
            blocked=[],
        )
        return doc
    read, now = cp.read, cp.read.read_at
    doc.update(
        inFlight=_in_flight(read.records),
        maxConcurrent=cp.policy.safety.max_concurrent,
        remediations=[record_json(r) for r in sorted(read.records.values(), key=lambda r: r.node)],
        needsHuman=[{"node": n, "class": c, "state": s, "reason": r} for n, c, s, r in _needs_human(cp)],
        rateLimits=[
            {
                "action": u.action.value,
                "used": u.used,
                "max": u.max,
                "per": format_duration(u.per_s),
                "nextSlotAt": rfc3339(u.frees_at),
            }
            for u in rate_limit_usage(cp.policy, read.history, now)
        ],
        tripped=_tripped_json(cp.plan),
        blocked=[
            {"node": d.node, "class": d.cls, **(_blocked_json(d.blocked) or {})} for d in _skips(cp.plan)
        ],
    )
    return doc
