"""The emulator's pure pieces: selectors, patch semantics, PDB arithmetic, kubectl's ages."""

from __future__ import annotations

from typing import Any

import pytest

from noderescue.sim.kubeapi.disruption import pdb_selector, pdb_status
from noderescue.sim.kubeapi.patch import json_patch, merge_patch, strategic_merge_patch
from noderescue.sim.kubeapi.selectors import parse_label_selector
from noderescue.sim.kubeapi.status import ApiError
from noderescue.sim.kubeapi.timestamps import human_duration

LABELS = {"app": "web", "tier": "front", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        pytest.param("", True, id="empty"),
        pytest.param("app=web,tier=front", True, id="and"),
        pytest.param("app in (db, web),tier notin (back)", True, id="sets"),
        pytest.param("app in (db)", False, id="in-miss"),
        pytest.param("missing!=x", True, id="neq-missing-key"),
        pytest.param("!app", False, id="not-exists"),
        pytest.param("replicas>2", True, id="gt"),
        pytest.param("replicas<2", False, id="lt"),
    ],
)
def test_label_selector(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


def test_unparseable_label_selector_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector("app===web")
    assert caught.value.code == 400


NODE: dict[str, Any] = {
    "metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "KernelDeadlock", "status": "False"}]
    },
    "spec": {"taints": [{"key": "t1", "effect": "NoSchedule"}]},
}


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        pytest.param(
            {"status": {"conditions": [{"type": "KernelDeadlock", "status": "True"}]}},
            lambda n: [c["status"] for c in n["status"]["conditions"]] == ["True", "True"],
            id="conditions-merge-by-type",
        ),
        pytest.param(
            {"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}},
            lambda n: [c["type"] for c in n["status"]["conditions"]] == ["KernelDeadlock"],
            id="patch-delete-element",
        ),
        pytest.param(
            {"spec": {"taints": [{"key": "t2", "effect": "NoExecute"}]}},
            lambda n: [t["key"] for t in n["spec"]["taints"]] == ["t2"],
            id="taints-are-atomic",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["y", "x"]}},
            lambda n: n["metadata"]["finalizers"] == ["x", "y"],
            id="finalizers-are-a-set",
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}},
            lambda n: n["metadata"]["finalizers"] == [],
            id="delete-from-primitive-list",
        ),
        pytest.param(
            {"$setElementOrder/conditions": [{"type": "Ready"}], "metadata": {"labels": {"a": None}}},
            lambda n: n["metadata"]["labels"] == {} and len(n["status"]["conditions"]) == 2,
            id="directives-ignored-null-deletes",
        ),
    ],
)
def test_strategic_merge_patch(patch: dict[str, Any], check: Any) -> None:
    result = strategic_merge_patch(NODE, patch)
    assert check(result)
    assert NODE["status"]["conditions"][0]["status"] == "True"  # the target is never mutated


def test_merge_patch_replaces_lists() -> None:
    result = merge_patch(NODE, {"status": {"conditions": [{"type": "X", "status": "True"}]}})
    assert result["status"]["conditions"] == [{"type": "X", "status": "True"}]


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param(
            [{"op": "add", "path": "/l/-", "value": 3}], {"l": [1, 2, 3], "m": {"k": "v"}}, id="append"
        ),
        pytest.param([{"op": "remove", "path": "/l/0"}], {"l": [2], "m": {"k": "v"}}, id="remove"),
        pytest.param(
            [{"op": "replace", "path": "/m/k", "value": "w"}], {"l": [1, 2], "m": {"k": "w"}}, id="replace"
        ),
        pytest.param(
            [{"op": "move", "from": "/m/k", "path": "/k"}], {"l": [1, 2], "m": {}, "k": "v"}, id="move"
        ),
        pytest.param(
            [{"op": "copy", "from": "/l", "path": "/c"}],
            {"l": [1, 2], "m": {"k": "v"}, "c": [1, 2]},
            id="copy",
        ),
        pytest.param(
            [{"op": "test", "path": "/m/k", "value": "v"}, {"op": "add", "path": "/m/a~1b", "value": 1}],
            {"l": [1, 2], "m": {"k": "v", "a/b": 1}},
            id="test-and-escaped-pointer",
        ),
    ],
)
def test_json_patch(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert json_patch({"l": [1, 2], "m": {"k": "v"}}, ops) == expected


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "replace", "path": "/missing", "value": 1}], id="replace-missing"),
        pytest.param([{"op": "remove", "path": "/l/9"}], id="remove-out-of-range"),
        pytest.param([{"op": "test", "path": "/l/0", "value": 9}], id="test-fails"),
    ],
)
def test_json_patch_failures_are_422(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as caught:
        json_patch({"l": [1, 2]}, ops)
    assert caught.value.code == 422


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        pytest.param({"matchLabels": {"app": "web"}}, {"app": "web"}, True, id="match-labels"),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
            {"app": "api"},
            True,
            id="expression-in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
            {"app": "web", "canary": "1"},
            False,
            id="expression-does-not-exist",
        ),
        pytest.param({}, {"anything": "x"}, True, id="empty-selects-all"),
        pytest.param(None, {"anything": "x"}, False, id="nil-selects-none"),
    ],
)
def test_pdb_selector(selector: dict[str, Any] | None, labels: dict[str, str], matches: bool) -> None:
    spec = {} if selector is None else {"selector": selector}
    assert pdb_selector({"spec": spec}).matches(labels) is matches


@pytest.mark.parametrize(
    ("spec", "healthy", "expected", "desired", "allowed"),
    [
        pytest.param({"maxUnavailable": "25%"}, 10, 10, 7, 3, id="max-percent-rounds-up"),
        pytest.param({"minAvailable": "25%"}, 10, 10, 3, 7, id="min-percent-rounds-up"),
        pytest.param({"minAvailable": 2}, 1, 3, 2, 0, id="below-budget"),
        pytest.param({}, 3, 3, 3, 0, id="no-field"),
    ],
)
def test_pdb_status(spec: dict[str, Any], healthy: int, expected: int, desired: int, allowed: int) -> None:
    status = pdb_status({"spec": spec, "metadata": {"generation": 2}}, healthy, expected)
    assert (status["desiredHealthy"], status["disruptionsAllowed"], status["observedGeneration"]) == (
        desired,
        allowed,
        2,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(5, "5s", id="seconds"),
        pytest.param(150, "2m30s", id="minutes-seconds"),
        pytest.param(700, "11m", id="minutes"),
        pytest.param(3 * 3600 + 600, "3h10m", id="hours-minutes"),
        pytest.param(30 * 3600, "30h", id="hours"),
        pytest.param(3 * 86400 + 3600, "3d1h", id="days-hours"),
        pytest.param(-1, "<invalid>", id="negative"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
