"""Decisions -> steps: one serialized worker per node, crash-safe and fenced.

Every action is a sequence of steps. Before each mutating step the worker

1. writes the remediation record, in noderescue's own namespace (through the ``Ledger``), with
   the phase the step is about to enter, so a restarted daemon or a standby taking over knows
   where it stood; a cordon we made is remembered in ``cordoned_by_us``;
2. checks that it still holds the cluster's leader Lease (fencing: client-go gives none; the cloud
   layer checks it again right before each attempt of a mutating call);
3. re-checks the gates that can change under a running remediation (pause, stale view).

If 2 or 3 fail, the worker stops right there (``Halt``) and leaves the record: the next leader,
or this one once the gate opens, rolls it forward from the written phase.

At most once: every destructive cloud call has a durable intent (its name in ``Record.calls``)
written before it is made. A call whose intent is recorded is never made again in that step: with
its operation id known the operation is polled; without it (a crash, an ambiguous failure) the
outcome is verified by state, and the step deadline escalates when there is no proof. Only a
refusal (nothing ran: throttled past the deadline, a 4xx, the lease no longer held) withdraws the
intent so that the call may be made later.

Verification: a repair is finished by the planner when the node is healthy again, a reboot when
its bootID changed and it is healthy (both: the step deadline escalates). A replace is verified
here: a new Ready node of the class joins after the step started and is claimed durably (one new
node verifies one replace, ever), then the stale Node is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn, Protocol

import structlog
from structlog.contextvars import bound_contextvars

from noderescue.adapters.cloud import (
    AmbiguousOutcome,
    CloudError,
    DeadlineExceeded,
    Fenced,
    IdentityMismatch,
    Instance,
    InstanceNotFound,
    InstanceState,
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
    Target,
    UnsupportedProviderId,
)
from noderescue.adapters.kube import (
    DrainProgress,
    KubeActions,
    KubeError,
    NodeIdentityChanged,
    StaleRecord,
)
from noderescue.core.classes import ClassIndex
from noderescue.core.health import CompiledRules, classify
from noderescue.core.model import (
    DRAINING_ACTIONS,
    Action,
    Decision,
    DecisionKind,
    FinishResult,
    HealthState,
    History,
    HistoryEvent,
    NodeClass,
    NodeView,
    Phase,
    Policy,
    Record,
    Step,
)
from noderescue.core.records import ladder_hash
from noderescue.metrics import Metrics
from noderescue.runtime.announce import Announcer
from noderescue.runtime.ledger import Ledger

log = structlog.get_logger(__name__)

CORDONED_BY_US = "noderescue"
# Cloud errors that say "this is not the machine you think it is": a human must look.
_IDENTITY_ERRORS = (IdentityMismatch, NotAllowed, UnsupportedProviderId)


class Fence(Protocol):
    def holds_lease(self) -> bool: ...


class NodeSource(Protocol):
    """The watch cache as the executor reads it."""

    def get(self, name: str) -> NodeView | None: ...

    def snapshot(self) -> tuple[NodeView, ...]: ...


class GuardedCloud(Protocol):
    """The cloud as the executor uses it: ``adapters.cloud.GuardedProvider`` (identity-checked
    mutations), with the dry-run recorder inside it in dry-run."""

    async def act(self, kind: OperationKind, target: Target, command: str = "") -> Operation: ...

    async def resolve(self, provider_id: str) -> Instance: ...

    async def operation_status(self, op: Operation) -> OperationStatus: ...

    async def follow_up(self, op: Operation, call: str) -> Operation | None: ...

    async def instance_state(self, instance: Instance) -> InstanceState: ...


class NoElection:
    """The fence of a process that does not take part in leader election (dry-run, tests)."""

    def holds_lease(self) -> bool:
        return True


class SafetyCheck(Protocol):
    """Why acting is not safe right now (paused, stale view), or None. ``allow_paused``: the step
    only tells humans (a needs-human record), which a pause does not stop (DESIGN §4 gate 2)."""

    def __call__(self, *, allow_paused: bool = False) -> Awaitable[str | None]: ...


class Halt(Exception):
    """Stop at this safe point and leave the record for later (lease lost, paused, shutting down)."""


class GateHalt(Halt):
    """Halted by the lease or a gate (pause, stale view): nothing changes by retrying at once."""


class Held(GateHalt):
    """A gate of the remediation's scopes (stale view, pause, short-circuit, zone) tripped under
    it: the record says held and why, nothing further is done until the gate clears."""


class Judge(Protocol):
    """Re-judges the scopes of one node's remediation right now: why it must be held, or None."""

    def __call__(self, node: str) -> Awaitable[str | None]: ...


@dataclass(frozen=True, slots=True)
class ExecutorTimings:
    poll_interval_s: float = 1.0  # cloud operation status and replacement join checks
    retry_initial_s: float = 1.0  # after a transient error (API 5xx, cloud throttling past retries)
    retry_max_s: float = 30.0
    stop_grace_s: float = 30.0  # SIGTERM: how long the running steps get to reach a safe point
    # A worker halted by a gate is not restarted for this long: the planner keeps continuing
    # in-flight records while paused, and each worker's end wakes the loop (a busy loop otherwise).
    halted_retry_s: float = 5.0


