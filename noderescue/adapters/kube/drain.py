"""Drain a node like ``kubectl drain``, with a diagnosis when it cannot finish.

Differences from kubectl: refusals (bare pods, emptyDir data) are an outcome naming the pods, not
an exception; a 429 is retried with a short growing backoff (kubectl waits a fixed 5 s) until the
deadline; a PDB-blocked or multi-PDB (500) pod is reported with the PodDisruptionBudgets that
match it, by name; deletion is awaited with one pod list per poll (kubectl GETs every pod).

The class's ``onTimeout`` is applied by the caller with ``apply_on_timeout`` below: the runtime
owns the record and decides when to write the failure; this module only uncordons.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue import failpoints
from noderescue.adapters.kube.cordon import uncordon
from noderescue.adapters.kube.errors import (
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from noderescue.adapters.kube.nodeview import parse_time
from noderescue.adapters.kube.transport import JsonObject, list_all, request_json
from noderescue.core.model import DrainPolicy, Selector, SelectorRequirement

log = structlog.get_logger(__name__)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_POLL_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    labels: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class DrainProgress:
    node: str
    total: int  # pods to evict
    remaining: int  # still on the node
    blocked: int  # last eviction attempt refused by a PDB (429) or a PDB misconfiguration (500)
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class DrainOutcome:
    node: str
    ok: bool  # every evictable pod is gone
    timed_out: bool = False
    refused: tuple[str, ...] = ()  # "ns/pod: why" — nothing was evicted when this is non-empty
    remaining: tuple[str, ...] = ()  # "ns/pod" still on the node at the end
    blocking_pdbs: tuple[str, ...] = ()  # "ns/pdb" that refused evictions of remaining pods
    abandoned: tuple[str, ...] = ()  # evicted, but stuck terminating on a dead kubelet: not waited for
    errors: tuple[str, ...] = ()  # "ns/pod: message" for evictions that failed for good
    evicted: int = 0
    skipped: int = 0  # DaemonSet, mirror, finished and terminating pods left alone
    elapsed_s: float = 0.0


ProgressCallback = Callable[[DrainProgress], None]


@dataclass(frozen=True, slots=True)
class _Plan:
    evict: tuple[PodRef, ...]
    refused: tuple[str, ...]
    skipped: int


def plan_pods(pods: Iterable[JsonObject], policy: DrainPolicy) -> _Plan:
    """Sort a node's pods into: evict, refuse (with why), skip. Pure."""
    evict: list[PodRef] = []
    refused: list[str] = []
    skipped = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ref = PodRef(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            labels=tuple(sorted((meta.get("labels") or {}).items())),
        )
        controller = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), None)
        if (
            (controller is not None and controller.get("kind") == "DaemonSet")
            or MIRROR_ANNOTATION in (meta.get("annotations") or {})
            or status.get("phase") in FINISHED_PHASES
            or meta.get("deletionTimestamp")
        ):
            skipped += 1
            continue
        reasons = []
        if controller is None and not policy.force_bare_pods:
            reasons.append("not managed by a controller (bare pod)")
        if not policy.delete_emptydir_data and any("emptyDir" in v for v in spec.get("volumes") or ()):
            reasons.append("uses emptyDir data")
        if reasons:
            refused.append(f"{ref}: {', '.join(reasons)}")
        else:
            evict.append(ref)
    return _Plan(tuple(evict), tuple(refused), skipped)


def selector_from_json(raw: object) -> Selector | None:
    """A LabelSelector object -> the core's Selector (None: malformed, matches nothing)."""
    if not isinstance(raw, dict):
        return None
    labels = raw.get("matchLabels") or {}
    expressions = []
    for expr in raw.get("matchExpressions") or ():
        operator = expr.get("operator")
        if operator not in _SELECTOR_OPERATORS or not isinstance(expr.get("key"), str):
            return None
        expressions.append(SelectorRequirement(expr["key"], operator, frozenset(expr.get("values") or ())))
    return Selector(tuple(sorted(labels.items())), tuple(expressions))


def node_pods_query(node_name: str) -> dict[str, str]:
    return {"fieldSelector": f"spec.nodeName={node_name}"}


