"""The core's values: what a node looks like, what a class asks for, what a remediation is.

Everything here is a frozen value. Times are float seconds since the epoch (UTC): the core never
reads the clock; one ``now`` per pass is passed in by the runtime. Floats keep the 100,000-node
hot path cheap (a ``datetime`` per condition costs more than the whole health check).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Labels and annotations noderescue reads or writes.
EXCLUDE_LABEL = "noderescue.io/exclude"
ZONE_LABEL = "topology.kubernetes.io/zone"
RECORD_ANNOTATION = "noderescue.io/remediation"
CORDONED_BY_ANNOTATION = "noderescue.io/cordoned-by"


class Action(enum.StrEnum):
    REPAIR = "repair"
    REBOOT = "reboot"
    REPLACE = "replace"
    NOTIFY = "notify"


# Actions that touch the machine (need a cloud provider, count against rate limits).
CLOUD_ACTIONS = frozenset({Action.REPAIR, Action.REBOOT, Action.REPLACE})
# Actions that cordon and drain the node first.
DRAINING_ACTIONS = frozenset({Action.REBOOT, Action.REPLACE})


# --------------------------------------------------------------------------------------------
# Observed state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str = ""
    last_transition: float | None = None  # None when the API object had none or it did not parse


@dataclass(frozen=True, slots=True)
class NodeView:
    """The slim view of a Node the core decides on (built from raw JSON by the watch cache)."""

    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    zone: str | None = None
    provider_id: str | None = None
    unschedulable: bool = False
    conditions: tuple[Condition, ...] = ()
    lease_renew: float | None = None  # kube-node-lease/<name> spec.renewTime
    boot_id: str | None = None
    created: float | None = None
    # Raw value of the noderescue.io/remediation annotation, parsed by the runtime into a Record.
    record_json: str | None = None
    # Value of the noderescue.io/cordoned-by annotation ("noderescue" when we cordoned it).
    cordoned_by: str | None = None
    # First time this process saw the node (from the watch cache); the fallback start of a
    # rule's `for` when lastTransitionTime is missing or lies in the future (clock skew).
    first_seen: float | None = None
    # The cloud group (Auto Scaling group / scale set) of the node's instance, as the cloud says,
    # set by the runtime; None: not known (no cloud, not in a configured group, not looked up).
    group: str | None = None

    def condition(self, type_: str) -> Condition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return cond is not None and cond.status == "True"

    @property
    def excluded(self) -> bool:
        return self.labels.get(EXCLUDE_LABEL) == "true"


# --------------------------------------------------------------------------------------------
# Policy (converted from the validated configuration by noderescue.config)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quantity:
    """An absolute count or a percentage of a total (``3`` or ``40%``)."""

    value: int
    percent: bool = False

    def floor_of(self, total: int) -> int:
        """Rounded down, as Cluster API's maxUnhealthy (40% of 6 is 2)."""
        return (total * self.value) // 100 if self.percent else self.value

    def ceil_of(self, total: int) -> int:
        """Rounded up, as a PodDisruptionBudget's maxUnavailable (20% of 3 is 1)."""
        return -((-total * self.value) // 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes label selector: matchLabels AND every matchExpression."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "Exists":
                if not present:
                    return False
            elif req.operator == "DoesNotExist":
                if present:
                    return False
            elif req.operator == "In":
                if not present or labels[req.key] not in req.values:
                    return False
            elif present and labels[req.key] in req.values:  # NotIn: absent keys match
                return False
        return True


@dataclass(frozen=True, slots=True)
class ConditionRule:
    """Unhealthy when condition ``type`` has a status in ``statuses`` for ``for_s`` seconds."""

    type: str
    statuses: frozenset[str]
    for_s: float


@dataclass(frozen=True, slots=True)
class LeaseRule:
    """Unhealthy when the node Lease was last renewed more than ``stale_for_s`` ago."""

    stale_for_s: float
    type: Literal["NodeLease"] = "NodeLease"


Rule = ConditionRule | LeaseRule

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    """Allowed time of day on some weekdays, in an IANA timezone.

    ``start``/``end`` are minutes after midnight. ``overnight`` windows end on the next day
    (22:00-04:00); the weekday is the day the window opens.
    """

    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int
    end: int
    timezone: str
    overnight: bool = False
    # Windows do not hold back a replace of a node that is already down (its pods are gone, waiting
    # only extends the outage) unless strict.
    strict: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    timeout_s: float | None = None  # None for notify
    command: str | None = None  # repair only
    window: Window | None = None


@dataclass(frozen=True, slots=True)
class DrainPolicy:
    timeout_s: float = 600.0
    on_timeout: Literal["abort", "proceed"] = "abort"
    delete_emptydir_data: bool = False
    force_bare_pods: bool = False  # evict pods no controller will recreate
    grace_period_s: int | None = None
    skip: bool = False  # skip drain: pods are freed only after the instance is stopped
    # A pod past its deletionTimestamp by this long is on a kubelet that cannot confirm its
    # deletion (node down): stop waiting for it (kubectl's --skip-wait-for-delete-timeout;
    # Cluster API uses the same for unreachable nodes). None: wait until the drain timeout.
    skip_wait_for_delete_s: float | None = 60.0


@dataclass(frozen=True, slots=True)
class NodeClass:
    name: str
    selector: Selector
    rules: tuple[Rule, ...]
    ladder: tuple[Step, ...]
    drain: DrainPolicy = DrainPolicy()
    max_unavailable: Quantity = Quantity(1)
    node_startup_timeout_s: float | None = None
    # Cloud groups whose nodes this class may select (besides the selector): a node's group comes
    # from the cloud, so a node cannot move itself into or out of the class. Empty: any group.
    groups: frozenset[str] = frozenset()

    def selects(self, labels: Mapping[str, str], group: str | None) -> bool:
        if self.groups and group not in self.groups:
            return False
        return self.selector.matches(labels)


@dataclass(frozen=True, slots=True)
class RateLimit:
    action: Action
    max: int
    per_s: float


@dataclass(frozen=True, slots=True)
class Safety:
    max_unhealthy: Quantity = Quantity(40, percent=True)
    max_unhealthy_per_zone: Quantity = Quantity(50, percent=True)
    max_concurrent: int = 2
    stale_after_s: float = 60.0
    rate_limits: tuple[RateLimit, ...] = ()
    max_attempts: int = 3
    max_attempts_per_s: float = 86400.0
    # How long a remediation may stay held by a tripped gate in total per step. Held time does
    # not count toward a step's timeout: its deadline moves out by the time held, at most this
    # much, so a record's deadline is bounded by step start + step timeout + maxHold.
    max_hold_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the planner needs to know about one cluster's configuration."""

    cluster: str
    provider: Literal["aws", "azure", "none"]
    safety: Safety
    classes: tuple[NodeClass, ...]


# --------------------------------------------------------------------------------------------
# Durable state
# --------------------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    """Where a remediation stands. Written to the record *before* the step it names runs."""

    STARTED = "started"  # record written, nothing done yet
    CORDONED = "cordoned"
    DRAINING = "draining"
    ACTING = "acting"  # the cloud call is about to be / has been made (operation id once known)
    VERIFYING = "verifying"
    FAILED = "failed"  # this step failed (drain aborted, command failed): escalate
    NEEDS_HUMAN = "needs-human"  # parked: ladder exhausted, attempts used up, identity mismatch


IN_FLIGHT_PHASES = frozenset(
    {Phase.STARTED, Phase.CORDONED, Phase.DRAINING, Phase.ACTING, Phase.VERIFYING, Phase.FAILED}
)


@dataclass(frozen=True, slots=True)
class Record:
    """Per-node remediation state (the noderescue.io/remediation annotation)."""

    node: str
    node_uid: str
    cls: str
    step: int  # index into the class's ladder
    action: Action
    phase: Phase
    attempt: int  # 1-based remediation attempt for this node
    started: float  # when this remediation (step 0) started
    step_started: float  # when the current step started
    deadline: float | None  # when the current step times out
    reason: str = ""  # why: the unhealthy reasons at start, or why it failed / needs a human
    provider_id: str | None = None
    instance_id: str | None = None
    boot_id_before: str | None = None
    operation_id: str | None = None
    cordoned_by_us: bool = False
    # Destructive calls of this step whose intent is durable: each name is written here *before*
    # the call is made and never removed within the step, so a call named here may have gone out
    # (a crash, a lost response) and is never sent again; the outcome is verified by state.
    # Names: "repair", "reboot", "replace" (the step's main call), "capacity" (a scale set's
    # capacity change that follows a delete).
    calls: tuple[str, ...] = ()
    # The ladder this remediation follows ("class", or "rule/<index>" once rules carry ladders)
    # and a hash of it: a configuration change under a live record is detected, not followed.
    ladder_source: str = "class"
    ladder_hash: str = ""
    # Held by a gate that tripped under the running remediation (why, and since when): nothing
    # further is done, our cordon stays; held time does not count toward the step's deadline.
    held: str | None = None
    held_since: float | None = None

    @property
    def in_flight(self) -> bool:
        return self.phase in IN_FLIGHT_PHASES

    def effective_deadline(self, now: float) -> float | None:
        """The step deadline, moved out by the time the remediation has been held so far."""
        if self.deadline is None or self.held_since is None:
            return self.deadline
        return self.deadline + max(0.0, now - self.held_since)

    def sent(self, call: str) -> bool:
        """The intent of ``call`` was recorded in this step (and not withdrawn after a refusal):
        it may have gone out. ``calls`` only grows: a withdrawal appends ``!<call>``."""
        return self.calls.count(call) > self.calls.count(f"!{call}")


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One action started on a node: feeds rate limits (by action) and attempts (by node)."""

    ts: float
    action: Action
    node: str
    attempt_start: bool = False  # true for the first step of a remediation (an attempt)


@dataclass(frozen=True, slots=True)
class History:
    events: tuple[HistoryEvent, ...] = ()

    def count_action_since(self, action: Action, since: float) -> int:
        return sum(1 for e in self.events if e.action == action and e.ts > since)

    def attempts_since(self, node: str, since: float) -> int:
        return sum(1 for e in self.events if e.attempt_start and e.node == node and e.ts > since)

    def compacted(self, keep_after: float) -> History:
        return History(tuple(e for e in self.events if e.ts > keep_after))


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One cluster as the runtime saw it at the start of a pass."""

    nodes: tuple[NodeView, ...]
    # Last time the watch (or a list) was confirmed current; None before the first sync.
    synced_at: float | None
    reachable: bool = True
    pause: Pause | None = None


# --------------------------------------------------------------------------------------------
# Health and decisions
# --------------------------------------------------------------------------------------------


class HealthState(enum.StrEnum):
    HEALTHY = "healthy"
    PENDING = "pending"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    reasons: tuple[str, ...] = ()  # unhealthy: what matched; pending: what matches, not yet long enough
    until: float | None = None  # pending: when the earliest matching rule's `for` elapses

    @property
    def unhealthy(self) -> bool:
        return self.state is HealthState.UNHEALTHY


HEALTHY = Health(HealthState.HEALTHY)


class Gate(enum.StrEnum):
    STALE_VIEW = "stale-view"
    PAUSE = "pause"
    EXCLUDED = "excluded"
    UNMATCHED = "unmatched"
    SHORT_CIRCUIT = "short-circuit"
    ZONE = "zone"
    MAX_CONCURRENT = "max-concurrent"
    MAX_UNAVAILABLE = "max-unavailable"
    RATE_LIMIT = "rate-limit"
    ATTEMPTS = "attempts"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class Blocked:
    gate: Gate
    reason: str
    until: float | None = None  # when the gate can open by itself (rate-limit slot, window)


# "released": the node was excluded mid-remediation; the record is closed and the node, cordon
# included, is left exactly as it is for the human who excluded it.
FinishResult = Literal["succeeded", "failed", "recovered", "released"]


class DecisionKind(enum.StrEnum):
    START = "start"  # begin a remediation at ladder step 0
    CONTINUE = "continue"  # in flight: make sure a worker drives it
    ESCALATE = "escalate"  # the step timed out or failed: start the next ladder step
    FINISH = "finish"  # the node is healthy again: close the record
    NEEDS_HUMAN = "needs-human"  # park it and tell humans
    SKIP = "skip"  # unhealthy, but a gate holds it back
    # In flight, but a scope gate (stale view, pause, short-circuit, zone) tripped since it was
    # admitted: do nothing further (our cordon stays) until the gate clears, then continue.
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    node: str
    cls: str | None
    step: int | None = None  # the ladder step to run (start/escalate) or being run (continue)
    action: Action | None = None
    reason: str = ""
    blocked: Blocked | None = None  # skip / hold: the gate that holds it
    record: Record | None = None  # the record this decision is about, if any
    result: FinishResult | None = None  # finish


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What `plan` says about one node that is not plainly healthy (pending, unhealthy, excluded,
    unmatched or with a record). Plainly healthy nodes are listed in ``Plan.node_classes`` only:
    100,000 reports saying "healthy" would cost more than the rest of the pass."""

    node: str
    cls: str | None
    health: Health
    decision: DecisionKind | None
    blocked: Blocked | None = None
    record: Record | None = None
    note: str = ""  # e.g. "unmatched", "parked: needs a human", "pending until ..."


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: tuple[Decision, ...]
    reports: tuple[NodeReport, ...]
    next_wakeup: float | None  # earliest time the plan can change without a new observation
    # Gates that tripped for a whole scope this pass: (scope, Blocked); scope "cluster",
    # "class/<name>" or "zone/<name>". The runtime tells humans when this set changes.
    tripped: tuple[tuple[str, Blocked], ...] = ()
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (class, health) -> n
    node_classes: Mapping[str, str | None] = field(default_factory=dict)  # every node -> class
