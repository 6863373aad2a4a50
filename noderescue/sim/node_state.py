"""What the emulator knows about a node beyond its API object: kubelet, instance, reboot state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from noderescue.sim.manifests import internal_ip


@dataclass(slots=True)
class NodeState:
    name: str
    zone: str
    provider_id: str
    labels: dict[str, str]
    boot_seconds: float
    index: int
    uid: str = ""
    joined: bool = False
    gone: bool = False
    kubelet_running: bool = True
    rebooting: bool = False
    repairable: bool = False
    last_renew: float = 0.0  # time.monotonic() of the last lease renewal
    last_renew_wall: float = 0.0
    persistent: set[str] = field(default_factory=set)  # condition types a reboot does not clear
    # Conditions set before the node joined, written when it does.
    early_conditions: list[tuple[str, str, str, str]] = field(default_factory=list)
    epoch: int = 0  # bumped on kubelet stop/start/reboot: stale timers see a newer epoch and do nothing


def node_ip(state: NodeState) -> str:
    return internal_ip(state.index)


def pod_ip() -> str:
    n = uuid.uuid4().int
    return f"100.64.{(n >> 8) & 255}.{n & 255}"
