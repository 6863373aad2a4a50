"""The suite's own checks, without processes: each kind of breakage is caught, a clean end is not
flagged, and a trace becomes the right cases."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.e2e.crashpoints.flows import FLOW_BY_NAME, State
from tests.e2e.crashpoints.harness import CaseResult, crash_points, judge, render_table

AGENT = "noderescue/0.1.0 Boto3/1.35"


def node(
    name: str, *, boot: str = "b0", ready: bool = True, cordoned: bool = False, bad: bool = False
) -> Any:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    conditions.append({"type": "KernelDeadlock", "status": "True" if bad else "False"})
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"nodeInfo": {"bootID": boot}, "conditions": conditions},
    }


def state(*nodes: Any) -> State:
    return {"nodes": {n["metadata"]["name"]: n for n in nodes}}


def call(verb: str, api: str = "aws") -> dict[str, Any]:
    return {"api": api, "verb": verb, "name": "i-1", "code": 200, "userAgent": AGENT}


SUCCEEDED = {"reason": "RemediationSucceeded", "count": 1}
WORKERS = state(*(node(f"workers-{i}") for i in range(4)))
REPLACED = state(*(node(f"workers-{i}") for i in (0, 2, 3, 4)))
PETS = state(*(node(f"pets-{i}") for i in range(4)))
REBOOTED = state(*(node(f"pets-{i}", boot="b1" if i == 1 else "b0") for i in range(4)))


def test_a_clean_replace_passes() -> None:
    flow = FLOW_BY_NAME["aws-replace"]
    lease = {"api": "kubernetes", "verb": "update", "name": "noderescue-leader", "userAgent": AGENT}
    audit = [call("TerminateInstanceInAutoScalingGroup"), lease]
    assert judge(flow, audit, [SUCCEEDED], [], WORKERS, REPLACED) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {"audit": [call("TerminateInstanceInAutoScalingGroup")] * 2}, "destructive calls", id="twice"
        ),
        pytest.param({"audit": []}, "destructive calls", id="never"),
        pytest.param(
            {"audit": [call("TerminateInstanceInAutoScalingGroup"), call("RebootInstances")]},
            "destructive calls",
            id="another-call",
        ),
        pytest.param({"events": [{**SUCCEEDED, "count": 2}]}, "told 2 times", id="aggregated-twice"),
        pytest.param({"events": [SUCCEEDED, SUCCEEDED]}, "told 2 times", id="two-events"),
        pytest.param({"events": []}, "told 0 times", id="never-told"),
        pytest.param({"events": [SUCCEEDED, {"reason": "NeedsHuman"}]}, "NeedsHuman", id="parked"),
        pytest.param({"records": ["noderescue-record-workers-1"]}, "records left", id="record-left"),
        pytest.param({"after": WORKERS}, "still exists", id="not-replaced"),
        pytest.param(
            {"after": state(*(node(f"workers-{i}", cordoned=i == 4) for i in (0, 2, 3, 4)))},
            "left cordoned: ['workers-4']",
            id="cordon-left",
        ),
        pytest.param(
            {"after": state(*(node(f"workers-{i}") for i in (0, 2, 3, 4, 5)))},
            "want exactly one replacement",
            id="two-replacements",
        ),
    ],
)
def test_each_breakage_is_caught(change: dict[str, Any], problem: str) -> None:
    flow = FLOW_BY_NAME["aws-replace"]
    case: dict[str, Any] = {
        "audit": [call("TerminateInstanceInAutoScalingGroup")],
        "events": [SUCCEEDED],
        "records": [],
        "after": REPLACED,
        **change,
    }
    problems = judge(flow, case["audit"], case["events"], case["records"], WORKERS, case["after"])
    assert any(problem in p for p in problems), problems


def test_reboot_and_repair_are_told_apart_by_the_boot_id() -> None:
    reboot, repair = FLOW_BY_NAME["aws-reboot"], FLOW_BY_NAME["aws-repair"]
    assert judge(reboot, [call("RebootInstances")], [SUCCEEDED], [], PETS, REBOOTED) == []
    assert judge(repair, [call("SendCommand")], [SUCCEEDED], [], PETS, PETS) == []
    assert "pets-1 bootID unchanged" in judge(reboot, [call("RebootInstances")], [SUCCEEDED], [], PETS, PETS)
    assert any("rebooted" in p for p in judge(repair, [call("SendCommand")], [SUCCEEDED], [], PETS, REBOOTED))
    still_bad = copy.deepcopy(REBOOTED)
    still_bad["nodes"]["pets-1"] = node("pets-1", boot="b1", bad=True)
    assert any(
        "KernelDeadlock" in p
        for p in judge(reboot, [call("RebootInstances")], [SUCCEEDED], [], PETS, still_bad)
    )


def test_azure_calls_are_counted_only_from_azure() -> None:
    flow = FLOW_BY_NAME["azure-delete"]
    after = REPLACED
    lease_update = {"api": "kubernetes", "verb": "update", "name": "noderescue-leader", "userAgent": AGENT}
    audit = [call("deleteInstances", "azure"), call("update", "azure"), lease_update]
    assert judge(flow, audit, [SUCCEEDED], [], WORKERS, after) == []
    assert any(
        "destructive" in p
        for p in judge(flow, [*audit, call("update", "azure")], [SUCCEEDED], [], WORKERS, after)
    )


def test_crash_points_follow_the_trace() -> None:
    trace = [
        "kube.state.create.before",
        "kube.state.create.after",
        "kube.record.put.before",
        "kube.record.put.after",
    ]
    trace += [
        "cloud.aws.reboot.before",
        "cloud.aws.reboot.after",
        "kube.record.put.before",
        "kube.record.put.after",
    ]
    trace += ["kube.state.create.before"]
    assert crash_points(trace, trigger_index=2) == [
        "kube.state.create.before",
        "kube.state.create.after",
        "kube.record.put.before",
        "kube.record.put.after",
        "cloud.aws.reboot.before",
        "cloud.aws.reboot.after",
        "kube.state.create.before@2",
    ]
    assert crash_points([], trigger_index=0) == []


def test_the_table_has_a_row_per_point_and_a_column_per_mode() -> None:
    results = [
        CaseResult("aws-reboot", None, "restart"),
        CaseResult("aws-reboot", "cloud.aws.reboot.after", "restart", problems=["destructive calls x2"]),
        CaseResult("aws-reboot", "cloud.aws.reboot.after", "standby"),
    ]
    table = render_table(results).splitlines()
    assert table[0].split() == ["flow", "failpoint", "restart", "standby"]
    assert table[1].split()[:2] == ["aws-reboot", "(baseline:"]
    assert table[2].split()[:3] == ["aws-reboot", "cloud.aws.reboot.after", "destructive"]
    assert table[2].split()[-1] == "ok"
    assert table[-1].startswith(
        "2/3 cases ok; 2 (flow, failpoint, mode) crash cases, 1 (flow, failpoint) pairs"
    )
