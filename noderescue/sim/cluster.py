"""The emulated cluster: the API server plus the kubelets and controllers that make it move.

Times given to the public methods are emulated seconds (real = emulated / time_scale).
Timestamps written into objects are wall-clock times, because clients compare them with their
own clock.

Kubelet leases: with `lease_mode="auto"`, each node's Lease is renewed every 10 s (emulated) by
a timer while the cluster has at most `eager_lease_limit` nodes. Above that (the 10k-100k node
`large` scenarios) renewals become lazy, because 100k eager renewals would be 10k writes/s: a
Lease is brought up to date (with the renewTime its kubelet would have written last) when
someone reads it (GET/LIST/WATCH start of leases), and, while anyone watches Leases, by a sweep
that visits every Lease once per `lazy_lease_refresh_s` (30 s emulated: 3.3k writes/s for 100k
nodes instead of 10k). A watcher of Leases of a large cluster therefore sees a healthy node's
renewTime lag by up to 40 s instead of 10 s; staleness thresholds above that are unaffected.

The node lifecycle controller is emulated per node: a stopped kubelet's node goes Ready=Unknown
`node_monitor_grace_s` after its last renewal (with the unreachable taints), pods on a not-Ready
node become not Ready, a removed instance's Node is deleted `node_gc_s` after it went Unknown.

All methods must run on the event loop's thread; called from another thread (a cloud emulator
in a server thread) they are handed to the loop and wait for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import structlog
import yaml

from noderescue.sim import manifests
from noderescue.sim.audit import AuditLog
from noderescue.sim.faults import Faults
from noderescue.sim.kubeapi.resources import (
    CORE_EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
)
from noderescue.sim.kubeapi.server import KubeApiServer
from noderescue.sim.kubeapi.store import Store
from noderescue.sim.kubeapi.timestamps import rfc3339, rfc3339_micro
from noderescue.sim.node_state import NodeState
from noderescue.sim.timers import Timer, Timers
from noderescue.sim.workloads import Workloads

log = structlog.get_logger("noderescue.sim.cluster")

P = ParamSpec("P")
R = TypeVar("R")

LEASE_RENEW_S = 10.0
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "noderescue")


def _on_loop(method: Callable[P, R]) -> Callable[P, R]:
    """Run a SimCluster method on the loop thread when called from another thread."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, SimCluster)
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread or not loop.is_running():
            return method(*args, **kwargs)
        future: concurrent.futures.Future[R] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(method(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=30)

    return wrapper


class SimCluster:
    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        audit: AuditLog | None = None,
        faults: Faults | None = None,
        lease_mode: Literal["auto", "eager", "lazy"] = "auto",
        eager_lease_limit: int = 2000,
        node_monitor_grace_s: float = 40.0,
        node_gc_s: float = 5.0,
        reschedule_delay_s: float = 1.0,
        pod_start_s: float = 1.0,
        event_window: int = 10_000,
        bookmark_interval_s: float | None = None,
        lazy_lease_refresh_s: float = 30.0,
    ) -> None:
        self.time_scale = time_scale
        self.audit = audit
        self.faults = faults or Faults()
        self.store = Store(window=event_window)
        if bookmark_interval_s is None:
            # Real seconds. Every 5 emulated seconds: a watch client's freshness comes from data,
            # so bookmarks must come well within a scenario's (scaled) staleAfter.
            bookmark_interval_s = 5.0 / max(time_scale, 1.0)
        self.server = KubeApiServer(
            self.store, faults=self.faults, audit=audit, bookmark_interval_s=bookmark_interval_s
        )
        self.timers = Timers(time_scale)
        self.server.deletions.schedule = self._schedule_for_server
        self.server.admin_actions["nodes"] = self._admin_node
        self.server.deletions.kubelet_confirms = self._kubelet_confirms
        self.server.deletions.time_scale = time_scale
        self.url = ""
        self.node_monitor_grace_s = node_monitor_grace_s
        self.node_gc_s = node_gc_s
        self.reschedule_delay_s = reschedule_delay_s
        self.pod_start_s = pod_start_s
        self.eager_lease_limit = eager_lease_limit
        self._lazy_leases = lease_mode == "lazy"
        self.lazy_lease_refresh_s = lazy_lease_refresh_s
        self._sweep_cursor = 0
        if self._lazy_leases:
            self._arm_lazy_sweep()
        self._lease_mode = lease_mode
        self._nodes: dict[str, NodeState] = {}
        self._by_provider: dict[str, str] = {}
        self.workloads = Workloads(
            self.store,
            self._nodes,
            self._after,
            reschedule_delay_s=reschedule_delay_s,
            pod_start_s=pod_start_s,
        )
        self._node_index = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        for name in DEFAULT_NAMESPACES:
            self.store.create(NAMESPACES, manifests.namespace(name))
        self.store.write_hooks.append(self.workloads.on_write)
        self.store.read_hooks[LEASES.bucket] = self._materialize_leases

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._loop = asyncio.get_running_loop()
        self.workloads.loop = self._loop
        self._loop_thread = threading.get_ident()
        self.timers.start()
        self.url = await self.server.start(host, port)
        return self.url

    async def stop(self) -> None:
        await self.server.stop()
        await self.timers.stop()
        self._loop = None
        self.workloads.loop = None

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "noderescue-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "sim-admin", "user": {"token": "noderescue-sim-token"}}],
            "contexts": [
                {"name": "noderescue-sim", "context": {"cluster": "noderescue-sim", "user": "sim-admin"}}
            ],
            "current-context": "noderescue-sim",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _schedule_for_server(self, emulated_s: float, callback: Callable[[], None]) -> None:
        self._after(emulated_s, callback)

    def _after(self, emulated_s: float, callback: Callable[[], None]) -> Timer:
        return self.timers.call_after(emulated_s, callback)

    # ---- nodes: public API -------------------------------------------------------------------

    @_on_loop
    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str],
        zone: str,
        provider_id: str,
        join_after_s: float = 0.0,
        boot_seconds: float = 3.0,
    ) -> None:
        if name in self._nodes and not self._nodes[name].gone:
            raise ValueError(f"node {name} already exists")
        self._node_index += 1
        state = NodeState(name, zone, provider_id, dict(labels), boot_seconds, self._node_index)
        self._nodes[name] = state
        self._by_provider[provider_id] = name
        if self._lease_mode == "auto" and not self._lazy_leases and len(self._nodes) > self.eager_lease_limit:
            self._lazy_leases = True
            self._arm_lazy_sweep()
            log.info("sim_leases_lazy", nodes=len(self._nodes))
        if join_after_s <= 0:
            self._join(state)
        else:
            self._after(join_after_s, lambda: self._join(state))

    @_on_loop
    def remove_node(self, name: str, *, after_s: float = 0.0) -> None:
        state = self._state(name)
        if after_s <= 0:
            self._instance_gone(state)
        else:
            self._after(after_s, lambda: self._instance_gone(state))

    @_on_loop
    def reboot_node(self, name: str) -> None:
        state = self._state(name)
        if state.gone:
            return
        state.epoch += 1
        state.rebooting = True
        state.kubelet_running = False
        epoch = state.epoch
        self._set_ready(state, "False", "KubeletNotReady", "node is rebooting")
        self._after(state.boot_seconds, lambda: self._boot_done(state, epoch))

    @_on_loop
    def run_repair(self, name: str) -> bool:
        state = self._state(name)
        if state.gone or not state.repairable or state.rebooting:
            return False
        self._clear_bad_conditions(state, include_persistent=True)
        self._restart_kubelet(state)
        self._event(state, "Starting", "Starting kubelet.", "Normal", "kubelet")
        return True

    @_on_loop
    def set_repairable(self, name: str, repairable: bool = True) -> None:
        self._state(name).repairable = repairable

    @_on_loop
    def set_condition(
        self,
        name: str,
        type: str,
        status: str,
        reason: str = "",
        message: str = "",
        *,
        survives_reboot: bool = False,
    ) -> None:
        state = self._state(name)
        if survives_reboot:
            state.persistent.add(type)
        else:
            state.persistent.discard(type)
        self._write_condition(state, type, status, reason, message)

    @_on_loop
    def stop_kubelet(self, name: str) -> None:
        state = self._state(name)
        if state.gone or not state.kubelet_running:
            return
        self._sync_lazy_renew(state)
        state.kubelet_running = False
        state.epoch += 1
        self._arm_node_monitor(state)

    @_on_loop
    def start_kubelet(self, name: str) -> None:
        state = self._state(name)
        if state.gone or state.rebooting:
            return
        self._restart_kubelet(state)

    @_on_loop
    def node_names(self) -> list[str]:
        return sorted(self.store.names(NODES))

    @_on_loop
    def get_node(self, name: str) -> dict[str, Any] | None:
        return self.store.get(NODES, "", name)

    @_on_loop
    def node_by_provider_id(self, provider_id: str) -> str | None:
        name = self._by_provider.get(provider_id)
        state = self._nodes.get(name) if name is not None else None
        if state is None or state.gone or state.provider_id != provider_id:
            return None  # gone, or the name now belongs to another instance
        return name

    def node_state(self, name: str) -> NodeState | None:
        return self._nodes.get(name)

    # ---- workloads: public API ---------------------------------------------------------------

    @_on_loop
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
        self.workloads.add_workload(
            name,
            replicas=replicas,
            namespace=namespace,
            pdb_max_unavailable=pdb_max_unavailable,
            pdb_min_available=pdb_min_available,
            empty_dir=empty_dir,
        )

    @_on_loop
    def add_daemonset(self, name: str, namespace: str = "kube-system") -> None:
        self.workloads.add_daemonset(name, namespace)

    @_on_loop
    def add_bare_pod(self, name: str, node: str, namespace: str = "default", *, mirror: bool = False) -> None:
        self.workloads.add_bare_pod(name, node, namespace, mirror=mirror)

    @_on_loop
    def add_pdb(
        self,
        name: str,
        *,
        namespace: str,
        selector: Mapping[str, str],
        max_unavailable: int | str | None = None,
        min_available: int | str | None = None,
    ) -> None:
        self.workloads.add_pdb(
            name,
            namespace=namespace,
            selector=selector,
            max_unavailable=max_unavailable,
            min_available=min_available,
        )

    @_on_loop
    def pdb_status(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.workloads.pdb_status(name, namespace)

    # ---- node internals ----------------------------------------------------------------------

    def _state(self, name: str) -> NodeState:
        state = self._nodes.get(name)
        if state is None:
            raise KeyError(f"no node {name}")
        return state

    def _join(self, state: NodeState) -> None:
        if state.gone or state.joined:
            return
        body = manifests.node(
            state.name, labels=state.labels, zone=state.zone, provider_id=state.provider_id, index=state.index
        )
        if self.store.entry(NODES, "", state.name) is not None:
            # The Node of an earlier instance of that name is still there (name reuse before
            # the node GC ran): it goes now, with its pods, as the GC would have done.
            self._remove_node_objects(state.name)
        created = self.store.create(NODES, body)
        state.uid = created["metadata"]["uid"]
        state.joined = True
        now = time.monotonic()
        state.last_renew = now
        state.last_renew_wall = time.time()
        self.store.create(LEASES, manifests.lease(state.name, state.uid, state.last_renew_wall))
        self._arm_lease_renewal(state)
        for ctype, status, reason, message in state.early_conditions:
            self._write_condition(state, ctype, status, reason, message)
        state.early_conditions.clear()
        self.workloads.node_joined(state)

    def _arm_lease_renewal(self, state: NodeState) -> None:
        if self._lazy_leases:
            return
        epoch = state.epoch

        def renew() -> None:
            if state.gone or not state.kubelet_running or state.epoch != epoch or self._lazy_leases:
                return
            self._renew_lease(state, time.time())
            state.last_renew = time.monotonic()
            self._after(LEASE_RENEW_S, renew)

        self._after(LEASE_RENEW_S, renew)

    def _renew_lease(self, state: NodeState, wall: float) -> None:
        state.last_renew_wall = wall
        stamp = rfc3339_micro(wall)

        def change(obj: dict[str, Any]) -> bool:
            spec = obj.setdefault("spec", {})
            if spec.get("renewTime") == stamp:
                return False
            spec["renewTime"] = stamp
            return True

        self.store.mutate(LEASES, manifests.NODE_LEASE_NAMESPACE, state.name, change)

    def _lazy_renew_instant(self, state: NodeState) -> tuple[float, float] | None:
        """(monotonic, wall) of the last renewal a live kubelet would have made, lazily."""
        if not state.kubelet_running or state.gone or not state.joined:
            return None
        period = LEASE_RENEW_S / self.time_scale
        now = time.monotonic()
        since = now - state.last_renew
        if since < period:
            return None
        step = since - (since % period)
        mono = state.last_renew + step
        return mono, state.last_renew_wall + step

    def _sync_lazy_renew(self, state: NodeState) -> None:
        if not self._lazy_leases:
            return
        instant = self._lazy_renew_instant(state)
        if instant is not None:
            state.last_renew = instant[0]
            self._renew_lease(state, instant[1])

    def _arm_lazy_sweep(self) -> None:
        """While someone watches Leases, bring every live kubelet's Lease up to date once per
        `lazy_lease_refresh_s` (a slice per emulated second), so that a watch cache never sees
        a healthy node's Lease older than that plus one renew period."""
        sweep_s = 1.0

        def sweep() -> None:
            if self.store.has_watchers(LEASES) and self._nodes:
                names = list(self._nodes)
                count = max(1, round(len(names) * sweep_s / self.lazy_lease_refresh_s))
                start = self._sweep_cursor % len(names)
                for name in (names + names)[start : start + min(count, len(names))]:
                    self._sync_lazy_renew(self._nodes[name])
                self._sweep_cursor = start + count
            self._after(sweep_s, sweep)

        self._after(sweep_s, sweep)

    def _materialize_leases(self, namespace: str | None, name: str | None) -> None:
        if not self._lazy_leases or namespace not in (None, manifests.NODE_LEASE_NAMESPACE):
            return
        states = (
            [self._nodes[name]]
            if name is not None and name in self._nodes
            else ([] if name is not None else list(self._nodes.values()))
        )
        for state in states:
            self._sync_lazy_renew(state)

    def _arm_node_monitor(self, state: NodeState) -> None:
        epoch = state.epoch
        elapsed_emulated = (time.monotonic() - state.last_renew) * self.time_scale
        delay = max(0.0, self.node_monitor_grace_s - elapsed_emulated)

        def check() -> None:
            if state.gone or state.kubelet_running or state.epoch != epoch:
                return
            self._mark_unknown(state)

        self._after(delay, check)

    def _mark_unknown(self, state: NodeState) -> None:
        message = "Kubelet stopped posting node status."

        def change(obj: dict[str, Any]) -> bool:
            now = rfc3339()
            changed = False
            for c in obj.get("status", {}).get("conditions") or []:
                if c.get("type") in manifests.KUBELET_CONDITION_TYPES and c.get("status") != "Unknown":
                    c.update(
                        status="Unknown", reason="NodeStatusUnknown", message=message, lastTransitionTime=now
                    )
                    changed = True
            changed |= self._set_taints(obj, "unreachable")
            return changed

        if self.store.mutate(NODES, "", state.name, change) is not None:
            self.workloads.set_pods_ready(state.name, False)
            self._event(
                state,
                "NodeNotReady",
                f"Node {state.name} status is now: NodeNotReady",
                "Normal",
                "node-controller",
            )

    @staticmethod
    def _set_taints(obj: dict[str, Any], which: Literal["unreachable", "not-ready", "none"]) -> bool:
        spec = obj.setdefault("spec", {})
        taints = [
            t
            for t in spec.get("taints") or []
            if t.get("key") not in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
        ]
        if which != "none":
            key = f"node.kubernetes.io/{which}"
            taints.append({"key": key, "effect": "NoSchedule"})
            taints.append({"key": key, "effect": "NoExecute", "timeAdded": rfc3339()})
        before = spec.get("taints") or []
        if [(t.get("key"), t.get("effect")) for t in before] == [
            (t.get("key"), t.get("effect")) for t in taints
        ]:
            return False
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)
        return True

    def _set_ready(self, state: NodeState, status: str, reason: str, message: str) -> None:
        def change(obj: dict[str, Any]) -> bool:
            now = rfc3339()
            changed = False
            for c in obj.get("status", {}).get("conditions") or []:
                ctype = c.get("type")
                if ctype == "Ready":
                    if c.get("status") != status:
                        c["lastTransitionTime"] = now
                        changed = True
                    c.update(status=status, reason=reason, message=message, lastHeartbeatTime=now)
                elif ctype in manifests.KUBELET_CONDITION_TYPES and c.get("status") == "Unknown":
                    base = next(b for b in manifests.BASE_CONDITIONS if b[0] == ctype)
                    c.update(
                        status=base[1],
                        reason=base[2],
                        message=base[3],
                        lastTransitionTime=now,
                        lastHeartbeatTime=now,
                    )
                    changed = True
            changed |= self._set_taints(obj, "none" if status == "True" else "not-ready")
            return changed

        if self.store.mutate(NODES, "", state.name, change) is not None:
            self.workloads.set_pods_ready(state.name, status == "True")
            if status == "True":
                self.workloads.request_pending_placement()

    def _restart_kubelet(self, state: NodeState) -> None:
        state.epoch += 1
        state.kubelet_running = True
        state.last_renew = time.monotonic()
        self._renew_lease(state, time.time())
        self._arm_lease_renewal(state)
        self._set_ready(state, "True", "KubeletReady", "kubelet is posting ready status")
        self._finish_overdue_terminations(state)

    def _kubelet_confirms(self, pod: dict[str, Any]) -> bool:
        node = (pod.get("spec") or {}).get("nodeName")
        state = self._nodes.get(node) if node else None
        return state is None or state.gone or (state.kubelet_running and not state.rebooting)

    def _finish_overdue_terminations(self, state: NodeState) -> None:
        """A returning kubelet kills the pods whose deletion waited for it."""
        for namespace, name in self.store.pods_on_node(state.name):
            self.server.deletions.finish_overdue(namespace, name)

    def _boot_done(self, state: NodeState, epoch: int) -> None:
        if state.gone or state.epoch != epoch:
            return
        state.rebooting = False
        boot_id = str(uuid.uuid4())

        def change(obj: dict[str, Any]) -> bool:
            obj.setdefault("status", {}).setdefault("nodeInfo", {})["bootID"] = boot_id
            return True

        self.store.mutate(NODES, "", state.name, change)
        self._clear_bad_conditions(state, include_persistent=False)
        self._restart_kubelet(state)
        self._event(
            state,
            "Rebooted",
            f"Node {state.name} has been rebooted, boot id: {boot_id}",
            "Warning",
            "kubelet",
        )

    def _clear_bad_conditions(self, state: NodeState, *, include_persistent: bool) -> None:
        def change(obj: dict[str, Any]) -> bool:
            now = rfc3339()
            changed = False
            for c in obj.get("status", {}).get("conditions") or []:
                ctype = c.get("type", "")
                if ctype in manifests.KUBELET_CONDITION_TYPES:
                    continue
                if ctype in state.persistent and not include_persistent:
                    continue
                healthy = "True" if ctype in manifests.HEALTHY_WHEN_TRUE else "False"
                if c.get("status") != healthy:
                    c.update(
                        status=healthy,
                        reason=f"No{ctype}",
                        message="problem cleared",
                        lastTransitionTime=now,
                        lastHeartbeatTime=now,
                    )
                    changed = True
            return changed

        self.store.mutate(NODES, "", state.name, change)
        if include_persistent:
            state.persistent.clear()

    def _write_condition(self, state: NodeState, ctype: str, status: str, reason: str, message: str) -> None:
        if ctype == "Ready":
            self._set_ready(state, status, reason, message)
            return

        def change(obj: dict[str, Any]) -> bool:
            now = rfc3339()
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            for c in conditions:
                if c.get("type") == ctype:
                    if c.get("status") != status:
                        c["lastTransitionTime"] = now
                    c.update(status=status, reason=reason, message=message, lastHeartbeatTime=now)
                    return True
            conditions.insert(0, manifests.condition(ctype, status, reason, message))
            return True

        if self.store.mutate(NODES, "", state.name, change) is None and not state.gone:
            # Not joined yet: the node-problem-detector reports it once the node is there.
            state.early_conditions.append((ctype, status, reason, message))

    def _instance_gone(self, state: NodeState) -> None:
        if state.gone:
            return
        state.gone = True
        state.kubelet_running = False
        state.epoch += 1
        if not state.joined:
            return
        self.workloads.node_gone(state)
        self._mark_unknown(state)
        self._after(self.node_gc_s, lambda: self._delete_node(state))

    def _delete_node(self, state: NodeState) -> None:
        node = self.store.get(NODES, "", state.name)
        if node is None or node["metadata"].get("uid") != state.uid:
            return  # already replaced by a new node of that name
        self._remove_node_objects(state.name)
        self._event(
            state,
            "RemovingNode",
            f"Node {state.name} event: Removing Node {state.name} from Controller",
            "Normal",
            "node-controller",
        )
        self.workloads.node_deleted(state)

    def _remove_node_objects(self, name: str) -> None:
        """What the node lifecycle controller and pod GC delete with a Node: its pods (at once,
        no kubelet will confirm), its Lease, the Node."""
        for namespace, pod in self.store.pods_on_node(name):
            self.store.delete(PODS, namespace, pod)
        for res, namespace in ((LEASES, manifests.NODE_LEASE_NAMESPACE), (NODES, "")):
            if self.store.entry(res, namespace, name) is not None:
                self.store.delete(res, namespace, name)

    def _event(self, state: NodeState, reason: str, message: str, type_: str, component: str) -> None:
        self.store.create(
            CORE_EVENTS,
            manifests.node_event(
                state.name, state.uid, reason=reason, message=message, type_=type_, component=component
            ),
        )

    # ---- admin endpoint: POST /_sim/nodes/<name>/<action> --------------------------------------

    def _admin_node(self, path: str, body: dict[str, Any]) -> Any:
        name, _, action = path.partition("/")
        self._state(name)
        actions: dict[str, Callable[[], Any]] = {
            "stop-kubelet": lambda: self.stop_kubelet(name),
            "start-kubelet": lambda: self.start_kubelet(name),
            "reboot": lambda: self.reboot_node(name),
            "repair": lambda: self.run_repair(name),
            "repairable": lambda: self.set_repairable(name, bool(body.get("repairable", True))),
            "remove": lambda: self.remove_node(name, after_s=float(body.get("after_s", 0.0))),
            "condition": lambda: self.set_condition(
                name,
                str(body["type"]),
                str(body["status"]),
                str(body.get("reason", "")),
                str(body.get("message", "")),
            ),
        }
        if action not in actions:
            raise ValueError(f"unknown node action {action!r}; known: {sorted(actions)}")
        return actions[action]()
