"""One pass of the engine: snapshot + records + history + policy + now -> decisions + next wake-up.

Pure and deterministic: the same inputs give the same plan. The pass runs in three stages:

1. check every in-flight record against the policy and the history (a record that could not
   have been written by noderescue under this policy is parked and holds nothing); classify every
   node (first matching class, health) and tally the scopes the gates count;
2. decide for nodes that have a record (continue, hold, escalate, finish, park) — they hold
   budget already;
3. admit new remediations for unhealthy nodes without a record, in name order, through the
   gates; each admitted start updates the tally so later candidates see it.

Work in flight is re-judged every pass: when a scope gate (stale view, pause, short-circuit of its
class or the cluster, its zone) trips after a remediation was admitted, the remediation is held
(``HOLD``) instead of continued. A remediation counts once in the tallies, exactly as it did
when it was admitted, so it never trips its own gate: a scope that was within ``maxUnhealthy``
with it stays within.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from noderescue.core import gates
from noderescue.core.classes import ClassIndex
from noderescue.core.health import CompiledRules, classify
from noderescue.core.model import (
    CLOUD_ACTIONS,
    HEALTHY,
    IN_FLIGHT_PHASES,
    Action,
    Blocked,
    Decision,
    DecisionKind,
    FinishResult,
    Gate,
    Health,
    HealthState,
    History,
    NodeClass,
    NodeReport,
    NodeView,
    Phase,
    Plan,
    Policy,
    Record,
    Snapshot,
)
from noderescue.core.records import check_record, ladder_hash

UNMATCHED = "-"  # class label for nodes no class selects


@dataclass(slots=True)
class _Entry:
    node: NodeView
    cls: NodeClass | None
    health: Health
    record: Record | None


class _Pass:
    """The mutable working state of one ``plan`` call (never escapes it)."""

    def __init__(self, snapshot: Snapshot, history: History, policy: Policy, now: float) -> None:
        self.snapshot = snapshot
        self.history = history
        self.policy = policy
        self.safety = policy.safety
        self.now = now
        self.classes = {c.name: c for c in policy.classes}
        self.tally = gates.Tally()
        self.decisions: list[Decision] = []
        self.reports: list[NodeReport] = []
        self.next_wakeup: float | None = None
        # The view turning stale is the watch cache's news to deliver (it knows when it last
        # heard from the API server), not a wake-up of the plan.
        self.stale = gates.stale_view(snapshot, policy.safety, now)
        # Node name -> why its in-flight record is refused (see ``check_record``).
        self.refused: dict[str, str] = {}
        self.hashes = {c.name: ladder_hash(c.ladder) for c in policy.classes}

    # -- helpers ------------------------------------------------------------------------------

    def wake_at(self, when: float | None) -> None:
        if when is not None and when > self.now and (self.next_wakeup is None or when < self.next_wakeup):
            self.next_wakeup = when

    def decide(self, decision: Decision, entry: _Entry | None, note: str = "") -> None:
        self.decisions.append(decision)
        if entry is not None:
            self.report(entry, decision.kind, decision.blocked, note or decision.reason)

    def report(
        self, entry: _Entry, kind: DecisionKind | None, blocked: Blocked | None = None, note: str = ""
    ) -> None:
        self.reports.append(
            NodeReport(
                node=entry.node.name,
                cls=entry.cls.name if entry.cls else None,
                health=entry.health,
                decision=kind,
                blocked=blocked,
                record=entry.record,
                note=note,
            )
        )

    def skip(self, entry: _Entry, blocked: Blocked, record: Record | None = None) -> None:
        self.wake_at(blocked.until)
        assert entry.cls is not None
        self.decide(
            Decision(
                DecisionKind.SKIP,
                entry.node.name,
                entry.cls.name,
                blocked=blocked,
                reason=blocked.reason,
                record=record,
            ),
            entry,
        )

    # -- gates shared by starts and escalations ------------------------------------------------

    def scope_gates(self, entry: _Entry, cls: NodeClass) -> Blocked | None:
        return (
            self.stale
            or gates.pause(self.snapshot.pause, entry.node)
            or gates.short_circuit(self.tally, cls.name, self.safety)
            or gates.zone(self.tally, entry.node.zone, self.safety)
        )

    def admit(self, action: Action) -> None:
        """Count an admitted start so later candidates in this pass see it."""
        if action in CLOUD_ACTIONS:
            self.tally.started[action] = self.tally.started.get(action, 0) + 1


def _tally(p: _Pass, entry: _Entry) -> None:
    """Count one node into the scopes the gates read."""
    tally = p.tally
    rec = entry.record
    if rec is not None and (rec.node_uid != entry.node.uid or entry.node.name in p.refused):
        # A record of an earlier node with this name (dropped this pass) or one refused (parked
        # this pass): neither holds a slot nor counts the node as remediated.
        rec = None
    in_flight = rec is not None and rec.in_flight
    if in_flight:
        # Counted even when the node left its class or got excluded: until the record is
        # closed a worker may still be acting on it.
        tally.in_flight += 1
    cls = entry.cls
    if cls is None:
        return
    node = entry.node
    # Pending (a rule matches, its `for` runs; or inside the startup timeout) and not-Ready nodes
    # count as unhealthy, as Cluster API counts them: they are not remediated, but a scope full
    # of them is not healthy enough to take nodes out of.
    unhealthy = entry.health.state is not HealthState.HEALTHY or not node.ready or rec is not None
    scope = tally.classes[cls.name]
    scope.total += 1
    tally.cluster.total += 1
    if unhealthy:
        scope.unhealthy += 1
        tally.cluster.unhealthy += 1
    zone_name = node.zone
    if zone_name is not None:
        zscope = tally.zones.get(zone_name)
        if zscope is None:
            zscope = tally.zones[zone_name] = gates.Scope()
        zscope.total += 1
        if unhealthy:
            zscope.unhealthy += 1
    if in_flight or node.unschedulable or not node.ready:
        tally.unavailable.setdefault(cls.name, set()).add(node.name)


def _tally_missing(p: _Pass, missing: list[Record]) -> None:
    """Nodes being replaced may be gone already: they still count (missing-but-expected, as MHC)."""
    tally = p.tally
    for rec in missing:
        if not rec.in_flight or rec.node in p.refused:
            continue
        tally.in_flight += 1
        tally.cluster.total += 1
        tally.cluster.unhealthy += 1
        if rec.cls in p.classes:
            scope = tally.classes[rec.cls]
            scope.total += 1
            scope.unhealthy += 1
            tally.unavailable.setdefault(rec.cls, set()).add(rec.node)


def _untally_replacements(p: _Pass, entries: list[_Entry], missing: list[Record]) -> None:
    """One remediation counts once: a node joining (not Ready, no record) in the class of an
    in-flight replace that has made its call, and created after that step started, is taken as
    that replace's replacement and removed from the tallies (the replaced node, present or
    missing, already counts for both). Each replace absorbs at most one joining node, the
    earliest-started replace the earliest-born node."""
    starts: dict[str, list[float]] = {}
    recs = [e.record for e in entries if e.record is not None and e.record.node_uid == e.node.uid]
    for rec in (*recs, *missing):
        if (
            rec is not None
            and rec.action is Action.REPLACE
            and rec.phase in (Phase.ACTING, Phase.VERIFYING)
            and rec.node not in p.refused
            and rec.cls in p.classes
        ):
            starts.setdefault(rec.cls, []).append(rec.step_started)
    if not starts:
        return
    joining: list[tuple[float, str, _Entry]] = []
    for entry in entries:
        node = entry.node
        born = node.created if node.created is not None else node.first_seen
        joins = entry.record is None and entry.cls is not None and entry.cls.name in starts
        if joins and not node.ready and born is not None:
            joining.append((born, node.name, entry))
    tally = p.tally
    for name in starts:
        starts[name].sort(reverse=True)
    for born, _, entry in sorted(joining, key=lambda j: (j[0], j[1])):
        assert entry.cls is not None
        pending = starts[entry.cls.name]
        if not pending or pending[-1] > born:
            continue
        pending.pop()
        scopes = [tally.classes[entry.cls.name], tally.cluster]
        if entry.node.zone is not None:
            scopes.append(tally.zones[entry.node.zone])
        for scope in scopes:
            scope.total -= 1
            scope.unhealthy -= 1  # not Ready: it was counted as unhealthy
        # It stays unavailable for maxUnavailable: capacity that is not serving yet.


def _finish(p: _Pass, entry: _Entry, rec: Record, result: FinishResult, reason: str) -> None:
    p.decide(
        Decision(
            DecisionKind.FINISH,
            entry.node.name,
            rec.cls,
            step=rec.step,
            action=rec.action,
            result=result,
            record=rec,
            reason=reason,
        ),
        entry,
    )


def _park(p: _Pass, entry: _Entry | None, rec: Record, reason: str) -> Decision:
    decision = Decision(
        DecisionKind.NEEDS_HUMAN,
        rec.node,
        rec.cls,
        step=rec.step,
        action=Action.NOTIFY,
        record=rec,
        reason=reason,
    )
    p.decide(decision, entry)
    return decision


def _hold(p: _Pass, entry: _Entry | None, rec: Record, blocked: Blocked, why: str = "") -> Decision:
    """In flight, but a scope gate tripped: nothing further is done until it clears."""
    p.wake_at(blocked.until)
    p.wake_at(rec.deadline)
    decision = Decision(
        DecisionKind.HOLD,
        rec.node,
        rec.cls,
        step=rec.step,
        action=rec.action,
        blocked=blocked,
        record=rec,
        reason=f"{rec.action} {rec.phase}{why} held: {blocked.reason}",
    )
    p.decide(decision, entry)
    return decision


def _in_flight_gates(p: _Pass, rec: Record, zone_name: str | None) -> Blocked | None:
    """The scope gates re-judged for work in flight. The remediation itself is in the tallies
    once (as when it was admitted), so the comparison is the admission's: held only when its
    scope has more unhealthy nodes than allowed, itself included."""
    return (
        p.stale
        or gates.paused(p.snapshot.pause)
        or gates.short_circuit(p.tally, rec.cls, p.safety)
        or gates.zone(p.tally, zone_name, p.safety)
    )


def _decide_recorded(p: _Pass, entry: _Entry, rec: Record) -> None:
    """A node that has a remediation record (in flight or parked)."""
    node = entry.node
    cls = p.classes.get(rec.cls)
    if rec.node_uid != node.uid:
        _finish(
            p,
            entry,
            rec,
            "failed",
            "node object was recreated (UID changed); the old record no longer applies",
        )
        return
    if node.excluded:
        # Hands-off: the record is closed, the node (cordon included) is left as it is for the
        # human who excluded it.
        _finish(p, entry, rec, "released", "excluded: released to a human")
        return
    refused = p.refused.get(node.name)
    if refused is not None:
        _park(p, entry, rec, f"record refused: {refused}")
        return
    if cls is None or entry.cls is None:
        why = (
            f"class {rec.cls} is no longer configured"
            if cls is None
            else "no class selects the node any more"
        )
        _finish(p, entry, rec, "failed", f"stopped: {why}")
        return
    healthy = entry.health.state is HealthState.HEALTHY
    if rec.phase is Phase.NEEDS_HUMAN:
        if healthy:
            _finish(p, entry, rec, "recovered", "healthy again")
        else:
            p.report(entry, None, note=f"parked, needs a human: {rec.reason}")
        return
    timed_out = (deadline := rec.effective_deadline(p.now)) is not None and p.now >= deadline
    live = rec.phase is not Phase.FAILED and not timed_out
    if p.stale is not None:
        if live:
            _hold(p, entry, rec, p.stale)
        else:
            p.skip(entry, p.stale, rec)
        return

    finished = _finished(entry, rec)
    if finished is not None:
        _finish(p, entry, rec, finished, "healthy again")
        return

    if live:
        blocked = _in_flight_gates(p, rec, node.zone)
        if blocked is not None:
            _hold(p, entry, rec, blocked)
            return
        p.wake_at(rec.deadline)
        p.decide(
            Decision(
                DecisionKind.CONTINUE,
                node.name,
                rec.cls,
                step=rec.step,
                action=rec.action,
                record=rec,
                reason=f"{rec.action} {rec.phase}",
            ),
            entry,
        )
        return
    _escalate(p, entry, cls, rec, "failed" if rec.phase is Phase.FAILED else "timed out")


def _finished(entry: _Entry, rec: Record) -> FinishResult | None:
    """The result when a healthy node ends its record, else None (keep going)."""
    if entry.health.state is not HealthState.HEALTHY:
        return None
    acted = rec.phase in (Phase.ACTING, Phase.VERIFYING)
    if rec.action is Action.REBOOT and acted:
        # Verified, not assumed: the boot ID must have changed.
        changed = entry.node.boot_id is not None and entry.node.boot_id != rec.boot_id_before
        return "succeeded" if changed else None
    if rec.action is Action.REPLACE and acted:
        return None  # the replacement, not the old node, proves success; the runtime verifies
    return "succeeded" if acted else "recovered"


def _escalate(p: _Pass, entry: _Entry, cls: NodeClass, rec: Record, why: str) -> None:
    node = entry.node
    if rec.ladder_hash and rec.ladder_hash != p.hashes[cls.name]:
        # The record's step was finished under the ladder it started with; the next step of the
        # new ladder was never part of that plan: a human decides.
        _park(p, entry, rec, f"{rec.action} {why}; ladder changed under a live remediation")
        return
    nxt = rec.step + 1
    if nxt >= len(cls.ladder) or cls.ladder[nxt].action is Action.NOTIFY:
        reason = (
            f"{rec.action} {why}; ladder exhausted"
            if nxt >= len(cls.ladder)
            else f"{rec.action} {why}; next step is notify"
        )
        p.decide(
            Decision(
                DecisionKind.NEEDS_HUMAN,
                node.name,
                cls.name,
                step=min(nxt, len(cls.ladder) - 1),
                action=Action.NOTIFY,
                record=rec,
                reason=reason,
            ),
            entry,
        )
        return
    step = cls.ladder[nxt]
    blocked = (
        p.scope_gates(entry, cls)
        or gates.rate_limit(p.tally, step.action, p.history, p.safety, p.now)
        or gates.window(step, node, p.now)
    )
    if blocked is not None:
        p.skip(entry, blocked, rec)
        return
    p.admit(step.action)
    p.decide(
        Decision(
            DecisionKind.ESCALATE,
            node.name,
            cls.name,
            step=nxt,
            action=step.action,
            record=rec,
            reason=f"{rec.action} {why}; escalating to {step.action}",
        ),
        entry,
    )


def _decide_new(p: _Pass, entry: _Entry, cls: NodeClass) -> None:
    """An unhealthy node with no record: start step 0 if every gate allows."""
    node = entry.node
    reasons = "; ".join(entry.health.reasons)
    first = cls.ladder[0]
    if first.action is Action.NOTIFY:
        blocked = p.stale or gates.pause(None, node)  # telling humans is allowed while paused
        if blocked is not None:
            p.skip(entry, blocked)
            return
        p.decide(
            Decision(
                DecisionKind.NEEDS_HUMAN,
                node.name,
                cls.name,
                step=0,
                action=Action.NOTIFY,
                reason=f"class {cls.name} only notifies: {reasons}",
            ),
            entry,
        )
        return
    blocked = (
        p.scope_gates(entry, cls)
        or gates.budgets(p.tally, node.name, cls, p.safety)
        or gates.rate_limit(p.tally, first.action, p.history, p.safety, p.now)
    )
    if blocked is not None:
        p.skip(entry, blocked)
        return
    exhausted = gates.attempts(node.name, p.history, p.safety, p.now)
    if exhausted is not None:
        p.decide(
            Decision(
                DecisionKind.NEEDS_HUMAN,
                node.name,
                cls.name,
                step=0,
                action=Action.NOTIFY,
                blocked=exhausted,
                reason=f"{exhausted.reason}: {reasons}",
            ),
            entry,
        )
        return
    blocked = gates.window(first, node, p.now)
    if blocked is not None:
        p.skip(entry, blocked)
        return
    p.admit(first.action)
    p.tally.in_flight += 1
    p.tally.unavailable.setdefault(cls.name, set()).add(node.name)
    p.decide(
        Decision(DecisionKind.START, node.name, cls.name, step=0, action=first.action, reason=reasons),
        entry,
    )


def _tripped(p: _Pass) -> tuple[tuple[str, Blocked], ...]:
    out: list[tuple[str, Blocked]] = []
    if p.stale is not None:
        out.append(("cluster", p.stale))
    if p.snapshot.pause is not None:
        out.append(("cluster", Blocked(Gate.PAUSE, f"cluster paused: {p.snapshot.pause.reason}")))
    for name in sorted(p.classes):
        blocked = gates.short_circuit_class(p.tally, name, p.safety)
        if blocked is not None:
            out.append((f"class/{name}", blocked))
    blocked = gates.short_circuit_cluster(p.tally, p.safety)
    if blocked is not None:
        out.append(("cluster", blocked))
    for zone_name in sorted(p.tally.zones):
        blocked = gates.zone(p.tally, zone_name, p.safety)
        if blocked is not None:
            out.append((f"zone/{zone_name}", blocked))
    return tuple(out)


def _decide_missing(p: _Pass, rec: Record) -> None:
    """A record whose Node object is gone (replaced or deleted): the runtime verifies the
    replacement until the step's deadline."""
    refused = p.refused.get(rec.node)
    if refused is not None:
        _park(p, None, rec, f"record refused: {refused}")
        return
    if not rec.in_flight:
        p.decide(
            Decision(
                DecisionKind.FINISH,
                rec.node,
                rec.cls,
                step=rec.step,
                action=rec.action,
                record=rec,
                result="failed",
                reason="node object gone while parked",
            ),
            None,
        )
        return
    timed_out = (deadline := rec.effective_deadline(p.now)) is not None and p.now >= deadline
    if timed_out:
        if p.stale is None:
            _park(p, None, rec, f"{rec.action} timed out after the node object disappeared")
        else:
            p.decide(
                Decision(
                    DecisionKind.SKIP,
                    rec.node,
                    rec.cls,
                    step=rec.step,
                    action=rec.action,
                    blocked=p.stale,
                    record=rec,
                    reason=p.stale.reason,
                ),
                None,
            )
        return
    # Its zone is not known any more (the Node held it): class, cluster, pause and view.
    blocked = _in_flight_gates(p, rec, None)
    if blocked is not None:
        _hold(p, None, rec, blocked, "; node object gone")
        return
    p.wake_at(rec.deadline)
    p.decide(
        Decision(
            DecisionKind.CONTINUE,
            rec.node,
            rec.cls,
            step=rec.step,
            action=rec.action,
            record=rec,
            reason=f"{rec.action} {rec.phase}; node object gone",
        ),
        None,
    )


