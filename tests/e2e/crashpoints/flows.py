"""The remediation flows the crash-point suite kills the daemon in, and what each must end in.

A flow is a scenario (``scenarios/``), a change to the daemon configuration the emulator writes
for it, the node the suite breaks, the destructive calls the step makes (counted in the
emulator's audit log) and how the emulator's state shows the remediation completed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

# Short leader-election timings: a restarted daemon (or a standby) waits out the dead leader's
# Lease, and the client-go defaults would make that 15 s per case.
LEADER_ELECTION = {"leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s"}
# Long enough for a restart (process start, Lease wait, resync) inside the step on a loaded
# 2-core machine; a step that cannot prove its outcome escalates at this deadline.
STEP_TIMEOUT_S = 60

# Destructive calls as the emulator's audit log names them (the verb of a mutating request).
AWS_DESTRUCTIVE = frozenset(
    {
        "TerminateInstanceInAutoScalingGroup",
        "TerminateInstances",
        "RebootInstances",
        "StopInstances",
        "StartInstances",
        "SendCommand",
        "SetDesiredCapacity",
        "UpdateAutoScalingGroup",
    }
)
AZURE_DESTRUCTIVE = frozenset({"restart", "reimage", "delete", "deleteInstances", "update", "runCommand"})

State = dict[str, Any]  # {"nodes": {name: Node JSON}} from the emulator's Kubernetes API
Outcome = Callable[[str, State, State], list[str]]  # (node, before, after) -> problems


def _ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _boot_id(node: dict[str, Any]) -> str:
    return str(((node.get("status") or {}).get("nodeInfo") or {}).get("bootID") or "")


def _bad_conditions(node: dict[str, Any]) -> list[str]:
    return [
        str(c.get("type"))
        for c in (node.get("status") or {}).get("conditions") or []
        if c.get("type") == "KernelDeadlock" and c.get("status") == "True"
    ]


def _group(name: str) -> str:
    return name.rpartition("-")[0]


def replaced(node: str, before: State, after: State) -> list[str]:
    """The node is gone and the group is back to its size with every node Ready."""
    problems = []
    if node in after["nodes"]:
        problems.append(f"{node} still exists")
    group = _group(node)
    size = len([n for n in before["nodes"] if _group(n) == group])
    members = {n: obj for n, obj in after["nodes"].items() if _group(n) == group}
    ready = sorted(n for n, obj in members.items() if _ready(obj))
    if len(ready) != size:
        problems.append(f"group {group}: {len(ready)} Ready nodes {ready}, want {size}")
    new = sorted(set(members) - set(before["nodes"]))
    if len(new) != 1:
        problems.append(f"group {group}: new nodes {new}, want exactly one replacement")
    return problems


def rebooted(node: str, before: State, after: State) -> list[str]:
    """Same node, a new bootID, Ready, the bad condition gone."""
    now = after["nodes"].get(node)
    if now is None:
        return [f"{node} is gone (it should have been rebooted in place)"]
    problems = []
    if _boot_id(now) == _boot_id(before["nodes"][node]):
        problems.append(f"{node} bootID unchanged")
    if not _ready(now):
        problems.append(f"{node} not Ready")
    if _bad_conditions(now):
        problems.append(f"{node} still has {_bad_conditions(now)}")
    return problems


def repaired(node: str, before: State, after: State) -> list[str]:
    """Same node, same boot, Ready, the bad condition gone (repair runs no reboot)."""
    now = after["nodes"].get(node)
    if now is None:
        return [f"{node} is gone (it should have been repaired in place)"]
    problems = []
    if _boot_id(now) != _boot_id(before["nodes"][node]):
        problems.append(f"{node} was rebooted (a repair does not reboot)")
    if not _ready(now):
        problems.append(f"{node} not Ready")
    if _bad_conditions(now):
        problems.append(f"{node} still has {_bad_conditions(now)}")
    return problems


@dataclass(frozen=True)
class Flow:
    name: str
    scenario: str  # file name under scenarios/
    node: str  # the node the suite breaks
    cls: str  # its node class
    ladder: tuple[dict[str, Any], ...]
    calls: dict[str, int]  # destructive audit verb -> how many times the step makes it
    outcome: Outcome
    azure_replace_mode: str | None = None

    @property
    def scenario_path(self) -> Path:
        return SCENARIOS / self.scenario

    @property
    def cloud(self) -> str:
        """The audit log's ``api`` of the flow's cloud calls."""
        return "azure" if self.scenario.startswith("azure") else "aws"

    @property
    def destructive(self) -> frozenset[str]:
        return AZURE_DESTRUCTIVE if self.cloud == "azure" else AWS_DESTRUCTIVE

    def configure(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The emulator's generated daemon configuration, changed for this flow."""
        raw["leaderElection"] = dict(LEADER_ELECTION)
        # A loaded machine may starve a watch for seconds: do not freeze the engine for it (and a
        # quiet watch is re-opened every third of this: fewer re-opens, less CPU per daemon).
        raw["safety"]["staleAfter"] = "15s"
        raw["safety"]["maxConcurrent"] = 1
        if self.azure_replace_mode is not None:
            raw["clusters"][0]["azure"]["replaceMode"] = self.azure_replace_mode
        for cls in raw["nodeClasses"]:
            if cls["name"] != self.cls:
                continue
            cls["ladder"] = [dict(step) for step in self.ladder]
            cls["drain"].update({"timeout": "20s", "onTimeout": "proceed", "gracePeriod": "1s"})
        return raw


TIMEOUT = f"{STEP_TIMEOUT_S}s"
REPAIR = {"action": "repair", "timeout": TIMEOUT, "command": "systemctl restart containerd kubelet"}
REBOOT = {"action": "reboot", "timeout": TIMEOUT}
REPLACE = {"action": "replace", "timeout": TIMEOUT}

FLOWS: tuple[Flow, ...] = (
    Flow(
        "aws-replace",
        "aws-workers.yaml",
        "workers-1",
        "workers",
        (REPLACE,),
        {"TerminateInstanceInAutoScalingGroup": 1},
        replaced,
    ),
    Flow("aws-reboot", "aws-pets.yaml", "pets-1", "pets", (REBOOT,), {"RebootInstances": 1}, rebooted),
    Flow("aws-repair", "aws-pets.yaml", "pets-1", "pets", (REPAIR,), {"SendCommand": 1}, repaired),
    Flow(
        "azure-reimage",
        "azure-workers.yaml",
        "workers-1",
        "workers",
        (REPLACE,),
        {"reimage": 1},
        rebooted,
        azure_replace_mode="reimage",
    ),
    Flow(
        "azure-delete",
        "azure-workers.yaml",
        "workers-1",
        "workers",
        (REPLACE,),
        {"deleteInstances": 1, "update": 1},
        replaced,
        azure_replace_mode="delete",
    ),
    Flow("azure-restart", "azure-pets.yaml", "pets-1", "pets", (REBOOT,), {"restart": 1}, rebooted),
    Flow("azure-repair", "azure-pets.yaml", "pets-1", "pets", (REPAIR,), {"runCommand": 1}, repaired),
)
FLOW_BY_NAME = {flow.name: flow for flow in FLOWS}