class Executor:
    """Drives decisions of one cluster. ``submit`` never blocks; ``records`` holds the latest
    record each worker wrote (and, in dry-run, every record it would have written)."""

    def __init__(
        self,
        *,
        cluster: str,
        policy: Policy,
        kube: KubeActions,
        cloud: GuardedCloud | None,
        nodes: NodeSource,
        metrics: Metrics,
        fence: Fence | None = None,
        recheck: SafetyCheck | None = None,
        announcer: Announcer | None = None,
        dry_run: bool = False,
        timings: ExecutorTimings = ExecutorTimings(),
        on_worker_done: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.kube = kube
        self.cloud = cloud
        self.nodes = nodes
        self.metrics = metrics
        self.fence: Fence = fence or NoElection()
        self.recheck = recheck
        self.judge: Judge | None = None
        self.announce = announcer or Announcer(cluster, kube, (), dry_run=dry_run)
        self.dry_run = dry_run
        self.timings = timings
        self.on_worker_done = on_worker_done
        self.clock = clock
        self.classes = {c.name: c for c in policy.classes}
        self.class_index = ClassIndex(policy.classes)
        # The one owner of records, claims and admissions (shared with the reconciler).
        self.ledger = ledger if ledger is not None else Ledger(kube)
        # Dry-run writes no history to the cluster: remembered here so rate limits still count.
        self.history: list[HistoryEvent] = []
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._draining: set[str] = set()  # nodes whose worker is inside a drain
        self._halted: dict[str, float] = {}  # node -> when a halted or failed worker may retry
        self._escalations: dict[str, HistoryEvent] = {}  # node -> the history event its worker appends
        self._stopping = False
        self._stop_requested = asyncio.Event()  # wakes workers waiting to retry at SIGTERM

    # ------------------------------------------------------------------ the reconciler's side

    def busy(self, node: str) -> bool:
        return node in self._workers

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    def submit(self, decision: Decision, *, history: History) -> bool:
        """Start a worker for the decision unless the node has one already; True when started."""
        if self._stopping or decision.kind is DecisionKind.SKIP or decision.node in self._workers:
            return False
        if not _needs_worker(decision):
            return False
        retry_at = self._halted.get(decision.node)
        if retry_at is not None:
            if self.clock() < retry_at:
                return False
            del self._halted[decision.node]
        if decision.kind is DecisionKind.START:
            admitted = self._admission(decision, history)
            if admitted is None:
                return False
            decision = replace(decision, record=admitted)
        elif decision.kind is DecisionKind.ESCALATE and decision.action is not None:
            # The escalation's history event is taken now: its rate-limit slot is spoken for.
            event = HistoryEvent(self.clock(), decision.action, decision.node)
            self.ledger.expect_history(event)
            self._escalations[decision.node] = event
        task = asyncio.get_running_loop().create_task(
            self._work(decision, history), name=f"remediate {self.cluster}/{decision.node}"
        )
        self._workers[decision.node] = task
        node = decision.node
        task.add_done_callback(lambda _task: self._worker_ended(node))
        return True

    def _admission(self, decision: Decision, history: History) -> Record | None:
        """The record a START is about to write, put into the ledger before any I/O: from this
        instruction on, every pass counts it in flight and its rate-limit slot as taken."""
        node = self.nodes.get(decision.node)
        if node is None or decision.cls is None or decision.action is None or decision.step is None:
            return None
        cls = self.classes[decision.cls]
        now = self.clock()
        step = cls.ladder[decision.step]
        safety = self.policy.safety
        attempt = history.attempts_since(node.name, now - safety.max_attempts_per_s) + 1
        rec = Record(
            node=node.name,
            node_uid=node.uid,
            cls=cls.name,
            step=decision.step,
            action=decision.action,
            phase=Phase.STARTED,
            attempt=attempt,
            started=now,
            step_started=now,
            deadline=now + step.timeout_s if step.timeout_s is not None else None,
            reason=decision.reason,
            provider_id=node.provider_id,
            boot_id_before=node.boot_id,
            ladder_hash=ladder_hash(cls.ladder),
        )
        self.ledger.admit(rec, HistoryEvent(now, decision.action, node.name, attempt_start=True))
        return rec

    def _worker_ended(self, node: str) -> None:
        # An admission whose record never became durable: the remediation did not start.
        self.ledger.drop_admission(node)
        self._escalations.pop(node, None)
        self._workers.pop(node, None)
        if self.on_worker_done is not None:
            self.on_worker_done()

    def retry_at(self) -> float | None:
        """When the earliest halted or failed node may get a worker again (the loop wakes then)."""
        return min(self._halted.values(), default=None)

    def release_leftover_cordons(self, nodes: Sequence[NodeView]) -> None:
        """Never leave a cordon we made behind: a node whose ``cordoned-by`` annotation names us
        but that has no remediation record (a human deleted the record, a crash between steps of
        an older version, a human who uncordoned and cordoned again over our annotation) gets a
        worker that removes our cordon and our annotation. A node with a record, even a malformed
        one, is left to the plan: its state is unknown, not over."""
        if self._stopping:
            return
        for node in nodes:
            name = node.name
            if node.cordoned_by != CORDONED_BY_US or name in self._workers:
                continue
            if self.ledger.get(name) is not None or not self.ledger.loaded:
                continue
            if self.clock() < self._halted.get(name, 0.0):
                continue
            task = asyncio.get_running_loop().create_task(
                self._release_cordon(node), name=f"release-cordon {self.cluster}/{name}"
            )
            self._workers[name] = task
            task.add_done_callback(self._ended_callback(name))

    def _ended_callback(self, node: str) -> Callable[[asyncio.Task[None]], None]:
        return lambda _task: self._worker_ended(node)

    async def _release_cordon(self, node: NodeView) -> None:
        with bound_contextvars(
            cluster=self.cluster, node=node.name, action="uncordon", step="release", dry_run=self.dry_run
        ):
            if not self.fence.holds_lease():
                return
            if self.recheck is not None and (reason := await self.recheck()) is not None:
                log.info("leftover_cordon_kept", reason=reason)
                self._halted[node.name] = self.clock() + self.timings.halted_retry_s
                return
            try:
                released = await self.kube.uncordon(node.name)
            except KubeError as exc:
                log.warning("leftover_cordon_release_failed", error=str(exc))
                self._halted[node.name] = self.clock() + self.timings.halted_retry_s
                return
            if released:
                log.warning("leftover_cordon_released")
                await self.announce.event(
                    node.name,
                    node.uid,
                    "Uncordoned",
                    "released a cordon noderescue made: the node has no remediation record",
                )
            else:
                log.info("stale_cordon_annotation_removed")

    def forget_expired_halts(self) -> None:
        """At the start of a pass: a backoff that is over is no longer news. A node the plan no
        longer submits (gone, healthy, skipped) must not keep a wake-up in the past (busy loop)."""
        now = self.clock()
        for node in [node for node, at in self._halted.items() if at <= now]:
            del self._halted[node]

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no worker runs (``--once``); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._workers:
                    await asyncio.gather(*self._workers.values(), return_exceptions=True)
                return True
        return not self._workers

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop starting steps; give running steps ``grace_s`` to reach their safe point, then
        cancel them (their records say where they stood)."""
        self._stopping = True
        self._stop_requested.set()
        draining = [task for node, task in self._workers.items() if node in self._draining]
        for task in draining:
            task.cancel()
        await asyncio.gather(*draining, return_exceptions=True)
        grace = self.timings.stop_grace_s if grace_s is None else grace_s
        if not await self.wait_idle(grace):
            log.warning("workers_cancelled_at_shutdown", cluster=self.cluster, count=len(self._workers))
            await self.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel every worker now (leadership lost): each stops at an await, after its last
        written record."""
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ one worker

    async def _work(self, decision: Decision, history: History) -> None:
        cls = decision.cls or (decision.record.cls if decision.record else "")
        action = str(decision.action or (decision.record.action if decision.record else ""))
        context = {"class": cls}
        with bound_contextvars(
            cluster=self.cluster, node=decision.node, action=action, dry_run=self.dry_run, **context
        ):
            run = _Run(self, decision)
            try:
                await run.run(history)
            except GateHalt as exc:
                if not self._stopping:
                    self._halted[decision.node] = self.clock() + self.timings.halted_retry_s
                log.info("remediation_halted", reason=str(exc), step="halt")
            except Halt as exc:
                log.info("remediation_halted", reason=str(exc), step="halt")
            except (StaleRecord, NodeIdentityChanged) as exc:
                log.warning("remediation_abandoned", reason=str(exc), step="record")
            except asyncio.CancelledError:
                log.info("remediation_cancelled", step="cancel")
                raise
            except Exception:
                # A bug or an answer we did not expect fails the same way again at once: back off
                # like a halted worker instead of restarting it on every pass.
                self._halted[decision.node] = self.clock() + self.timings.halted_retry_s
                log.exception("remediation_worker_failed", step="error")


def _needs_worker(decision: Decision) -> bool:
    rec = decision.record
    if decision.kind is DecisionKind.HOLD:
        return rec is not None and rec.held is None  # say held once; nothing else to do
    if decision.kind is DecisionKind.CONTINUE and rec is not None:
        # A repair or reboot in VERIFYING waits for the planner (healthy / bootID changed): no
        # worker needed. A replace is verified by a worker; everything else has steps left.
        return not (rec.phase is Phase.VERIFYING and rec.action in (Action.REPAIR, Action.REBOOT))
    return True


class _Run:
    """The state of one worker: the decision, the record as last written, the node class."""

    def __init__(self, ex: Executor, decision: Decision) -> None:
        self.ex = ex
        self.decision = decision
        self.node = decision.node
        self.rec: Record | None = decision.record

    # -------------------------------------------------------------- helpers

    def node_view(self) -> NodeView | None:
        return self.ex.nodes.get(self.node)

    def node_class(self, rec: Record) -> NodeClass | None:
        return self.ex.classes.get(rec.cls)

    def check_stopping(self, step: str) -> None:
        """Waits (operation polls, joins) are safe points too: SIGTERM must not sit them out."""
        if self.ex._stopping:
            raise Halt(f"shutting down during {step}")

    async def guard(self, step: str, *, allow_paused: bool = False) -> None:
        """Fencing and the gates that can change: right before every mutating step."""
        self.check_stopping(step)
        if not self.ex.fence.holds_lease():
            raise GateHalt(f"leader lease not held before {step}")
        if self.ex.recheck is not None:
            reason = await self.ex.recheck(allow_paused=allow_paused)
            if reason is not None:
                raise GateHalt(f"{reason} (before {step})")

    async def judged(self, rec: Record, step: str) -> Record:
        """Before a step that touches the machine or its pods (drain, a destructive cloud call):
        the remediation's scopes are re-judged now. A tripped gate holds it (``Held``); a hold
        that is over moves the step deadline out by the time held."""
        await self.guard(step)
        reason = await self.ex.judge(self.node) if self.ex.judge is not None else None
        if reason is not None:
            await self.hold(rec, reason, step)
        if rec.held is not None:
            now = self.ex.clock()
            log.info("remediation_unheld", step=step, held_s=round(now - (rec.held_since or now), 3))
            rec = await self.write(
                replace(rec, held=None, held_since=None, deadline=rec.effective_deadline(now)), "unhold"
            )
        return rec

    async def hold(self, rec: Record, reason: str, step: str) -> NoReturn:
        if rec.held is None:
            held = replace(rec, held=reason, held_since=self.ex.clock())
            with contextlib.suppress(Halt, KubeError):
                # No gate re-check here: the gate that holds it may be the stale view itself.
                await self.ex.ledger.put(held)
                self.rec = rec = held
                log.warning("remediation_held", step=step, reason=reason)
                await self.event(
                    rec, "RemediationHeld", f"held before {step}: {reason}", warning=True, once=True
                )
        raise Held(f"held before {step}: {reason}")

    def within_deadline(self, rec: Record, step: str) -> None:
        """No new cordon, drain or cloud call after the step timed out: the planner escalates."""
        if rec.deadline is not None and self.ex.clock() >= rec.deadline:
            raise Halt(f"step deadline passed before {step}")

    async def write(self, rec: Record, step: str, *, allow_paused: bool = False) -> Record:
        """The record, durable in noderescue's namespace before the step it names runs."""
        await self.guard(step, allow_paused=allow_paused)
        await self.ex.ledger.put(rec)
        self.rec = rec
        return rec

    async def event(
        self, rec: Record, reason: str, message: str, *, warning: bool = False, once: bool = False
    ) -> None:
        """``once``: this remediation tells it at most once, even when a crash makes the daemon
        finish it twice (keyed by the remediation's node uid, attempt and step)."""
        key = None
        if once:
            key = f"{reason}/{rec.node_uid}/{rec.attempt}/{rec.started}/{rec.step}/{rec.held_since}"
        await self.ex.announce.event(
            self.node, rec.node_uid, reason, message, type_="Warning" if warning else "Normal", once_key=key
        )

    # -------------------------------------------------------------- entry

    async def run(self, history: History) -> None:
        d = self.decision
        if d.kind is DecisionKind.START:
            await self.start(history)
        elif d.kind is DecisionKind.ESCALATE:
            await self.escalate()
        elif d.kind is DecisionKind.CONTINUE:
            assert d.record is not None
            log.info("remediation_resumed", phase=str(d.record.phase), step=str(d.record.phase))
            await self.drive_with_retries(d.record)
        elif d.kind is DecisionKind.HOLD:
            assert d.record is not None
            await self.hold(d.record, d.blocked.reason if d.blocked else d.reason, "next step")
        elif d.kind is DecisionKind.NEEDS_HUMAN:
            await self.park(d.record, d.reason)
        elif d.kind is DecisionKind.FINISH:
            assert d.record is not None
            await self.finish(d.record, d.result or "failed", d.reason)

    async def start(self, history: History) -> None:
        d = self.decision
        rec = d.record  # admitted by ``Executor.submit`` before this task existed
        assert d.cls is not None and d.action is not None and d.step is not None and rec is not None
        cls = self.ex.classes[d.cls]
        # History first: an attempt that crashed before its record counts against rate limits
        # (conservative) rather than being forgotten.
        event = HistoryEvent(rec.started, d.action, rec.node, attempt_start=True)
        await self.append_history(event, step="history")
        rec = await self.write(rec, "record")
        log.info("remediation_started", step="start", reason=d.reason, attempt=rec.attempt)
        await self.event(
            rec, "RemediationStarted", f"{d.action} (step {d.step + 1} of class {cls.name}): {d.reason}"
        )
        self.ex.announce.notify(
            "started", f"{d.action}: {d.reason}", node=rec.node, cls=cls.name, action=str(d.action)
        )
        await self.drive_with_retries(rec)

    async def escalate(self) -> None:
        d = self.decision
        old = d.record
        assert old is not None and d.action is not None and d.step is not None
        cls = self.node_class(old)
        node = self.node_view()
        if cls is None or node is None:
            return
        event = self.ex._escalations.get(self.node) or HistoryEvent(self.ex.clock(), d.action, node.name)
        now = event.ts
        step = cls.ladder[d.step]
        rec = replace(
            old,
            step=d.step,
            action=d.action,
            phase=Phase.STARTED,
            step_started=now,
            deadline=now + step.timeout_s if step.timeout_s is not None else None,
            reason=d.reason,
            operation_id=None,
            calls=(),  # a new step: no call of it has been made yet
            boot_id_before=node.boot_id,
            provider_id=node.provider_id,
        )
        await self.append_history(event, step="history")
        rec = await self.write(rec, "record")
        log.info("remediation_escalated", step="escalate", reason=d.reason)
        await self.event(rec, "Escalated", d.reason, warning=True)
        self.count(old, "escalated", over=False)
        await self.drive_with_retries(rec)

    async def append_history(self, event: HistoryEvent, *, step: str) -> None:
        await self.guard(step)
        keep_after = event.ts - longest_window(self.ex.policy)
        await self.ex.kube.append_history([event], keep_after=keep_after)
        if self.ex.dry_run:
            # Compacted like the state ConfigMap, so a long dry run does not grow without bound.
            self.ex.history[:] = [e for e in self.ex.history if e.ts > keep_after]
            self.ex.history.append(event)

    # -------------------------------------------------------------- the steps

    async def drive_with_retries(self, rec: Record) -> None:
        """Roll ``rec`` forward from its phase; transient failures are retried with backoff until
        the step's deadline (then the planner escalates)."""
        delay = self.ex.timings.retry_initial_s
        while True:
            try:
                await self.drive(self.rec or rec)
                return
            except _IDENTITY_ERRORS as exc:
                await self.identity_refused(self.rec or rec, exc)
                return
            except RequestRejected as exc:
                await self.fail(self.rec or rec, f"the cloud refused the request: {exc}")
                return
            except InstanceNotFound as exc:
                # Gone already (a terminate whose operation id was not recorded, a spot reclaim,
                # a human): retrying cannot help. A replace has nothing left to terminate and goes
                # on to verify its replacement; a repair or reboot failed (the planner escalates).
                current = self.rec or rec
                if current.action is not Action.REPLACE:
                    await self.fail(current, f"the instance no longer exists: {exc}")
                    return
                log.warning("instance_already_gone", step="act", reason=str(exc))
                await self.write(replace(current, phase=Phase.VERIFYING), "verify")
                continue
            except (KubeError, CloudError, TimeoutError) as exc:
                current = self.rec or rec
                remaining = (current.deadline - self.ex.clock()) if current.deadline else delay
                log.warning(
                    "remediation_step_retry",
                    step=str(current.phase),
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=round(delay, 3),
                )
                if remaining <= 0:
                    return
                # A worker waiting to retry is at a safe point: SIGTERM must not wait it out.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, remaining)):
                        await self.ex._stop_requested.wait()
                self.check_stopping("retry")
                delay = min(delay * 2, self.ex.timings.retry_max_s)

    async def drive(self, rec: Record) -> None:
        if rec.action is Action.NOTIFY:
            await self.park(rec, rec.reason)
            return
        cls = self.node_class(rec)
        if cls is None:
            return
        if rec.action in DRAINING_ACTIONS and rec.phase in (Phase.STARTED, Phase.CORDONED, Phase.DRAINING):
            drained = await self.cordon_and_drain(rec, cls)
            if drained is None:
                return
            rec = drained
        if rec.phase in (Phase.STARTED, Phase.CORDONED, Phase.DRAINING, Phase.ACTING):
            acted = await self.act(rec, cls)
            if acted is None:
                return
            rec = acted
        if rec.phase is Phase.VERIFYING and rec.action is Action.REPLACE:
            await self.verify_replacement(rec, cls)

    async def cordon_and_drain(self, rec: Record, cls: NodeClass) -> Record | None:
        node = self.node_view()
        if node is None or node.uid != rec.node_uid:
            return rec  # nothing left to cordon; the act step's identity guard decides
        if rec.phase is Phase.STARTED:
            rec = await self.write(replace(rec, phase=Phase.CORDONED), "cordon")
        self.within_deadline(rec, "cordon")
        await self.guard("cordon")
        ours = await self.ex.kube.cordon(self.node)
        if ours and not rec.cordoned_by_us:
            await self.event(rec, "Cordoned", "cordoned by noderescue")
        elif not ours:
            log.info("node_cordoned_by_someone_else", step="cordon")
        rec = await self.write(
            replace(rec, phase=Phase.DRAINING, cordoned_by_us=rec.cordoned_by_us or ours), "drain"
        )
        if cls.drain.skip:
            log.info("drain_skipped", step="drain")
            return await self.drained(rec)
        rec = await self.judged(rec, "drain")
        await self.event(rec, "DrainStarted", f"draining (timeout {cls.drain.timeout_s:g}s)")
        self.within_deadline(rec, "drain")
        deadline = self.ex.clock() + cls.drain.timeout_s
        if rec.deadline is not None:
            deadline = min(deadline, rec.deadline)  # the step's timeout covers its drain too

        def progress(p: DrainProgress) -> None:
            log.info(
                "drain_progress",
                step="drain",
                total=p.total,
                remaining=p.remaining,
                blocked=p.blocked,
                elapsed_s=round(p.elapsed_s, 2),
            )

        # A drain is a wait (evictions are idempotent): on SIGTERM it is cut short at once and
        # resumed from the DRAINING record by the next start.
        self.ex._draining.add(self.node)
        try:
            outcome = await self.ex.kube.drain(self.node, cls.drain, deadline=deadline, on_progress=progress)
        finally:
            self.ex._draining.discard(self.node)
        if outcome.ok:
            stuck = (
                f"; {len(outcome.abandoned)} stuck terminating on an unresponsive kubelet, not waited for"
                if outcome.abandoned
                else ""
            )
            await self.event(
                rec,
                "DrainSucceeded",
                f"evicted {outcome.evicted} pods in {outcome.elapsed_s:.1f}s{stuck}",
            )
            return await self.drained(rec)
        why = _drain_problem(outcome.refused, outcome.remaining, outcome.blocking_pdbs, outcome.errors)
        proceed = outcome.timed_out and not outcome.refused and cls.drain.on_timeout == "proceed"
        await self.event(
            rec,
            "DrainTimedOut",
            f"drain did not finish: {why}; onTimeout {'proceed' if proceed else 'abort'}",
            warning=True,
        )
        if proceed:
            return await self.drained(rec)
        if rec.cordoned_by_us:
            await self.guard("uncordon")
            if await self.ex.kube.uncordon(self.node):
                await self.event(rec, "Uncordoned", "drain aborted: uncordoned")
        await self.write(
            replace(rec, phase=Phase.FAILED, cordoned_by_us=False, reason=f"drain aborted: {why}"), "fail"
        )
        log.warning("drain_aborted", step="drain", reason=why)
        return None

    async def drained(self, rec: Record) -> Record:
        """The drain is behind us: say so durably, so a retry or restart does not drain again."""
        return await self.write(replace(rec, phase=Phase.ACTING), "act")

    async def act(self, rec: Record, cls: NodeClass) -> Record | None:
        """The step's destructive cloud call, at most once.

        Its intent (the call's name in ``Record.calls``) is durable before the call is made. A
        recorded operation id is polled, never repeated. An intent without an operation id means
        the call may have gone out (a crash, a lost answer): the outcome is verified by state
        (replacement joining, bootID, health) until the step's deadline, never sent again.
        """
        cloud = self.ex.cloud
        if cloud is None:
            await self.park(rec, f"no cloud provider for {rec.action}")
            return None
        call = str(rec.action)
        if rec.operation_id is not None:
            try:
                op = Operation.from_str(rec.operation_id)
            except ValueError as exc:
                # The call was made (its id is recorded) but cannot be followed: never repeat it.
                await self.park(
                    rec, f"the recorded {rec.action} operation cannot be read ({exc}); not repeating it"
                )
                return None
            if rec.instance_id is not None and op.instance_id != rec.instance_id:
                await self.park(
                    rec,
                    f"the recorded {rec.action} operation names instance {op.instance_id}, "
                    f"the record {rec.instance_id}; not following it",
                )
                return None
            log.info("cloud_operation_resumed", step="act", operation=op.id)
        elif rec.sent(call):
            return await self.unproven(rec, call)
        else:
            if rec.provider_id is None:
                await self.park(rec, "the node has no providerID")
                return None
            instance_id = rec.instance_id or (await cloud.resolve(rec.provider_id)).id
            rec = await self.judged(rec, "act")
            self.within_deadline(rec, "act")
            # The intent, durable before the call (the write re-checks the lease and the gates
            # first): from here on the call is never sent again.
            rec = await self.write(
                replace(rec, phase=Phase.ACTING, instance_id=instance_id, calls=(*rec.calls, call)), "act"
            )
            target = Target(rec.node, rec.node_uid, rec.provider_id or "", instance_id)
            try:
                op = await cloud.act(OperationKind(call), target, (self.step_of(rec, cls).command or ""))
            except AmbiguousOutcome as exc:
                log.warning("cloud_action_ambiguous", step="act", instance=instance_id, error=str(exc))
                if exc.operation is None:
                    return await self.unproven(rec, call)
                # The cloud gave us a way to follow it by state (the instance, the VM): poll that.
                op = exc.operation
            except (RequestRejected, DeadlineExceeded, Fenced, *_IDENTITY_ERRORS) as exc:
                # A refusal: nothing ran. Withdraw the intent so a retry may send it (a crash
                # before this write leaves it in place: then the step waits for proof and
                # escalates, which is safe).
                await self.withdraw(rec, call, exc)
                raise
            else:
                await self.event(
                    rec, _ACT_REASON[rec.action], f"{rec.action} of instance {instance_id}: operation {op.id}"
                )
            rec = await self.write(replace(rec, operation_id=op.to_str()), "act")
            log.info("cloud_action_requested", step="act", instance=instance_id, operation=op.id)
        status = await self.wait_operation(op, rec)
        if status is None:
            return None  # deadline passed while pending: the planner escalates
        if status.state is OperationState.FAILED:
            await self.fail(rec, f"{rec.action} operation failed: {status.detail}")
            return None
        if status.follow_up == "capacity":
            return await self.restore_capacity(rec, op)
        return await self.write(replace(rec, phase=Phase.VERIFYING), "verify")

    async def restore_capacity(self, rec: Record, deleted: Operation) -> Record | None:
        """A scale set VM was deleted: its capacity is given back once, with its own intent."""
        cloud = self.ex.cloud
        assert cloud is not None
        if rec.sent("capacity"):
            return await self.unproven(rec, "capacity")
        rec = await self.judged(rec, "capacity")
        self.within_deadline(rec, "capacity")
        rec = await self.write(replace(rec, calls=(*rec.calls, "capacity")), "capacity")
        try:
            op = await cloud.follow_up(deleted, "capacity")
        except AmbiguousOutcome as exc:
            log.warning("cloud_action_ambiguous", step="capacity", error=str(exc))
            return await self.unproven(rec, "capacity")
        except (RequestRejected, DeadlineExceeded, Fenced) as exc:
            await self.withdraw(rec, "capacity", exc)
            raise
        if op is None:
            return await self.write(replace(rec, phase=Phase.VERIFYING), "verify")
        rec = await self.write(replace(rec, operation_id=op.to_str()), "capacity")
        status = await self.wait_operation(op, rec)
        if status is None:
            return None
        if status.state is OperationState.FAILED:
            await self.fail(rec, f"capacity restore failed: {status.detail}")
            return None
        return await self.write(replace(rec, phase=Phase.VERIFYING), "verify")

    async def withdraw(self, rec: Record, call: str, exc: Exception) -> None:
        log.info("cloud_action_refused", step="act", call=call, error=str(exc))
        with contextlib.suppress(Halt, KubeError):
            await self.write(replace(rec, calls=(*rec.calls, f"!{call}")), "withdraw")

    async def unproven(self, rec: Record, call: str) -> Record | None:
        """The call may have gone out and its answer is unknown: verify by state, never re-send.
        Verification is what the VERIFYING phase does anyway (a replacement joining, a changed
        bootID, health back); without proof the step deadline escalates."""
        log.info("cloud_action_unproven", step="act", call=call)
        return await self.write(replace(rec, phase=Phase.VERIFYING), "verify")

    def step_of(self, rec: Record, cls: NodeClass) -> Step:
        return cls.ladder[min(rec.step, len(cls.ladder) - 1)]

    async def wait_operation(self, op: Operation, rec: Record) -> OperationStatus | None:
        cloud = self.ex.cloud
        assert cloud is not None
        while True:
            status = await cloud.operation_status(op)
            if status.done:
                log.info("cloud_operation_done", step="act", state=str(status.state), detail=status.detail)
                return status
            now = self.ex.clock()
            if rec.deadline is not None and now >= rec.deadline:
                return None
            self.check_stopping("act")
            wait = status.retry_after_s or self.ex.timings.poll_interval_s
            await asyncio.sleep(max(0.0, min(wait, (rec.deadline or now + wait) - now)))

    async def verify_replacement(self, rec: Record, cls: NodeClass) -> None:
        """A new Ready node of the class joined after the step started -> delete the stale Node."""
        log.info("replacement_waiting", step="verify")
        rules = CompiledRules.of(cls)
        while True:
            old = self.node_view()
            if old is not None and self.reimaged(rec, old, rules):
                # VMSS reimage: the same Node came back from a fresh OS disk; it is the replacement.
                await self.event(
                    rec, "ReplacementJoined", f"reimaged in place: bootID {old.boot_id}, healthy"
                )
                log.info("replacement_joined", step="verify", replacement=old.name, in_place=True)
                await self.finish(rec, "succeeded", "reimaged in place")
                return
            joined = await self.replacement(rec, cls, rules)
            if joined is not None:
                break
            if rec.deadline is not None and self.ex.clock() >= rec.deadline:
                log.warning("replacement_not_joined", step="verify")
                if self.node_view() is not None:
                    await self.fail(rec, "no replacement node joined within the step timeout")
                return
            self.check_stopping("verify")
            await asyncio.sleep(self.ex.timings.poll_interval_s)
        await self.event(rec, "ReplacementJoined", f"replacement node {joined.name} joined and is Ready")
        log.info("replacement_joined", step="verify", replacement=joined.name)
        old = self.node_view()
        if old is not None and old.uid == rec.node_uid:
            await self.guard("delete-node")
            await self.ex.kube.delete_node(self.node, expected_uid=rec.node_uid)
            log.info("stale_node_deleted", step="verify")
        await self.close(rec, "succeeded", f"replaced by {joined.name}", node_gone=True)

    def reimaged(self, rec: Record, node: NodeView, rules: CompiledRules) -> bool:
        return (
            node.uid == rec.node_uid
            and rec.boot_id_before is not None
            and node.boot_id is not None
            and node.boot_id != rec.boot_id_before
            and classify(node, rules, self.ex.clock()).state is HealthState.HEALTHY
        )

    async def replacement(self, rec: Record, cls: NodeClass, rules: CompiledRules) -> NodeView | None:
        """A node of the class, created after the step started, Ready and healthy, and not the
        replacement of another node already. The claim is durable (one object per new node in
        our namespace, created once): a new node verifies at most one replace, ever, across
        restarts and failovers."""
        now = self.ex.clock()
        ledger = self.ex.ledger
        for node in self.ex.nodes.snapshot():
            if node.uid == rec.node_uid or not node.ready:
                continue
            holder = ledger.claim_holder(node.uid)
            if holder is not None and holder != self.node:
                continue
            if classify(node, rules, now).state is not HealthState.HEALTHY:
                continue
            born = node.created if node.created is not None else node.first_seen
            if born is None or born < rec.step_started:
                continue
            found = self.ex.class_index.lookup_node(node)
            if found is None or found.name != cls.name:
                continue
            await self.guard("claim")
            if await ledger.claim(node.uid, node.name, self.node):
                return node
        return None

    # -------------------------------------------------------------- endings

    async def fail(self, rec: Record, reason: str) -> None:
        """This step failed: record FAILED; the planner escalates (or parks) on the next pass."""
        log.warning("remediation_step_failed", step=str(rec.phase), reason=reason)
        await self.write(replace(rec, phase=Phase.FAILED, reason=reason), "fail")

    async def identity_refused(self, rec: Record, exc: Exception) -> None:
        log.error("identity_guard_refused", step="act", reason=str(exc))
        await self.park(rec, f"identity guard refused {rec.action}: {exc}")

    async def park(self, rec: Record | None, reason: str) -> None:
        """needs-human: the record says so (no repeated notifications), humans are told once."""
        node = self.node_view()
        d = self.decision
        if rec is None:
            if node is None or d.cls is None:
                return
            now = self.ex.clock()
            rec = Record(
                node=node.name,
                node_uid=node.uid,
                cls=d.cls,
                step=d.step or 0,
                action=Action.NOTIFY,
                phase=Phase.NEEDS_HUMAN,
                attempt=1,
                started=now,
                step_started=now,
                deadline=None,
                reason=reason,
                provider_id=node.provider_id,
            )
            was_in_flight = False
        else:
            was_in_flight = rec.in_flight
            rec = replace(rec, phase=Phase.NEEDS_HUMAN, reason=reason, deadline=None)
        await self.write(rec, "needs-human", allow_paused=True)
        log.warning("remediation_needs_human", step="needs-human", reason=reason)
        await self.event(rec, "NeedsHuman", reason, warning=True)
        self.ex.announce.notify("needsHuman", reason, node=self.node, cls=rec.cls, action=str(rec.action))
        if was_in_flight:
            self.count(rec, "failed")

    async def finish(self, rec: Record, result: FinishResult, reason: str) -> None:
        node = self.node_view()
        if node is not None and node.uid == rec.node_uid:
            if rec.action is Action.REBOOT and result == "succeeded":
                await self.event(
                    rec,
                    "RebootVerified",
                    f"bootID changed ({rec.boot_id_before} -> {node.boot_id}) and Ready",
                )
            # Released to a human (excluded mid-remediation): the node stays exactly as it is,
            # our cordon included; it is theirs now.
            if result != "released" and (rec.cordoned_by_us or node.cordoned_by == CORDONED_BY_US):
                await self.guard("uncordon")
                if await self.ex.kube.uncordon(self.node):
                    await self.event(rec, "Uncordoned", "remediation over: uncordoned")
        await self.close(rec, result, reason, node_gone=node is None)

    async def close(self, rec: Record, result: FinishResult, reason: str, *, node_gone: bool) -> None:
        node = self.node_view()
        success = result in ("succeeded", "recovered")
        await self.guard("clear-record", allow_paused=True)
        # Told before the record goes (a crash in between finishes it again; the Event is keyed
        # so that it is posted once), so the end of a remediation is never lost.
        await self.event(
            rec,
            "RemediationSucceeded" if success else "RemediationFailed",
            f"{rec.action} {result}: {reason}",
            warning=not success,
            once=True,
        )
        await self.ex.ledger.close(rec, node_uid=None if node_gone or node is None else node.uid)
        self.rec = None
        log.info("remediation_finished", step="finish", result=result, reason=reason)
        self.ex.announce.notify(
            "succeeded" if success else "failed",
            f"{rec.action} {result}: {reason}",
            node=self.node,
            cls=rec.cls,
            action=str(rec.action),
        )
        if rec.phase is not Phase.NEEDS_HUMAN:  # a parked record was counted when it was parked
            self.count(rec, result)

    def count(self, rec: Record, result: str, *, over: bool = True) -> None:
        """One finished step in ``remediations_total``; the duration once the remediation is over."""
        labels = {"cluster": self.ex.cluster, "class": rec.cls, "action": str(rec.action)}
        self.ex.metrics.remediations.labels(result=result, **labels).inc()
        if over:
            elapsed = max(0.0, self.ex.clock() - rec.started)
            self.ex.metrics.remediation_duration.labels(**labels).observe(elapsed)


_ACT_REASON = {
    Action.REPAIR: "RepairCommandSent",
    Action.REBOOT: "RebootIssued",
    Action.REPLACE: "ReplacementRequested",
}


def longest_window(policy: Policy) -> float:
    safety = policy.safety
    return max([safety.max_attempts_per_s, *(limit.per_s for limit in safety.rate_limits)])


def _drain_problem(
    refused: Sequence[str], remaining: Sequence[str], pdbs: Sequence[str], errors: Sequence[str]
) -> str:
    if refused:
        return "refused: " + "; ".join(refused[:5])
    parts = [f"{len(remaining)} pods left ({', '.join(remaining[:5])})"]
    if pdbs:
        parts.append("blocked by PodDisruptionBudgets " + ", ".join(pdbs))
    if errors:
        parts.append("errors: " + "; ".join(errors[:3]))
    return ", ".join(parts)