@dataclass
class _DrainRun:
    api: ApiClient
    node: str
    policy: DrainPolicy
    deadline: float
    clock: Callable[[], float]
    poll_interval_s: float
    retry_max_s: float
    on_progress: ProgressCallback | None
    started: float
    evicting: dict[str, PodRef] = field(default_factory=dict)  # str(pod) -> pod still expected gone
    evicted: set[str] = field(default_factory=set)
    blocked_by: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pod -> PDB names
    errors: dict[str, str] = field(default_factory=dict)
    abandoned: set[str] = field(default_factory=set)  # terminating pods we stopped waiting for
    pdbs: dict[str, tuple[float, list[JsonObject]]] = field(default_factory=dict)  # ns -> (at, items)

    async def evict(self, pod: PodRef, semaphore: asyncio.Semaphore) -> None:
        key = str(pod)
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        delete_options: dict[str, Any] = {"preconditions": {"uid": pod.uid}} if pod.uid else {}
        if self.policy.grace_period_s is not None:
            delete_options["gracePeriodSeconds"] = self.policy.grace_period_s
        if delete_options:
            body["deleteOptions"] = delete_options
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
        delay = 0.25
        while self.clock() < self.deadline:
            try:
                async with semaphore:
                    await request_json(self.api, "POST", path, body=body)
            except NotFound:
                self.blocked_by.pop(key, None)
                return  # already gone
            except TooManyRequests as exc:
                if exc.retry_after is None:
                    # A PDB refused it (a PDB 429 carries no Retry-After): say which, then retry.
                    self.blocked_by[key] = await self._matching_pdbs(pod)
                    wait = delay
                else:  # the API server's own throttling: not the pod's fault
                    # A Retry-After of 0 must not turn into a tight loop against a throttling server.
                    wait = max(exc.retry_after, delay)
            except Unavailable as exc:
                if exc.status == 500:
                    # The API server refuses to evict a pod that several PDBs select (a
                    # misconfiguration that no wait fixes): name them. Other 500s are transient.
                    matching = await self._matching_pdbs(pod)
                    if len(matching) > 1:
                        self.blocked_by[key] = matching
                log.warning("drain_eviction_server_error", node=self.node, pod=key, error=str(exc))
                wait = delay
            except Conflict:
                return  # the uid precondition failed: our pod is gone, a namesake replaced it
            except (Forbidden, Invalid) as exc:
                self.errors[key] = exc.message
                log.error("drain_eviction_failed", node=self.node, pod=key, error=str(exc))
                return
            except KubeError as exc:
                log.warning("drain_eviction_retry", node=self.node, pod=key, error=str(exc))
                wait = delay
            else:
                self.blocked_by.pop(key, None)
                self.evicted.add(key)
                return
            delay = min(delay * 2, self.retry_max_s)
            await asyncio.sleep(max(0.0, min(wait, self.deadline - self.clock())))

    async def _matching_pdbs(self, pod: PodRef) -> tuple[str, ...]:
        cached = self.pdbs.get(pod.namespace)
        now = self.clock()
        if cached is None or now - cached[0] > 5.0:
            try:
                items, _ = await list_all(
                    self.api, f"/apis/policy/v1/namespaces/{pod.namespace}/poddisruptionbudgets"
                )
            except KubeError as exc:
                log.warning("drain_pdb_list_failed", node=self.node, namespace=pod.namespace, error=str(exc))
                items = cached[1] if cached else []
            cached = (now, items)
            self.pdbs[pod.namespace] = cached
        labels = dict(pod.labels)
        names = []
        for pdb in cached[1]:
            selector = selector_from_json((pdb.get("spec") or {}).get("selector"))
            if selector is not None and selector.matches(labels):
                names.append(f"{pod.namespace}/{(pdb.get('metadata') or {}).get('name')}")
        return tuple(sorted(names))

    def _abandoned(self, pod: JsonObject) -> bool:
        """A pod past its deletionTimestamp by skip_wait_for_delete_s: its kubelet is down and
        will never confirm the deletion, so waiting for it only burns the drain timeout."""
        limit = self.policy.skip_wait_for_delete_s
        meta = pod.get("metadata") or {}
        stamp = meta.get("deletionTimestamp")
        if limit is None or not isinstance(stamp, str):
            return False
        deleted_at = parse_time(stamp)
        if deleted_at is None or self.clock() - deleted_at < limit:
            return False
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if key in self.evicting and key not in self.abandoned:
            self.abandoned.add(key)
            log.warning("drain_skip_wait_for_delete", node=self.node, pod=key, deletion_timestamp=stamp)
        return True

    async def wait_gone(self, total: int) -> None:
        last: tuple[int, int] | None = None
        interval = self.poll_interval_s
        remaining = len(self.evicting)
        while True:
            try:
                items, _ = await list_all(self.api, "/api/v1/pods", query=node_pods_query(self.node))
            except (Unavailable, TooManyRequests) as exc:
                log.warning("drain_poll_failed", node=self.node, error=str(exc))
                await asyncio.sleep(self.poll_interval_s)
                continue
            present = {(p.get("metadata") or {}).get("uid") for p in items if not self._abandoned(p)}
            for key, pod in list(self.evicting.items()):
                if pod.uid not in present:
                    del self.evicting[key]
                    self.blocked_by.pop(key, None)
            progressed, remaining = len(self.evicting) < remaining, len(self.evicting)
            if self.on_progress is not None and last != (len(self.evicting), len(self.blocked_by)):
                last = (len(self.evicting), len(self.blocked_by))
                self.on_progress(
                    DrainProgress(
                        node=self.node,
                        total=total,
                        remaining=len(self.evicting),
                        blocked=len(self.blocked_by),
                        elapsed_s=self.clock() - self.started,
                    )
                )
            if not self.evicting.keys() - self.errors.keys():
                return
            # Poll fast while pods are leaving, back off to 1 s (kubectl's pace) while they don't.
            interval = self.poll_interval_s if progressed else min(interval * 1.5, _POLL_MAX_S)
            await asyncio.sleep(interval)


