"""A stand-in for SimCluster that records what the cloud emulators ask of the cluster.

The cloud tests check the middleware's own job with it (which node, which effect, when); the
World tests check the same effects end to end with the real SimCluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AddedNode:
    name: str
    labels: dict[str, str]
    zone: str
    provider_id: str
    join_after_s: float
    boot_seconds: float


@dataclass
class RecordingCluster:
    added: dict[str, AddedNode] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    reboots: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    repairable: set[str] = field(default_factory=set)
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)
    stopped_kubelets: set[str] = field(default_factory=set)

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        zone: str,
        provider_id: str,
        join_after_s: float = 0.0,
        boot_seconds: float = 3.0,
    ) -> None:
        assert name not in self.added, f"node name {name} reused"
        self.added[name] = AddedNode(name, labels, zone, provider_id, join_after_s, boot_seconds)

    def remove_node(self, name: str, *, after_s: float = 0.0) -> None:
        self.removed.append(name)

    def reboot_node(self, name: str) -> None:
        self.reboots.append(name)

    def run_repair(self, name: str) -> bool:
        self.repairs.append(name)
        return name in self.repairable

    def set_repairable(self, name: str, repairable: bool = True) -> None:
        if repairable:
            self.repairable.add(name)
        else:
            self.repairable.discard(name)

    def set_condition(self, name: str, type: str, status: str, reason: str = "", message: str = "") -> None:
        self.conditions.setdefault(name, {})[type] = status

    def stop_kubelet(self, name: str) -> None:
        self.stopped_kubelets.add(name)

    def start_kubelet(self, name: str) -> None:
        self.stopped_kubelets.discard(name)

    def node_names(self) -> list[str]:
        return [n for n in self.added if n not in self.removed]

    def get_node(self, name: str) -> dict[str, Any] | None:
        node = self.added.get(name)
        if node is None or name in self.removed:
            return None
        conditions = [{"type": t, "status": s} for t, s in self.conditions.get(name, {}).items()]
        return {"metadata": {"name": name, "labels": node.labels}, "status": {"conditions": conditions}}
