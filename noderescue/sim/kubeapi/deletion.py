"""Deletion with the real semantics, and the pods/eviction subresource that deletes under PDBs.

A scheduled pod deleted with a grace period gets a deletionTimestamp and disappears when the
grace period is over and its kubelet confirms the kill; a pod whose kubelet is gone stays
Terminating until the kubelet returns or its Node is deleted. Everything else goes at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from noderescue.sim.kubeapi import disruption
from noderescue.sim.kubeapi.resources import NAMESPACES, PDBS, PODS, RESOURCES, ResourceType
from noderescue.sim.kubeapi.status import ApiError, internal_error, too_many_requests
from noderescue.sim.kubeapi.store import Store
from noderescue.sim.kubeapi.timestamps import rfc3339

# (delay in emulated seconds, callback) -> None. The cluster supplies its scaled timers.
Schedule = Callable[[float, Callable[[], None]], None]

EVICTION_PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
MULTI_PDB_MESSAGE = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
)


def _schedule_real(delay_s: float, callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_later(max(0.0, delay_s), callback)


def _namespaced_buckets() -> list[ResourceType]:
    seen: set[str] = set()
    out = []
    for res in RESOURCES:
        if res.namespaced and res.bucket not in seen:
            seen.add(res.bucket)
            out.append(res)
    return out


class Deletions:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.schedule: Schedule = _schedule_real
        self.time_scale = 1.0  # emulated seconds per real second (for deletionTimestamp)
        # Whether the kubelet of a terminating pod's node is there to finish its deletion
        # (None: always). The cluster finishes the rest when the kubelet comes back.
        self.kubelet_confirms: Callable[[dict[str, Any]], bool] | None = None
        self._overdue: dict[tuple[str, str], Any] = {}  # pod key -> uid

    def delete(
        self, res: ResourceType, namespace: str, name: str, options: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Returns (the object when it still exists, terminating; its last state)."""
        current = self.store.require(res, namespace, name)
        meta = current["metadata"]
        self._check_preconditions(meta, options.get("preconditions") or {})
        if res is PODS and (current.get("spec") or {}).get("nodeName"):
            spec_grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            grace = int(options.get("gracePeriodSeconds", spec_grace))
            if grace > 0:
                already = meta.get("deletionGracePeriodSeconds")
                if already is not None and already <= grace:
                    return current, current  # a shorter grace period is already running
                updated = self.store.mutate(res, namespace, name, lambda o: self._set_deletion(o, grace))
                assert updated is not None
                uid = meta.get("uid")
                self.schedule(grace, lambda: self._finish(namespace, name, uid))
                return updated, updated
        if res is NAMESPACES:
            for other in _namespaced_buckets():
                for key, _ in self.store.items(other, name):
                    self.store.delete(other, key[0], key[1])
        final = self.store.delete(res, namespace, name)
        self._overdue.pop((namespace, name), None)
        return None, final

    @staticmethod
    def _check_preconditions(meta: dict[str, Any], preconditions: dict[str, Any]) -> None:
        uid = preconditions.get("uid")
        if uid and uid != meta.get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta.get('uid')}",
            )
        rv = preconditions.get("resourceVersion")
        if rv and rv != meta.get("resourceVersion"):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: ResourceVersion in precondition: {rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )

    def _set_deletion(self, obj: dict[str, Any], grace: int) -> bool:
        meta = obj["metadata"]
        meta["deletionTimestamp"] = rfc3339(time.time() + grace / self.time_scale)
        meta["deletionGracePeriodSeconds"] = grace
        return True

    def _finish(self, namespace: str, name: str, uid: Any) -> None:
        obj = self.store.get(PODS, namespace, name)
        if obj is None or obj["metadata"].get("uid") != uid:
            return
        if self.kubelet_confirms is not None and not self.kubelet_confirms(obj):
            self._overdue[(namespace, name)] = uid  # stays Terminating, as in a real cluster
            return
        self.store.delete(PODS, namespace, name)

    def finish_overdue(self, namespace: str, name: str) -> bool:
        """Called when the pod's kubelet is back: the kill it waited for happens now."""
        uid = self._overdue.pop((namespace, name), None)
        obj = self.store.get(PODS, namespace, name)
        if uid is None or obj is None or obj["metadata"].get("uid") != uid:
            return False
        self.store.delete(PODS, namespace, name)
        return True

    # ---- pods/eviction -------------------------------------------------------------------------

    def check_eviction(self, namespace: str, name: str) -> None:
        """Raise what the eviction subresource answers when the PDBs forbid it: 429 with the
        budget's numbers when no disruption is allowed, 500 when several PDBs match."""
        pod = self.store.require(PODS, namespace, name)
        if pod["metadata"].get("deletionTimestamp"):
            return  # a terminating pod may always be evicted
        labels = pod["metadata"].get("labels") or {}
        pdbs = [p for p in self.store.objects(PDBS, namespace) if disruption.pdb_selector(p).matches(labels)]
        if len(pdbs) > 1:
            raise internal_error(MULTI_PDB_MESSAGE)
        if not pdbs:
            return
        status = disruption.live_pdb_status(self.store, namespace, pdbs[0])
        healthy, desired = status["currentHealthy"], status["desiredHealthy"]
        if not disruption.pod_is_healthy(pod) and healthy >= desired:
            return  # unhealthyPodEvictionPolicy IfHealthyBudget: an unready pod may go
        if status["disruptionsAllowed"] <= 0:
            budget = pdbs[0]["metadata"]["name"]
            raise too_many_requests(
                EVICTION_PDB_MESSAGE,
                [
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {budget} needs {desired} healthy pods "
                        f"and has {healthy} currently",
                    }
                ],
            )
