"""The safety gates of DESIGN §4 as data: each returns ``None`` (allow) or ``Blocked``.

The planner evaluates them in the order of §4; the first that blocks is the node's reason. The
counting state they read (``Tally``) is built once per pass and updated as the pass admits new
remediations, so two starts in one pass never both take the last slot of a budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from noderescue.core.durations import format_duration
from noderescue.core.model import (
    CLOUD_ACTIONS,
    Action,
    Blocked,
    Gate,
    History,
    NodeClass,
    NodeView,
    Pause,
    Quantity,
    Safety,
    Snapshot,
    Step,
)
from noderescue.core.windows import is_open, next_opening


@dataclass(slots=True)
class Scope:
    """Nodes of a class, a zone or the whole cluster: how many, how many unhealthy.

    Counted as Cluster API's MachineHealthCheck counts: a node is unhealthy when a rule matches
    it (whether or not its ``for`` has elapsed), while it is inside its startup timeout, when it is
    not Ready (a joining node never counts as healthy), and while a remediation of it is in flight
    or parked (present or missing). One remediation counts once: the joining replacement of an
    in-flight replace is not counted beside the node it replaces.
    """

    total: int = 0
    unhealthy: int = 0


@dataclass(slots=True)
class Tally:
    """Per-pass counts the budget gates read; mutated only by the planner as it admits starts."""

    cluster: Scope = field(default_factory=Scope)
    classes: dict[str, Scope] = field(default_factory=dict)
    zones: dict[str, Scope] = field(default_factory=dict)
    in_flight: int = 0
    # Per class: names of nodes that are unavailable (cordoned, not Ready or being remediated).
    unavailable: dict[str, set[str]] = field(default_factory=dict)
    # Rate-limited actions admitted earlier in this pass.
    started: dict[Action, int] = field(default_factory=dict)


def stale_view(snapshot: Snapshot, safety: Safety, now: float) -> Blocked | None:
    if not snapshot.reachable:
        return Blocked(Gate.STALE_VIEW, "API server unreachable")
    if snapshot.synced_at is None:
        return Blocked(Gate.STALE_VIEW, "watch not synced yet")
    age = now - snapshot.synced_at
    if age > safety.stale_after_s:
        return Blocked(
            Gate.STALE_VIEW,
            f"view is {format_duration(int(age))} old (staleAfter {format_duration(safety.stale_after_s)})",
        )
    return None


def paused(pause_state: Pause | None) -> Blocked | None:
    if pause_state is not None:
        return Blocked(Gate.PAUSE, f"cluster paused: {pause_state.reason or 'no reason given'}")
    return None


def pause(pause_state: Pause | None, node: NodeView) -> Blocked | None:
    blocked = paused(pause_state)
    if blocked is not None:
        return blocked
    if node.excluded:
        return Blocked(Gate.EXCLUDED, "node labelled noderescue.io/exclude=true")
    return None


def over_limit(label: str, scope: Scope, limit: Quantity, limit_name: str, gate: Gate) -> Blocked | None:
    """Blocked when ``scope`` has more unhealthy nodes than ``limit`` allows (Cluster API
    semantics: unhealthy > floor(percent of total))."""
    allowed = limit.floor_of(scope.total)
    if scope.unhealthy <= allowed:
        return None
    return Blocked(
        gate, f"{label}: {scope.unhealthy} of {scope.total} unhealthy, {limit_name} {limit} allows {allowed}"
    )


def short_circuit_class(tally: Tally, cls: str, safety: Safety) -> Blocked | None:
    return over_limit(
        f"class {cls}", tally.classes[cls], safety.max_unhealthy, "maxUnhealthy", Gate.SHORT_CIRCUIT
    )


def short_circuit_cluster(tally: Tally, safety: Safety) -> Blocked | None:
    return over_limit("cluster", tally.cluster, safety.max_unhealthy, "maxUnhealthy", Gate.SHORT_CIRCUIT)


def short_circuit(tally: Tally, cls: str, safety: Safety) -> Blocked | None:
    return short_circuit_class(tally, cls, safety) or short_circuit_cluster(tally, safety)


def zone(tally: Tally, zone_name: str | None, safety: Safety) -> Blocked | None:
    if zone_name is None:
        return None
    blocked = over_limit(
        f"zone {zone_name}",
        tally.zones[zone_name],
        safety.max_unhealthy_per_zone,
        "maxUnhealthyPerZone",
        Gate.ZONE,
    )
    if blocked is None:
        return None
    return Blocked(Gate.ZONE, f"{blocked.reason}: looks like a zone or network failure")


def budgets(tally: Tally, node: str, cls: NodeClass, safety: Safety) -> Blocked | None:
    if tally.in_flight + 1 > safety.max_concurrent:
        return Blocked(
            Gate.MAX_CONCURRENT,
            f"{tally.in_flight} remediations in flight, maxConcurrent {safety.max_concurrent}",
        )
    unavailable = tally.unavailable.get(cls.name, set())
    after = len(unavailable | {node})
    allowed = cls.max_unavailable.ceil_of(tally.classes[cls.name].total)
    if after > allowed:
        others = len(unavailable - {node})
        return Blocked(
            Gate.MAX_UNAVAILABLE,
            f"class {cls.name}: {others} other nodes unavailable, "
            f"maxUnavailable {cls.max_unavailable} allows {allowed}",
        )
    return None


def rate_limit(tally: Tally, action: Action, history: History, safety: Safety, now: float) -> Blocked | None:
    if action not in CLOUD_ACTIONS:
        return None
    for limit in safety.rate_limits:
        if limit.action != action:
            continue
        since = now - limit.per_s
        in_window = sorted(e.ts for e in history.events if e.action == action and e.ts > since)
        used = len(in_window) + tally.started.get(action, 0)
        if used >= limit.max:
            # A slot frees when the oldest event in the window leaves it.
            frees = in_window[0] + limit.per_s if in_window else None
            return Blocked(
                Gate.RATE_LIMIT,
                f"{action}: {used} in the last {format_duration(limit.per_s)}, max {limit.max}",
                until=frees,
            )
    return None


def attempts(node: str, history: History, safety: Safety, now: float) -> Blocked | None:
    used = history.attempts_since(node, now - safety.max_attempts_per_s)
    if used >= safety.max_attempts:
        return Blocked(
            Gate.ATTEMPTS,
            f"{used} remediation attempts in the last {format_duration(safety.max_attempts_per_s)}, "
            f"maxAttemptsPerNode {safety.max_attempts}",
        )
    return None


def window(step: Step, node: NodeView, now: float) -> Blocked | None:
    win = step.window
    if win is None or is_open(win, now):
        return None
    if step.action is Action.REPLACE and not win.strict and not node.ready:
        return None  # the node is down already: waiting only extends the outage
    return Blocked(
        Gate.WINDOW, f"{step.action} waits for its maintenance window", until=next_opening(win, now)
    )