async def _list_node_pods(
    api: ApiClient,
    node_name: str,
    *,
    deadline: float,
    clock: Callable[[], float],
    retry_max_s: float,
) -> list[JsonObject]:
    """The node's pods, riding out transient errors and throttling until the drain's deadline
    (a drain should not fail on one 503, nor give up on a busy API server after a few tries)."""
    delay = 0.2
    while True:
        try:
            items, _ = await list_all(api, "/api/v1/pods", query=node_pods_query(node_name))
            return items
        except (Unavailable, TooManyRequests) as exc:
            retry_after = exc.retry_after if isinstance(exc, TooManyRequests) else None
            wait = max(retry_after or 0.0, delay)
            if clock() + wait >= deadline:
                raise
            log.warning("drain_list_retry", node=node_name, error=str(exc), retry_in_s=round(wait, 2))
            await asyncio.sleep(wait)
            delay = min(delay * 2, retry_max_s)


async def drain_node(
    api: ApiClient,
    node_name: str,
    policy: DrainPolicy,
    *,
    deadline: float,
    on_progress: ProgressCallback | None = None,
    concurrency: int = 32,
    poll_interval_s: float = 0.1,
    retry_max_s: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> DrainOutcome:
    """Evict the node's pods and wait until they are gone, or until ``deadline`` (epoch s).

    Does not cordon (the caller cordons first, so evicted pods don't come back here).
    Raises KubeError only when the node's pods cannot be listed at all. Failpoints
    ``kube.drain.before`` / ``.after`` frame the whole drain (its evictions are its mutations).
    """
    failpoints.hit("kube.drain.before")
    started = clock()
    pods = await _list_node_pods(api, node_name, deadline=deadline, clock=clock, retry_max_s=retry_max_s)
    plan = plan_pods(pods, policy)
    if plan.refused:
        log.warning("drain_refused", node=node_name, pods=list(plan.refused))
        failpoints.hit("kube.drain.after")
        return DrainOutcome(
            node=node_name, ok=False, refused=plan.refused, skipped=plan.skipped, elapsed_s=clock() - started
        )
    run = _DrainRun(
        api=api,
        node=node_name,
        policy=policy,
        deadline=deadline,
        clock=clock,
        poll_interval_s=poll_interval_s,
        retry_max_s=retry_max_s,
        on_progress=on_progress,
        started=started,
        evicting={str(p): p for p in plan.evict},
    )
    log.info("drain_started", node=node_name, pods=len(plan.evict), skipped=plan.skipped)
    semaphore = asyncio.Semaphore(concurrency)
    evictions = [asyncio.create_task(run.evict(pod, semaphore)) for pod in plan.evict]
    timed_out = False
    try:
        async with asyncio.timeout(max(0.0, deadline - clock())):
            await run.wait_gone(len(plan.evict))
    except TimeoutError:
        timed_out = True
    finally:
        for task in evictions:
            task.cancel()
        await asyncio.gather(*evictions, return_exceptions=True)
    remaining = tuple(sorted(run.evicting))
    blocking = tuple(sorted({pdb for key in remaining for pdb in run.blocked_by.get(key, ())}))
    outcome = DrainOutcome(
        node=node_name,
        ok=not remaining,
        timed_out=timed_out,
        remaining=remaining,
        blocking_pdbs=blocking,
        abandoned=tuple(sorted(run.abandoned)),
        errors=tuple(f"{k}: {m}" for k, m in sorted(run.errors.items()) if k in run.evicting),
        evicted=len(run.evicted),
        skipped=plan.skipped,
        elapsed_s=clock() - started,
    )
    log.info(
        "drain_finished",
        node=node_name,
        ok=outcome.ok,
        timed_out=timed_out,
        remaining=len(remaining),
        blocking_pdbs=list(blocking),
        elapsed_s=round(outcome.elapsed_s, 3),
    )
    failpoints.hit("kube.drain.after")
    return outcome


async def apply_on_timeout(
    api: ApiClient, node_name: str, policy: DrainPolicy, outcome: DrainOutcome, *, cordoned_by_us: bool
) -> Literal["proceed", "abort"]:
    """The class's ``onTimeout`` for an unfinished drain.

    ``proceed``: go on with the step. ``abort``: uncordon if we cordoned it; the caller records
    the step as failed. A refusal (nothing evicted) or a permanent eviction error always aborts:
    there is nothing a longer wait would change.
    """
    if outcome.ok:
        return "proceed"
    if outcome.timed_out and not outcome.refused and policy.on_timeout == "proceed":
        return "proceed"
    if cordoned_by_us:
        await uncordon(api, node_name)
    return "abort"
