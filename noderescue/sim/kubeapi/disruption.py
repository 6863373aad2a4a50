"""PodDisruptionBudget arithmetic, as the disruption controller and the eviction subresource do it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from noderescue.sim.kubeapi.resources import PODS, REPLICASETS
from noderescue.sim.kubeapi.selectors import (
    LabelOp,
    LabelRequirement,
    LabelSelector,
    selector_from_match_labels,
)
from noderescue.sim.kubeapi.store import Store


def pdb_selector(pdb: Mapping[str, Any]) -> LabelSelector:
    raw = (pdb.get("spec") or {}).get("selector")
    if raw is None:
        # policy/v1: a nil selector selects nothing; an empty one ({}) selects every pod.
        return LabelSelector((LabelRequirement("\x00never", "exists"),))
    selector = selector_from_match_labels(raw.get("matchLabels") or {})
    extra: list[LabelRequirement] = []
    ops: dict[str, LabelOp] = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in raw.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is not None:
            extra.append(LabelRequirement(expr["key"], op, frozenset(expr.get("values") or ())))
    return LabelSelector(selector.requirements + tuple(extra))


def pod_is_healthy(pod: Mapping[str, Any]) -> bool:
    """Counted in currentHealthy: Ready and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _scaled(value: int | str, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        share = int(text[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(text)


def pdb_status(pdb: Mapping[str, Any], healthy: int, expected: int) -> dict[str, Any]:
    """The PDB's status fields from the count of healthy pods it selects and the number of pods
    its pods' owners want (the disruption controller's expectedPods)."""
    spec = pdb.get("spec") or {}
    if "minAvailable" in spec:
        desired = _scaled(spec["minAvailable"], expected, round_up=True)
    elif "maxUnavailable" in spec:
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected, round_up=True))
    else:
        desired = expected  # neither field: no disruption allowed beyond unhealthy pods
    generation = (pdb.get("metadata") or {}).get("generation", 1)
    allowed = max(0, healthy - desired)
    return {
        "observedGeneration": generation,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed > 0 else "False",
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
                "observedGeneration": generation,
            }
        ],
    }


def live_pdb_status(store: Store, namespace: str, pdb: dict[str, Any]) -> dict[str, Any]:
    """A PDB's status computed from the pods right now (the eviction check must not trust a
    status that a burst of concurrent evictions has not caught up with). Reads the store's pod
    summaries, parses no pod."""
    selector = pdb_selector(pdb)
    healthy = 0
    owners: set[str] = set()
    unowned = 0
    for _, entry in store.items(PODS, namespace):
        if not selector.matches(entry.labels):
            continue
        healthy += entry.healthy
        if entry.owner.startswith("ReplicaSet/"):
            owners.add(entry.owner.split("/", 1)[1])
        elif not entry.terminating:
            unowned += 1
    expected = unowned
    for owner in owners:
        rs = store.get(REPLICASETS, namespace, owner)
        expected += int(((rs or {}).get("spec") or {}).get("replicas", 0))
    return pdb_status(pdb, healthy, expected)
