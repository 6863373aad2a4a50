"""One read of a cluster, and the ``plan`` / ``status`` commands built on it (DESIGN §7).

``read_cluster`` lists Nodes and node Leases once (raw JSON through the kube adapter's transport,
parsed by orjson into the core's slim ``NodeView`` like the watch cache does), lists the
remediation records kept in noderescue's namespace (never the Node annotation, which a node can
write) and loads history and pause from the ``noderescue-state`` ConfigMap. It only ever sends
GET requests: ``plan`` promises operators a pass that changes nothing, and the emulator's audit
log proves it in the tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube import KubeError, RecordStore, make_api_client
from noderescue.adapters.kube.cache import NODE_LEASE_NAMESPACE
from noderescue.adapters.kube.nodeview import MalformedObject, lease_renew_from_json, node_view_from_json
from noderescue.adapters.kube.state import MalformedState, StateStore
from noderescue.adapters.kube.transport import list_all
from noderescue.config import ClusterSettings, Config
from noderescue.core import planner
from noderescue.core.model import History, NodeView, Pause, Plan, Record, Snapshot
from noderescue.runtime import render

NODES_PATH = "/api/v1/nodes"
DEFAULT_READ_TIMEOUT_S = 30.0
EXIT_OK = 0
EXIT_FAILURE = 1


@dataclass(frozen=True, slots=True)
class SkippedObject:
    """A Node, Lease or record object that could not be read; shown, never acted on."""

    kind: str  # "node" | "lease" | "record"
    name: str
    error: str


@dataclass(frozen=True, slots=True)
class ClusterRead:
    """Everything the planner needs about one cluster, read once at ``read_at``."""

    cluster: str
    snapshot: Snapshot
    records: Mapping[str, Record]
    history: History
    read_at: float
    skipped: tuple[SkippedObject, ...] = ()

    @property
    def pause(self) -> Pause | None:
        return self.snapshot.pause


class ClusterUnreachable(Exception):
    """The cluster could not be read; ``str()`` is the one line an operator sees."""

    def __init__(self, cluster: str, message: str) -> None:
        super().__init__(f"cluster {cluster} unreachable: {message}")
        self.cluster = cluster
        self.message = message


def _lease_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


async def read_cluster(
    api: ApiClient,
    *,
    cluster: str,
    namespace: str,
    lease_namespace: str = NODE_LEASE_NAMESPACE,
    clock: Callable[[], float] = time.time,
    page_size: int = 500,
) -> ClusterRead:
    """List Nodes, node Leases, records and the state ConfigMap once.

    Raises ``KubeError``/``MalformedState``."""
    store = StateStore(api, namespace)
    record_store = RecordStore(api, namespace, page_size=page_size)
    # Four independent reads side by side; the TaskGroup cancels the others when one fails, and
    # callers get that first failure itself, not an ExceptionGroup.
    try:
        async with asyncio.TaskGroup() as tasks:
            nodes_task = tasks.create_task(list_all(api, NODES_PATH, page_size=page_size))
            leases_task = tasks.create_task(list_all(api, _lease_path(lease_namespace), page_size=page_size))
            state_task = tasks.create_task(store.load())
            records_task = tasks.create_task(record_store.load())
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    raw_nodes, _ = nodes_task.result()
    raw_leases, _ = leases_task.result()
    history, pause = state_task.result()
    loaded = records_task.result()
    read_at = clock()

    skipped: list[SkippedObject] = [
        SkippedObject("record", name, error) for name, error in sorted(loaded.malformed.items())
    ]
    renew: dict[str, float | None] = {}
    for obj in raw_leases:
        try:
            name, renewed = lease_renew_from_json(obj)
        except MalformedObject as exc:
            skipped.append(SkippedObject("lease", _name_of(obj), str(exc)))
            continue
        renew[name] = renewed

    views: list[NodeView] = []
    records: dict[str, Record] = dict(loaded.records)
    for obj in raw_nodes:
        name = _name_of(obj)
        try:
            # first_seen=now: a one-shot reader has never seen the node before, so a rule whose
            # lastTransitionTime is missing reads as "matching since now" (pending), as the
            # daemon's first pass would.
            view = node_view_from_json(obj, first_seen=read_at, lease_renew=renew.get(name))
        except MalformedObject as exc:
            skipped.append(SkippedObject("node", name, str(exc)))
            continue
        views.append(view)
    views.sort(key=lambda v: v.name)
    snapshot = Snapshot(nodes=tuple(views), synced_at=read_at, reachable=True, pause=pause)
    return ClusterRead(cluster, snapshot, records, history, read_at, tuple(skipped))


def _name_of(obj: object) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else "?"


async def read_configured_cluster(
    settings: ClusterSettings, *, timeout_s: float = DEFAULT_READ_TIMEOUT_S
) -> ClusterRead:
    """Open a client from the cluster's settings, read it once, close the client.

    Raises ``ClusterUnreachable`` with a one-line message for every failure: an operator running
    ``plan`` wants to know which cluster and why, not a traceback.
    """
    try:
        async with asyncio.timeout(timeout_s):
            api = await make_api_client(settings.kubeconfig, settings.context, timeout_s=min(10.0, timeout_s))
            try:
                return await read_cluster(api, cluster=settings.name, namespace=settings.namespace)
            finally:
                await api.close()
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        raise ClusterUnreachable(settings.name, f"no answer within {timeout_s:g}s") from None
    except KubeError as exc:
        raise ClusterUnreachable(settings.name, _first_line(exc)) from None
    except MalformedState as exc:
        raise ClusterUnreachable(settings.name, f"state ConfigMap unreadable: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ------------------------------------------------------------------------------------------------
# The commands
# ------------------------------------------------------------------------------------------------


class UnknownCluster(LookupError):
    """``--cluster`` names no cluster of the configuration (a usage error: exit 2)."""


def selected_clusters(config: Config, name: str | None) -> tuple[ClusterSettings, ...]:
    """All clusters, or the one named (``UnknownCluster`` listing the known names otherwise)."""
    if name is None:
        return config.clusters
    for cluster in config.clusters:
        if cluster.name == name:
            return (cluster,)
    known = ", ".join(c.name for c in config.clusters)
    raise UnknownCluster(f"no cluster named {name!r} in the configuration (clusters: {known})")


async def _read_all(
    clusters: Sequence[ClusterSettings], timeout_s: float
) -> list[ClusterRead | ClusterUnreachable]:
    async def one(settings: ClusterSettings) -> ClusterRead | ClusterUnreachable:
        try:
            return await read_configured_cluster(settings, timeout_s=timeout_s)
        except ClusterUnreachable as exc:
            return exc
        except Exception as exc:  # a broken kubeconfig, a TLS file: still one line, per cluster
            return ClusterUnreachable(settings.name, f"{type(exc).__name__}: {_first_line(exc)}")

    return list(await asyncio.gather(*(one(c) for c in clusters)))


async def plan_clusters(
    config: Config, clusters: Sequence[ClusterSettings], *, timeout_s: float = DEFAULT_READ_TIMEOUT_S
) -> list[render.ClusterPlan]:
    """One read-only pass per cluster: the plan the daemon would make now."""
    results = await _read_all(clusters, timeout_s)
    out: list[render.ClusterPlan] = []
    for settings, result in zip(clusters, results, strict=True):
        if isinstance(result, ClusterUnreachable):
            out.append(render.ClusterPlan(settings.name, error=result.message))
            continue
        policy = config.policy(settings.name)
        plan: Plan = planner.plan(result.snapshot, result.records, result.history, policy, result.read_at)
        out.append(render.ClusterPlan(settings.name, read=_read_info(result), plan=plan, policy=policy))
    return out


def _read_info(read: ClusterRead) -> render.ReadInfo:
    return render.ReadInfo(
        read_at=read.read_at,
        nodes=len(read.snapshot.nodes),
        pause=read.pause,
        records=read.records,
        history=read.history,
        skipped=tuple((s.kind, s.name, s.error) for s in read.skipped),
    )


Renderer = Callable[[Sequence[render.ClusterPlan]], str]


def _run(
    config: Config,
    cluster: str | None,
    output: str | None,
    renderers: tuple[Renderer, Renderer],  # (json, table)
    out: TextIO,
    err: TextIO,
    timeout_s: float,
) -> int:
    clusters = selected_clusters(config, cluster)
    plans = asyncio.run(plan_clusters(config, clusters, timeout_s=timeout_s))
    as_json, as_table = renderers
    write_document((as_json if render.output_format(output, out) == "json" else as_table)(plans), out)
    report_errors(plans, err)
    return EXIT_FAILURE if any(p.error for p in plans) else EXIT_OK


def run_plan(
    config: Config,
    *,
    cluster: str | None,
    output: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> int:
    """``noderescue plan``: exit 0, or 1 when a cluster could not be read (others still shown).
    Raises ``UnknownCluster`` for a ``cluster`` the configuration does not name."""
    return _run(config, cluster, output, (render.plans_json, render.plans_table), out, err, timeout_s)


def run_status(
    config: Config,
    *,
    cluster: str | None,
    output: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> int:
    """``noderescue status``: records, parked nodes, pause, rate-limit usage, tripped gates;
    exit codes as ``run_plan``."""
    return _run(config, cluster, output, (render.status_json, render.status_table), out, err, timeout_s)


def write_document(text: str, out: TextIO) -> None:
    """Write the output; a reader that went away (``plan | head``) is not our failure."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        # Point the stream at /dev/null so the interpreter's exit-time flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())


def report_errors(plans: Sequence[render.ClusterPlan], err: TextIO) -> None:
    """One line per unreadable cluster on stderr (the document on stdout says it too)."""
    for plan in plans:
        if plan.error:
            print(f"noderescue: cluster {plan.cluster} unreachable: {plan.error}", file=err)
