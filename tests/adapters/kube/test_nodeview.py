"""Raw Node JSON -> NodeView, without a server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from noderescue.adapters.kube.nodeview import (
    MalformedObject,
    lease_renew_from_json,
    node_view_from_json,
    parse_time,
)
from noderescue.core.model import Condition

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC).timestamp()

NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "workers-1",
        "uid": "uid-1",
        "resourceVersion": "42",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {"topology.kubernetes.io/zone": "eu-west-1a", "noderescue.io/class": "workers"},
        "annotations": {
            "noderescue.io/remediation": '{"v":1}',
            "noderescue.io/cordoned-by": "noderescue",
            "node.alpha.kubernetes.io/ttl": "0",
        },
    },
    "spec": {"providerID": "aws:///eu-west-1a/i-0abc", "unschedulable": True},
    "status": {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "KubeletNotReady",
                "lastHeartbeatTime": "2024-05-01T10:05:00Z",
                "lastTransitionTime": "2024-05-01T10:01:00Z",
            },
            {"type": "KernelDeadlock", "status": "True", "lastTransitionTime": "2024-05-01T10:00:30.5Z"},
        ],
        "nodeInfo": {"bootID": "boot-1", "kubeletVersion": "v1.31.0"},
        "images": [{"names": ["registry/a:1"], "sizeBytes": 1}],
    },
}


def with_change(path: tuple[str, ...], value: object) -> dict[str, Any]:
    obj = copy.deepcopy(NODE)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


_DELETE = object()


def test_full_node_parses_every_field_the_core_reads() -> None:
    view = node_view_from_json(orjson.loads(orjson.dumps(NODE)), first_seen=123.0, lease_renew=T0 + 5)
    assert view.name == "workers-1"
    assert view.uid == "uid-1"
    assert view.zone == "eu-west-1a"
    assert view.provider_id == "aws:///eu-west-1a/i-0abc"
    assert view.unschedulable is True
    assert view.conditions == (
        Condition("Ready", "False", "KubeletNotReady", T0 + 60),
        Condition("KernelDeadlock", "True", "", T0 + 30.5),
    )
    assert view.boot_id == "boot-1"
    assert view.created == T0
    assert view.record_json == '{"v":1}'
    assert view.cordoned_by == "noderescue"
    assert view.first_seen == 123.0
    assert view.lease_renew == T0 + 5
    assert view.labels["noderescue.io/class"] == "workers"


@pytest.mark.parametrize(
    ("obj", "check"),
    [
        pytest.param(
            with_change(("metadata", "labels"), {"failure-domain.beta.kubernetes.io/zone": "z1"}),
            lambda v: v.zone == "z1",
            id="legacy-zone-label",
        ),
        pytest.param(with_change(("spec",), _DELETE), lambda v: not v.unschedulable, id="no-spec"),
        pytest.param(with_change(("status",), _DELETE), lambda v: v.conditions == (), id="no-status"),
        pytest.param(
            with_change(("metadata", "annotations"), _DELETE),
            lambda v: v.record_json is None and v.cordoned_by is None,
            id="no-annotations",
        ),
        pytest.param(
            with_change(("metadata", "creationTimestamp"), "yesterday"),
            lambda v: v.created is None,
            id="unparseable-time-is-none",
        ),
        pytest.param(
            with_change(("status", "nodeInfo"), {"bootID": ""}),
            lambda v: v.boot_id is None,
            id="empty-boot-id",
        ),
        pytest.param(
            with_change(("spec", "providerID"), ""), lambda v: v.provider_id is None, id="empty-provider"
        ),
    ],
)
def test_optional_fields(obj: dict[str, Any], check: Any) -> None:
    assert check(node_view_from_json(obj, first_seen=0.0))


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param([], id="not-an-object"),
        pytest.param(with_change(("metadata",), _DELETE), id="no-metadata"),
        pytest.param(with_change(("metadata", "name"), _DELETE), id="no-name"),
        pytest.param(with_change(("metadata", "uid"), _DELETE), id="no-uid"),
        pytest.param(with_change(("metadata", "labels"), ["a"]), id="labels-list"),
        pytest.param(with_change(("metadata", "labels"), {"a": 1}), id="label-not-string"),
        pytest.param(with_change(("status", "conditions"), {"type": "Ready"}), id="conditions-object"),
        pytest.param(with_change(("status", "conditions"), [{"type": "Ready"}]), id="condition-no-status"),
        pytest.param(with_change(("status", "conditions"), ["Ready"]), id="condition-string"),
        pytest.param(with_change(("spec",), "x"), id="spec-string"),
    ],
)
def test_malformed_nodes_raise_the_typed_error(obj: Any) -> None:
    with pytest.raises(MalformedObject):
        node_view_from_json(obj, first_seen=0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-05-01T10:00:00Z", T0, id="seconds-z"),
        pytest.param("2024-05-01T10:00:00.250000Z", T0 + 0.25, id="micro-z"),
        pytest.param("2024-05-01T12:00:00+02:00", T0, id="offset"),
        pytest.param("2024-05-01T10:00:00", T0, id="naive-is-utc"),
        pytest.param("", None, id="empty"),
        pytest.param("not a time", None, id="garbage"),
        pytest.param(None, None, id="null"),
        pytest.param(12, None, id="number"),
    ],
)
def test_parse_time(text: object, expected: float | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            {"metadata": {"name": "n1"}, "spec": {"renewTime": "2024-05-01T10:00:00.000000Z"}},
            ("n1", T0),
            id="renewed",
        ),
        pytest.param({"metadata": {"name": "n1"}, "spec": {}}, ("n1", None), id="never-renewed"),
    ],
)
def test_lease_renew(obj: dict[str, Any], expected: tuple[str, float | None]) -> None:
    assert lease_renew_from_json(obj) == expected


def test_lease_without_name_is_malformed() -> None:
    with pytest.raises(MalformedObject):
        lease_renew_from_json({"metadata": {}, "spec": {}})
