"""One cluster's control loop: snapshot -> plan -> execute -> metrics -> sleep (issue 6 item 1).

A pass reads the watch cache's snapshot, parses the records from the Nodes' annotations (plus the
records only the executor knows: Nodes already gone, and everything in dry-run), loads history
and pause from the state ConfigMap, and asks the pure core for a plan. The leader hands the
decisions to the executor; a standby only plans, for metrics and ``/status``.

No fixed-interval polling: the loop sleeps until the plan's ``next_wakeup``, a health-relevant
change in the cache, a worker finishing, a leadership change, or the moment the view would turn
stale. A safety re-plan every ``safety_replan_s`` (5 minutes) covers anything missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from structlog.contextvars import bound_contextvars

from noderescue.adapters.kube import KubeError
from noderescue.core.model import (
    Blocked,
    Decision,
    DecisionKind,
    Gate,
    History,
    NodeView,
    Pause,
    Phase,
    Plan,
    Policy,
    Record,
    Snapshot,
)
from noderescue.core.planner import UNMATCHED, plan
from noderescue.metrics import Metrics
from noderescue.runtime.executor import Executor, Fence, longest_window

log = structlog.get_logger(__name__)

SAFETY_REPLAN_S = 300.0
PASS_RETRY_S = 5.0
# Nothing watches the state ConfigMap: while paused, re-read it this often to notice `resume`.
PAUSED_RECHECK_S = 5.0
# A view confirmed fresh again after an outage sets no ``changed`` when no Node changed meanwhile:
# while the view is stale, plan again this often so the cluster is not left alone until the
# safety re-plan.
STALE_RECHECK_S = 2.0
STATE_TIMEOUT_S = 10.0
# A standby plans for metrics and /status only: it re-reads the record store this often.
STANDBY_REFRESH_S = 10.0
# Gates that say "the picture is wrong" rather than "this node must wait": a ShortCircuit Event.
_SCOPE_GATES = frozenset({Gate.SHORT_CIRCUIT, Gate.ZONE, Gate.STALE_VIEW})


class NodeWatch(Protocol):
    """The watch cache as the reconciler reads it (``NodeCache``)."""

    changed: asyncio.Event
    reachable: bool

    @property
    def synced_at(self) -> float | None: ...

    def snapshot(self) -> tuple[NodeView, ...]: ...

    def get(self, name: str) -> NodeView | None: ...


class StateReader(Protocol):
    async def load(self) -> tuple[History, Pause | None]: ...


@dataclass(frozen=True, slots=True)
class PassResult:
    plan: Plan
    records: Mapping[str, Record]
    acting: bool
    at: float


class Reconciler:
    def __init__(
        self,
        *,
        cluster: str,
        policy: Policy,
        cache: NodeWatch,
        state: StateReader,
        executor: Executor,
        metrics: Metrics,
        fence: Fence | None,
        dry_run: bool,
        wake: asyncio.Event | None = None,
        safety_replan_s: float = SAFETY_REPLAN_S,
        min_pass_interval_s: float = 0.05,
        paused_recheck_s: float = PAUSED_RECHECK_S,
        stale_recheck_s: float = STALE_RECHECK_S,
        standby_refresh_s: float = STANDBY_REFRESH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.cache = cache
        self.state = state
        self.executor = executor
        self.metrics = metrics
        self.fence = fence  # None: no election (dry-run observer acts through recorders)
        self.dry_run = dry_run
        self.wake = wake or asyncio.Event()  # set by workers finishing and leadership changes
        self.safety_replan_s = safety_replan_s
        self.min_pass_interval_s = min_pass_interval_s
        self.paused_recheck_s = paused_recheck_s
        self.stale_recheck_s = stale_recheck_s
        self.clock = clock
        self.last: PassResult | None = None
        self.passes = 0
        self._history: History = History()
        self._pause: Pause | None = None
        self._state_ok = False
        self._blocked: dict[str, Gate] = {}  # node -> gate that held it last pass (change detection)
        self._tripped: frozenset[tuple[str, Gate]] = frozenset()
        self._said: dict[str, str] = {}  # node -> the decision logged last pass (say changes only)
        self._labelled: dict[str, set[tuple[str, ...]]] = {}  # metric -> label sets we set
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.standby_refresh_s = standby_refresh_s
        self._records_read_at = 0.0
        self._loaded_as_leader = False

    # ------------------------------------------------------------------ the loop

    @property
    def leading(self) -> bool:
        return self.fence is None or self.fence.holds_lease()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set (then the executor gets its grace period)."""
        with bound_contextvars(cluster=self.cluster, dry_run=self.dry_run):
            try:
                while not stop.is_set():
                    try:
                        result = await self.run_pass()
                    except Exception:
                        # A pass that blows up (a bug, an API answer we did not expect) must not
                        # end the cluster's loop: say so, wait a little, plan again from scratch.
                        log.exception("reconcile_pass_failed")
                        await _wait_any((stop,), PASS_RETRY_S)
                        continue
                    await self._sleep(result.plan, stop)
            finally:
                await self.close()

    async def close(self) -> None:
        """Cancel the Events still being posted in the background."""
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    async def _sleep(self, plan_: Plan, stop: asyncio.Event) -> None:
        now = self.clock()
        until = now + self.safety_replan_s
        if plan_.next_wakeup is not None:
            until = min(until, plan_.next_wakeup)
        retry_at = self.executor.retry_at()
        if retry_at is not None:  # a worker halted by a gate gets its next chance then
            until = min(until, retry_at)
        if self._pause is not None:
            until = min(until, now + self.paused_recheck_s)
        if any(blocked.gate is Gate.STALE_VIEW for _, blocked in plan_.tripped):
            until = min(until, now + self.stale_recheck_s)
        synced = self.cache.synced_at
        if synced is not None and self.policy.safety.stale_after_s > 0:
            turns_stale = synced + self.policy.safety.stale_after_s + 0.01
            if turns_stale > now:
                until = min(until, turns_stale)
        await asyncio.sleep(self.min_pass_interval_s)  # coalesce a burst of watch events
        timeout = max(0.0, until - self.clock())
        await _wait_any((self.cache.changed, self.wake, stop), timeout)

    # ------------------------------------------------------------------ one pass

    async def load_state(self) -> None:
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                self._history, self._pause = await self.state.load()
            self._state_ok = True
        except (KubeError, TimeoutError, ValueError) as exc:
            # Without history the rate limits are unknown: the pass treats the cluster as stale.
            self._state_ok = False
            log.warning("state_load_failed", error=str(exc) or type(exc).__name__)

    async def load_records(self, acting: bool) -> None:
        """Records come from the ledger. A leader loads the store once when it takes over (from
        then on its own writes keep the ledger current); a standby re-reads it now and then."""
        ledger = self.executor.ledger
        now = self.clock()
        if acting and self._loaded_as_leader:
            return
        if not acting and ledger.loaded and now - self._records_read_at < self.standby_refresh_s:
            return
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                await ledger.load()
        except (KubeError, TimeoutError) as exc:
            self._state_ok = False
            log.warning("records_load_failed", error=str(exc) or type(exc).__name__)
            return
        self._records_read_at = now
        self._loaded_as_leader = acting

    async def run_pass(self) -> PassResult:
        self.cache.changed.clear()
        self.wake.clear()
        self.executor.forget_expired_halts()
        await self.load_state()
        acting = self.leading
        if not acting:
            self._loaded_as_leader = False
        await self.load_records(acting)
        if not self.executor.ledger.loaded:
            self._state_ok = False  # without the records nothing may be decided
        now = self.clock()
        nodes = self.cache.snapshot()
        records = self.executor.ledger.records()
        history = self._merged_history(now)
        snapshot = Snapshot(
            nodes=nodes,
            synced_at=self.cache.synced_at,
            reachable=self.cache.reachable and self._state_ok,
            pause=self._pause,
        )
        result = plan(snapshot, records, history, self.policy, now)
        self._log_decisions(result, acting)
        if acting:
            for decision in result.decisions:
                if decision.kind is not DecisionKind.SKIP:
                    self.executor.submit(decision, history=history)
            if not any(b.gate is Gate.STALE_VIEW for _, b in result.tripped):
                self.executor.release_leftover_cordons(nodes)
            self._announce_gates(result)
        self._update_metrics(result, records, acting)
        self.passes += 1
        self.last = PassResult(result, records, acting, now)
        return self.last

    def _merged_history(self, now: float) -> History:
        """Stored history, plus events appended (or about to be) that the stored copy does not
        show yet, plus dry-run's in-memory events: a slot taken is counted from admission on."""
        ledger = self.executor.ledger
        if self._state_ok:
            ledger.history_seen(self._history.events, now - longest_window(self.policy))
        extra = {*ledger.pending_history(), *self.executor.history} - set(self._history.events)
        if not extra:
            return self._history
        return History(tuple(sorted((*self._history.events, *extra), key=lambda e: e.ts)))

    async def judge(self, node: str) -> str | None:
        """Re-judge one in-flight remediation's scopes now (stale view, pause, short-circuit of
        class and cluster, zone), on a plan made from the current view: why it must be held, or
        None. Called right before a drain or a destructive cloud call, not once per pass."""
        reason = await self.recheck()
        if reason is not None:
            return reason
        now = self.clock()
        snapshot = Snapshot(
            nodes=self.cache.snapshot(),
            synced_at=self.cache.synced_at,
            reachable=self.cache.reachable and self._state_ok,
            pause=self._pause,
        )
        fresh = plan(snapshot, self.executor.ledger.records(), self._merged_history(now), self.policy, now)
        for decision in fresh.decisions:
            if decision.node == node and decision.kind is DecisionKind.HOLD:
                blocked = decision.blocked
                return f"{blocked.gate}: {blocked.reason}" if blocked else decision.reason
        return None

    async def recheck(self, *, allow_paused: bool = False) -> str | None:
        """The executor's re-check of the gates that change under a running remediation."""
        synced = self.cache.synced_at
        if synced is None or not self.cache.reachable:
            return "the cluster's view is not current"
        if self.clock() - synced > self.policy.safety.stale_after_s:
            return f"the cluster's view is stale (last sync {self.clock() - synced:.1f}s ago)"
        await self.load_state()
        if not self._state_ok:
            return "the state ConfigMap cannot be read"
        if self._pause is not None and not allow_paused:
            return f"cluster paused: {self._pause.reason}"
        return None

    # ------------------------------------------------------------------ telling

    def _log_decisions(self, result: Plan, acting: bool) -> None:
        said: dict[str, str] = {}
        for d in result.decisions:
            key = f"{d.kind}|{d.blocked.gate if d.blocked else ''}|{d.reason}|{acting}"
            said[d.node] = key
            if self._said.get(d.node) == key:
                continue  # the same as last pass: said already
            if d.kind is DecisionKind.CONTINUE and self.executor.busy(d.node):
                continue  # its worker tells the story
            _log_decision(d, acting=acting, dry_run=self.dry_run)
        self._said = said

    def _announce_gates(self, result: Plan) -> None:
        blocked_now: dict[str, Gate] = {}
        for d in result.decisions:
            if d.kind is not DecisionKind.SKIP or d.blocked is None:
                continue
            gate = d.blocked.gate
            blocked_now[d.node] = gate
            if self._blocked.get(d.node) == gate:
                continue
            if gate is Gate.RATE_LIMIT and d.action is not None:
                self.metrics.rate_limited.labels(cluster=self.cluster, action=str(d.action)).inc()
            if gate is Gate.STALE_VIEW:
                continue  # the API server is what is missing: an Event could not be posted anyway
            node = self.cache.get(d.node)
            if node is not None:
                reason = "ShortCircuit" if gate in _SCOPE_GATES else "RemediationSkipped"
                self._side(
                    self.executor.announce.event(
                        d.node, node.uid, reason, f"{gate}: {d.blocked.reason}", type_="Warning"
                    )
                )
        self._blocked = blocked_now
        tripped = frozenset((scope, blocked.gate) for scope, blocked in result.tripped)
        reasons = {(scope, b.gate): b for scope, b in result.tripped}
        for scope, gate in sorted(tripped - self._tripped):
            blocked = reasons[(scope, gate)]
            log.warning("gate_tripped", scope=scope, gate=str(gate), reason=blocked.reason)
            if gate is not Gate.PAUSE:
                cls = scope.removeprefix("class/") if scope.startswith("class/") else None
                self.executor.announce.notify("shortCircuit", f"{scope}: {blocked.reason}", cls=cls)
        for scope, gate in sorted(self._tripped - tripped):
            log.info("gate_cleared", scope=scope, gate=str(gate))
        self._tripped = tripped

    def _side(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run(), name=f"announce {self.cluster}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ metrics

    def _set(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        """Set a labelled gauge; label sets that disappeared since last pass go back to 0."""
        gauge = getattr(self.metrics, name)
        previous = self._labelled.get(name, set())
        for labels in previous - values.keys():
            gauge.labels(*labels).set(0)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        self._labelled[name] = set(values.keys())

    def _update_metrics(self, result: Plan, records: Mapping[str, Record], acting: bool) -> None:
        c = self.cluster
        nodes: dict[tuple[str, ...], float] = {
            (c, cls, str(health)): n for (cls, health), n in result.counts.items()
        }
        # Parked nodes as their own health value: the NoderescueNeedsHuman alert reads it.
        parked = Counter(rec.cls for rec in records.values() if rec.phase is Phase.NEEDS_HUMAN)
        for cls_name, n in parked.items():
            nodes[(c, cls_name, "needs-human")] = n
        self._set("nodes", nodes)
        in_flight = Counter(rec.cls for rec in records.values() if rec.in_flight)
        self._set("in_flight", {(c, cls.name): in_flight.get(cls.name, 0) for cls in self.policy.classes})
        blocked = Counter(
            (d.cls or UNMATCHED, str(d.blocked.gate))
            for d in result.decisions
            if d.kind is DecisionKind.SKIP and d.blocked is not None
        )
        self._set("gate_blocked", {(c, cls, gate): n for (cls, gate), n in blocked.items()})
        tripped_classes = {
            scope.removeprefix("class/")
            for scope, b in result.tripped
            if b.gate is Gate.SHORT_CIRCUIT and scope.startswith("class/")
        }
        cluster_wide = any(b.gate is Gate.SHORT_CIRCUIT and scope == "cluster" for scope, b in result.tripped)
        self._set(
            "short_circuit",
            {
                (c, cls.name): 1 if cluster_wide or cls.name in tripped_classes else 0
                for cls in self.policy.classes
            },
        )
        self.metrics.leader.labels(cluster=c).set(1 if acting and self.fence is not None else 0)
        synced = self.cache.synced_at
        if synced is not None:
            self.metrics.watch_last_sync.labels(cluster=c).set(synced)

    # ------------------------------------------------------------------ /status

    def status(self) -> dict[str, object]:
        last = self.last
        doc: dict[str, object] = {
            "synced_at": self.cache.synced_at,
            "reachable": self.cache.reachable,
            "leader": self.leading and self.fence is not None,
            "dry_run": self.dry_run,
            "paused": self._pause.reason if self._pause else None,
            "workers": self.executor.worker_count,
        }
        if last is None:
            return doc
        doc["planned_at"] = last.at
        doc["next_wakeup"] = last.plan.next_wakeup
        doc["tripped"] = [_blocked_doc(b, scope=scope) for scope, b in last.plan.tripped]
        doc["counts"] = {f"{cls}/{health}": n for (cls, health), n in last.plan.counts.items()}
        doc["nodes"] = [
            {
                "node": r.node,
                "class": r.cls,
                "health": str(r.health.state),
                "reasons": list(r.health.reasons),
                "decision": str(r.decision) if r.decision else None,
                "blocked": _blocked_doc(r.blocked) if r.blocked else None,
                "record": _record_doc(last.records.get(r.node) or r.record),
                "note": r.note,
            }
            for r in last.plan.reports
        ]
        return doc


def _blocked_doc(blocked: Blocked, *, scope: str | None = None) -> dict[str, object]:
    doc: dict[str, object] = {"gate": str(blocked.gate), "reason": blocked.reason, "until": blocked.until}
    if scope is not None:
        doc["scope"] = scope
    return doc


def _record_doc(rec: Record | None) -> dict[str, object] | None:
    if rec is None:
        return None
    return {
        "class": rec.cls,
        "step": rec.step,
        "action": str(rec.action),
        "phase": str(rec.phase),
        "attempt": rec.attempt,
        "started": rec.started,
        "deadline": rec.deadline,
        "reason": rec.reason,
        "instance_id": rec.instance_id,
        "operation_known": rec.operation_id is not None,
        "cordoned_by_us": rec.cordoned_by_us,
    }


def _log_decision(d: Decision, *, acting: bool, dry_run: bool) -> None:
    """The one canonical line per decision."""
    log.info(
        "decision",
        decision=str(d.kind),
        node=d.node,
        **{"class": d.cls},
        action=str(d.action) if d.action else None,
        step=d.step,
        reason=d.reason,
        gate=str(d.blocked.gate) if d.blocked else None,
        result=d.result,
        acting=acting,
        dry_run=dry_run,
    )


async def _wait_any(events: tuple[asyncio.Event, ...], timeout_s: float) -> None:
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
