"""Everything a node writes is capped on the way into the view (a kubelet may write its own
Node's status, labels and annotations, up to the API server's object size limit), and what was
cut is counted."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from noderescue.adapters.kube import nodeview
from noderescue.adapters.kube.nodeview import node_view_from_json
from tests.adapters.kube.test_nodeview import NODE, T0

HUGE = "X" * 1_000_000


def viewed(obj: dict[str, Any]) -> tuple[Any, list[str]]:
    cuts: list[str] = []
    return node_view_from_json(obj, first_seen=T0, cut=cuts.append), cuts


def test_a_node_within_the_caps_is_kept_whole_and_nothing_is_counted() -> None:
    view, cuts = viewed(copy.deepcopy(NODE))
    assert cuts == []
    assert view.provider_id == NODE["spec"]["providerID"]
    assert view.conditions[0].reason == "KubeletNotReady"


@pytest.mark.parametrize(
    ("field", "change", "read"),
    [
        pytest.param(
            "reason",
            lambda n: n["status"]["conditions"][0].__setitem__("reason", HUGE),
            lambda v: v.conditions[0].reason,
            id="condition-reason",
        ),
        pytest.param(
            "label_value",
            lambda n: n["metadata"]["labels"].__setitem__("noderescue.io/class", HUGE),
            lambda v: v.labels.get("noderescue.io/class", ""),
            id="label-value",
        ),
        pytest.param(
            "provider_id",
            lambda n: n["spec"].__setitem__("providerID", "aws:///eu-west-1a/i-0abc" + HUGE),
            lambda v: v.provider_id,
            id="provider-id",
        ),
        pytest.param(
            "boot_id",
            lambda n: n["status"]["nodeInfo"].__setitem__("bootID", HUGE),
            lambda v: v.boot_id,
            id="boot-id",
        ),
        pytest.param(
            "cordoned_by",
            lambda n: n["metadata"]["annotations"].__setitem__("noderescue.io/cordoned-by", HUGE),
            lambda v: v.cordoned_by,
            id="cordoned-by",
        ),
    ],
)
def test_a_huge_string_is_cut_marked_and_counted(field: str, change: Any, read: Any) -> None:
    obj = copy.deepcopy(NODE)
    change(obj)

    view, cuts = viewed(obj)

    kept = read(view)
    assert kept is not None
    assert len(kept) <= 1100
    # A cut value never equals a value the API accepts or a node could have meant: the marker
    # is outside every field's alphabet.
    assert kept.endswith(nodeview.CUT_MARK)
    assert cuts == [field]


def test_huge_label_keys_and_too_many_labels_are_dropped_and_counted() -> None:
    obj = copy.deepcopy(NODE)
    obj["metadata"]["labels"]["x/" + HUGE] = "1"
    obj["metadata"]["labels"].update({f"flood.example/{i}": "v" for i in range(5000)})

    view, cuts = viewed(obj)

    assert len(view.labels) <= nodeview.MAX_LABELS
    assert all(len(key) <= 317 for key in view.labels)
    assert view.labels["noderescue.io/class"] == "workers"  # the first ones are kept
    assert "label_key" in cuts and "labels" in cuts


def test_too_many_conditions_are_cut_and_counted() -> None:
    obj = copy.deepcopy(NODE)
    obj["status"]["conditions"] += [{"type": f"Fake{i}", "status": "True"} for i in range(10_000)]

    view, cuts = viewed(obj)

    assert len(view.conditions) == nodeview.MAX_CONDITIONS
    assert view.condition("Ready") is not None
    assert cuts == ["conditions"]


def test_an_oversized_record_annotation_is_not_kept() -> None:
    obj = copy.deepcopy(NODE)
    obj["metadata"]["annotations"]["noderescue.io/remediation"] = '{"v":1,"pad":"' + HUGE + '"}'

    view, cuts = viewed(obj)

    assert view.record_json is None
    assert cuts == ["record"]


def test_unique_long_reasons_are_not_interned() -> None:
    """The intern table is shared by every view: a node writing a new long reason on every
    update must not fill it."""
    before = len(nodeview._SHARED)
    for i in range(200):
        obj = copy.deepcopy(NODE)
        obj["status"]["conditions"][0]["reason"] = f"{i:04d}" + "R" * 500
        node_view_from_json(obj, first_seen=T0)
    assert len(nodeview._SHARED) - before < 10