def plan(
    snapshot: Snapshot,
    records: Mapping[str, Record],
    history: History,
    policy: Policy,
    now: float,
) -> Plan:
    p = _Pass(snapshot, history, policy, now)
    for name, rec in records.items():
        if rec.phase in IN_FLIGHT_PHASES:
            why = check_record(rec, policy, history, now)
            if why is not None:
                p.refused[name] = why
    index = ClassIndex(policy.classes)
    compiled = {c.name: CompiledRules.of(c) for c in policy.classes}
    for name in p.classes:
        p.tally.classes[name] = gates.Scope()

    # Stage 1: classify and tally. This loop is the hot path (100,000 nodes in well under 1 s):
    # plain healthy nodes cost a class lookup, one pass over their conditions and a count.
    entries: list[_Entry] = []
    present: set[str] = set()
    counts: dict[tuple[str, str], int] = {}
    node_classes: dict[str, str | None] = {}
    for node in snapshot.nodes:
        name = node.name
        present.add(name)
        cls = index.lookup_node(node)
        health = classify(node, compiled[cls.name], now) if cls is not None else HEALTHY
        entry = _Entry(node, cls, health, records.get(name))
        entries.append(entry)
        _tally(p, entry)
        cls_name = cls.name if cls is not None else None
        node_classes[name] = cls_name
        key = (cls_name or UNMATCHED, health.state)
        counts[key] = counts.get(key, 0) + 1
    missing = [rec for name, rec in sorted(records.items()) if name not in present]
    _tally_missing(p, missing)
    _untally_replacements(p, entries, missing)

    # Stage 2: nodes with records hold budget already; decide them first, in name order:
    # escalations compete for rate-limit room, and which node gets the last slot must not
    # depend on the order the watch cache lists nodes in (same inputs, same plan).
    candidates: list[_Entry] = []
    recorded: list[_Entry] = []
    for entry in entries:
        if entry.record is not None:
            recorded.append(entry)
        elif entry.cls is None:
            p.report(entry, None, note="unmatched: no class selects this node; never acted on")
        elif entry.health.unhealthy:
            candidates.append(entry)
        else:
            p.wake_at(entry.health.until)
            if entry.health.state is HealthState.PENDING or entry.node.excluded:
                p.report(entry, None, note="excluded" if entry.node.excluded else "pending")
            # Plain healthy nodes get no report of their own (Plan.node_classes lists them).
    for entry in sorted(recorded, key=lambda e: e.node.name):
        assert entry.record is not None
        _decide_recorded(p, entry, entry.record)
    for rec in missing:
        _decide_missing(p, rec)

    # Stage 3: admit new remediations.
    for entry in sorted(candidates, key=lambda e: e.node.name):
        assert entry.cls is not None
        _decide_new(p, entry, entry.cls)

    return Plan(
        decisions=tuple(p.decisions),
        reports=tuple(p.reports),
        next_wakeup=p.next_wakeup,
        tripped=_tripped(p),
        counts=counts,
        node_classes=node_classes,
    )
