"""The emulated cluster's workload controllers: ReplicaSet-like workloads that recreate evicted
or deleted pods on schedulable Ready nodes, DaemonSets with a pod on every node, a scheduler
that binds pending pods, and the disruption controller that keeps PDB status right.

They react to API writes through the store's write hook, never by polling, and index what
they need (pods per node, pending pods, schedulability per node) so that 100k-node clusters
stay cheap. Runs on the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from noderescue.sim import manifests
from noderescue.sim.kubeapi.disruption import live_pdb_status
from noderescue.sim.kubeapi.resources import DAEMONSETS, NAMESPACES, NODES, PDBS, PODS, REPLICASETS
from noderescue.sim.kubeapi.store import Store, StoredEvent
from noderescue.sim.kubeapi.timestamps import rfc3339
from noderescue.sim.node_state import NodeState, node_ip, pod_ip
from noderescue.sim.timers import Timer

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet


@dataclass(slots=True)
class Workload:
    name: str
    namespace: str
    replicas: int
    selector: dict[str, str]
    rs_name: str
    rs_uid: str
    empty_dir: bool
    reconcile_pending: bool = False


class Workloads:
    def __init__(
        self,
        store: Store,
        nodes: dict[str, NodeState],
        after: Callable[[float, Callable[[], None]], Timer],
        *,
        reschedule_delay_s: float,
        pod_start_s: float,
    ) -> None:
        self.store = store
        self.nodes = nodes  # shared with the cluster, which owns node lifecycles
        self.after = after
        self.reschedule_delay_s = reschedule_delay_s
        self.pod_start_s = pod_start_s
        self.loop: asyncio.AbstractEventLoop | None = None  # set while running: PDB flushes batch on it
        self.live_nodes = 0
        self._workloads: dict[tuple[str, str], Workload] = {}
        self._daemonsets: list[tuple[str, str]] = []
        self._pods_per_node: Counter[str] = Counter()
        self._pdb_dirty: set[str] = set()
        self._pdb_flush_scheduled = False
        self._pending_scheduled = False
        self._pending: set[tuple[str, str]] = set()  # unscheduled pods
        self._schedulable_cache: dict[str, bool] = {}

    def _node(self, name: str) -> NodeState:
        state = self.nodes.get(name)
        if state is None:
            raise KeyError(f"no node {name}")
        return state

    # ---- node lifecycle, told by the cluster ---------------------------------------------------

    def node_joined(self, state: NodeState) -> None:
        self.live_nodes += 1
        for namespace, ds in self._daemonsets:
            self.create_ds_pod(namespace, ds, state)
            self.update_ds_status(namespace, ds)
        self.request_pending_placement()

    def node_gone(self, state: NodeState) -> None:
        self.live_nodes -= 1

    def node_deleted(self, state: NodeState) -> None:
        for namespace, ds in self._daemonsets:
            self.update_ds_status(namespace, ds)

    # ---- workloads -----------------------------------------------------------------------------

    def add_workload(
        self,
        name: str,
        *,
        replicas: int,
        namespace: str = "default",
        pdb_max_unavailable: int | str | None = None,
        pdb_min_available: int | str | None = None,
        empty_dir: bool = False,
    ) -> None:
        self._ensure_namespace(namespace)
        selector = {"app": name}
        rs_name = f"{name}-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:10]}"
        rs = self.store.create(REPLICASETS, manifests.replicaset(rs_name, namespace, replicas, selector))
        workload = Workload(name, namespace, replicas, selector, rs_name, rs["metadata"]["uid"], empty_dir)
        self._workloads[(namespace, rs_name)] = workload
        self._create_workload_pods(workload, replicas, ready=True)
        if pdb_max_unavailable is not None or pdb_min_available is not None:
            self.add_pdb(
                f"{name}-pdb",
                namespace=namespace,
                selector=selector,
                max_unavailable=pdb_max_unavailable,
                min_available=pdb_min_available,
            )

    def add_daemonset(self, name: str, namespace: str = "kube-system") -> None:
        self._ensure_namespace(namespace)
        self.store.create(DAEMONSETS, manifests.daemonset(name, namespace))
        self._daemonsets.append((namespace, name))
        for state in self.nodes.values():
            if state.joined and not state.gone:
                self.create_ds_pod(namespace, name, state)
        self.update_ds_status(namespace, name)

    def add_bare_pod(self, name: str, node: str, namespace: str = "default", *, mirror: bool = False) -> None:
        self._ensure_namespace(namespace)
        state = self._node(node)
        annotations = {MIRROR_ANNOTATION: uuid.uuid4().hex} if mirror else None
        self.store.create(
            PODS,
            manifests.pod(
                name,
                namespace,
                labels={"run": name},
                node_name=node,
                owner=None,
                ready=True,
                annotations=annotations,
                host_ip=node_ip(state),
                pod_ip=pod_ip(),
            ),
        )

    def add_pdb(
        self,
        name: str,
        *,
        namespace: str,
        selector: Mapping[str, str],
        max_unavailable: int | str | None = None,
        min_available: int | str | None = None,
    ) -> None:
        self._ensure_namespace(namespace)
        self.store.create(
            PDBS,
            manifests.pdb(
                name, namespace, selector, max_unavailable=max_unavailable, min_available=min_available
            ),
        )
        self._flush_pdbs_now(namespace)

    def pdb_status(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        if namespace in self._pdb_dirty:
            self._flush_pdbs()
        pdb = self.store.get(PDBS, namespace, name)
        return None if pdb is None else pdb.get("status")

    # ---- pods --------------------------------------------------------------------------------

    def _ensure_namespace(self, namespace: str) -> None:
        if self.store.entry(NAMESPACES, "", namespace) is None:
            self.store.create(NAMESPACES, manifests.namespace(namespace))

    def set_pods_ready(self, node_name: str, ready: bool) -> None:
        stamp = rfc3339()
        flag = "True" if ready else "False"

        def change(obj: dict[str, Any]) -> bool:
            status = obj.setdefault("status", {})
            changed = False
            for c in status.get("conditions") or []:
                if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != flag:
                    c.update(status=flag, lastTransitionTime=stamp)
                    changed = True
            for cs in status.get("containerStatuses") or []:
                cs["ready"] = ready
            return changed

        for namespace, name in self.store.pods_on_node(node_name):
            self.store.mutate(PODS, namespace, name, change)

    def _pod_name(self, namespace: str, prefix: str) -> str:
        # Five random characters like the real generateName suffix, drawn again on a collision.
        while True:
            name = f"{prefix}-{''.join(random.choices(_NAME_ALPHABET, k=5))}"
            if self.store.entry(PODS, namespace, name) is None:
                return name

    def _is_schedulable(self, state: NodeState) -> bool:
        if not state.joined or state.gone or not state.kubelet_running or state.rebooting:
            return False
        cached = self._schedulable_cache.get(state.name)
        if cached is None:
            node = self.store.get(NODES, "", state.name)
            spec = (node or {}).get("spec") or {}
            cached = (
                node is not None
                and not spec.get("unschedulable")
                and not any(t.get("effect") == "NoSchedule" for t in spec.get("taints") or [])
            )
            self._schedulable_cache[state.name] = cached
        return cached

    def _placements(self, count: int) -> list[str | None]:
        """Nodes for `count` new pods: the schedulable nodes with the fewest pods first (None
        when no node can take a pod: it stays Pending)."""
        heap = [(self._pods_per_node[n], n) for n, st in self.nodes.items() if self._is_schedulable(st)]
        if not heap:
            return [None] * count
        heapq.heapify(heap)
        out: list[str | None] = []
        for _ in range(count):
            load, name = heapq.heappop(heap)
            out.append(name)
            heapq.heappush(heap, (load + 1, name))
        return out

    def _create_workload_pods(self, workload: Workload, count: int, *, ready: bool) -> None:
        owner = manifests.owner_ref("ReplicaSet", workload.rs_name, workload.rs_uid)
        for node in self._placements(count):
            name = self._pod_name(workload.namespace, workload.rs_name)
            state = self.nodes.get(node) if node else None
            body = manifests.pod(
                name,
                workload.namespace,
                labels=workload.selector,
                node_name=node,
                owner=owner,
                ready=ready,
                empty_dir=workload.empty_dir,
                host_ip=node_ip(state) if state else "",
                pod_ip=pod_ip() if state else "",
            )
            self.store.create(PODS, body)
            if node is not None and not ready:
                self.after(self.pod_start_s, functools.partial(self._pod_started, workload.namespace, name))

    def _pod_started(self, namespace: str, name: str) -> None:
        entry = self.store.entry(PODS, namespace, name)
        if entry is None or not entry.node_name:
            return
        state = self.nodes.get(entry.node_name)
        if state is None or not state.kubelet_running or state.rebooting:
            return
        stamp = rfc3339()

        def change(obj: dict[str, Any]) -> bool:
            if obj["metadata"].get("deletionTimestamp"):
                return False
            status = obj.setdefault("status", {})
            status["conditions"] = manifests.pod_conditions(True, stamp)
            status["containerStatuses"] = [manifests.container_status(True, stamp)]
            return True

        self.store.mutate(PODS, namespace, name, change)

    def create_ds_pod(self, namespace: str, ds_name: str, state: NodeState) -> None:
        ds = self.store.get(DAEMONSETS, namespace, ds_name)
        if ds is None:
            return
        owner = manifests.owner_ref("DaemonSet", ds_name, ds["metadata"]["uid"])
        body = manifests.pod(
            self._pod_name(namespace, ds_name),
            namespace,
            labels={"app.kubernetes.io/name": ds_name},
            node_name=state.name,
            owner=owner,
            ready=state.kubelet_running and not state.rebooting,
            host_ip=node_ip(state),
            pod_ip=node_ip(state),
        )
        self.store.create(PODS, body)

    def update_ds_status(self, namespace: str, ds_name: str) -> None:
        live = self.live_nodes

        def change(obj: dict[str, Any]) -> bool:
            status = obj.setdefault("status", {})
            new = {
                "currentNumberScheduled": live,
                "desiredNumberScheduled": live,
                "numberReady": live,
                "numberAvailable": live,
                "updatedNumberScheduled": live,
                "numberMisscheduled": 0,
                "observedGeneration": 1,
            }
            if all(status.get(k) == v for k, v in new.items()):
                return False
            status.update(new)
            return True

        self.store.mutate(DAEMONSETS, namespace, ds_name, change)

    # ---- controllers, driven by API writes ---------------------------------------------------

    def on_write(self, event: StoredEvent) -> None:
        if event.bucket == "pods":
            self._on_pod_event(event)
        elif event.bucket == "poddisruptionbudgets" and event.type != "DELETED":
            self._mark_pdbs_dirty(event.namespace)
        elif event.bucket == "nodes":
            self._schedulable_cache.pop(event.name, None)
            if event.type == "MODIFIED" and self._pending:
                self.request_pending_placement()

    def _on_pod_event(self, event: StoredEvent) -> None:
        node = event.entry.node_name
        key = (event.namespace, event.name)
        if event.type == "ADDED" and node:
            self._pods_per_node[node] += 1
        elif event.type == "DELETED" and node:
            self._pods_per_node[node] -= 1
        if event.type == "DELETED" or node:
            self._pending.discard(key)
        else:
            self._pending.add(key)
        self._mark_pdbs_dirty(event.namespace)
        entry = event.entry
        if event.type == "ADDED" or not entry.owner or not (event.type == "DELETED" or entry.terminating):
            return
        kind, _, owner_name = entry.owner.partition("/")
        if kind == "ReplicaSet":
            workload = self._workloads.get((event.namespace, owner_name))
            if workload is not None and not workload.reconcile_pending:
                workload.reconcile_pending = True
                self.after(self.reschedule_delay_s, functools.partial(self._reconcile, workload))
        elif kind == "DaemonSet" and event.type == "DELETED":
            state = self.nodes.get(node)
            if state is not None and state.joined and not state.gone:
                self.after(
                    self.reschedule_delay_s,
                    functools.partial(self._recreate_ds_pod, event.namespace, owner_name, state),
                )

    def _recreate_ds_pod(self, namespace: str, ds_name: str, state: NodeState) -> None:
        if state.gone or self.nodes.get(state.name) is not state:
            return
        for pod_namespace, pod_name in self.store.pods_on_node(state.name):
            entry = self.store.entry(PODS, pod_namespace, pod_name)
            if pod_namespace == namespace and entry and entry.labels.get("app.kubernetes.io/name") == ds_name:
                return
        self.create_ds_pod(namespace, ds_name, state)

    def _reconcile(self, workload: Workload) -> None:
        workload.reconcile_pending = False
        owner = f"ReplicaSet/{workload.rs_name}"
        active = sum(
            1 for _, e in self.store.items(PODS, workload.namespace) if e.owner == owner and not e.terminating
        )
        if workload.replicas > active:
            self._create_workload_pods(workload, workload.replicas - active, ready=False)

    def request_pending_placement(self) -> None:
        if self._pending_scheduled or not self._pending:
            return
        self._pending_scheduled = True
        self.after(self.reschedule_delay_s, self._place_pending)

    def _place_pending(self) -> None:
        self._pending_scheduled = False
        pending = sorted(self._pending)
        for (namespace, name), node in zip(pending, self._placements(len(pending)), strict=True):
            if node is None:
                return
            state = self.nodes[node]
            # Binding: the scheduler sets spec.nodeName once; the kubelet then starts the pod.
            bound = self.store.mutate(PODS, namespace, name, functools.partial(self._bind, state))
            if bound is not None:
                self._pods_per_node[node] += 1
                self.after(self.pod_start_s, functools.partial(self._pod_started, namespace, name))

    def _bind(self, state: NodeState, obj: dict[str, Any]) -> bool:
        if (obj.get("spec") or {}).get("nodeName") or obj["metadata"].get("deletionTimestamp"):
            return False
        stamp = rfc3339()
        obj.setdefault("spec", {})["nodeName"] = state.name
        obj["status"] = {
            "phase": "Running",
            "conditions": manifests.pod_conditions(False, stamp),
            "hostIP": node_ip(state),
            "podIP": pod_ip(),
            "startTime": stamp,
            "containerStatuses": [manifests.container_status(False, stamp)],
            "qosClass": "BestEffort",
        }
        return True

    def _mark_pdbs_dirty(self, namespace: str) -> None:
        self._pdb_dirty.add(namespace)
        if self._pdb_flush_scheduled:
            return
        self._pdb_flush_scheduled = True
        if self.loop is not None:
            self.loop.call_soon(self._flush_pdbs)
        else:
            self._flush_pdbs()

    def _flush_pdbs(self) -> None:
        self._pdb_flush_scheduled = False
        dirty, self._pdb_dirty = self._pdb_dirty, set()
        for namespace in dirty:
            self._flush_pdbs_now(namespace)

    def _flush_pdbs_now(self, namespace: str) -> None:
        for key, _ in self.store.items(PDBS, namespace):
            pdb = self.store.get(PDBS, key[0], key[1])
            if pdb is None:
                continue
            status = live_pdb_status(self.store, namespace, pdb)

            def change(obj: dict[str, Any], status: dict[str, Any] = status) -> bool:
                old = obj.get("status") or {}
                keys = (
                    "currentHealthy",
                    "desiredHealthy",
                    "disruptionsAllowed",
                    "expectedPods",
                    "observedGeneration",
                )
                if all(old.get(k) == status[k] for k in keys):
                    return False
                old_allowed = next(
                    (c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None
                )
                new_allowed = status["conditions"][0]
                if old_allowed is not None and old_allowed.get("status") == new_allowed["status"]:
                    new_allowed["lastTransitionTime"] = old_allowed.get("lastTransitionTime")
                else:
                    new_allowed["lastTransitionTime"] = rfc3339()
                obj["status"] = {**old, **status}
                return True

            self.store.mutate(PDBS, key[0], key[1], change)
