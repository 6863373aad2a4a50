"""The emulator keeps metadata.managedFields like the API server does for Update operations."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.managed_fields import manager_name, track
from tests.sim.conftest import add_workers

UNSCHEDULABLE = {"f:spec": {"f:unschedulable": {}}}


def entries(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["manager"]: e for e in obj["metadata"].get("managedFields", [])}


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "uid": "u"}, "spec": dict(spec)}


@pytest.mark.parametrize(
    ("field_manager", "user_agent", "expected"),
    [
        ("kubectl-cordon", "kubectl/v1.37.1 (linux/amd64) kubernetes/f78e722", "kubectl-cordon"),
        (None, "kubectl/v1.37.1 (linux/amd64) kubernetes/f78e722", "kubectl"),
        (None, "OpenAPI-Generator/36.0.0/python", "OpenAPI-Generator"),
        (None, "", "unknown"),
        ("x" * 200, "", "x" * 128),
    ],
)
def test_manager_name(field_manager: str | None, user_agent: str, expected: str) -> None:
    assert manager_name(field_manager, user_agent) == expected


def test_an_update_takes_fields_over_and_stamps_only_its_own_entry() -> None:
    created = node(providerID="aws:///a/i-1")
    track(None, created, manager="kubelet", subresource=None, api_version="v1", now="T0")
    assert entries(created)["kubelet"]["fieldsV1"] == {"f:spec": {"f:providerID": {}}}

    ours = {**created, "spec": {**created["spec"], "unschedulable": True}}
    track(created, ours, manager="noderescue-cordon", subresource=None, api_version="v1", now="T1")
    assert entries(ours)["noderescue-cordon"]["fieldsV1"] == UNSCHEDULABLE
    assert entries(ours)["noderescue-cordon"]["time"] == "T1"
    assert entries(ours)["kubelet"]["time"] == "T0", "others' times stay"

    same = {**ours}
    track(ours, same, manager="noderescue-cordon", subresource=None, api_version="v1", now="T2")
    assert entries(same)["noderescue-cordon"]["time"] == "T1", "a no-op write stamps nothing"

    uncordoned = {**same, "spec": {"providerID": "aws:///a/i-1"}}
    track(same, uncordoned, manager="kubectl", subresource=None, api_version="v1", now="T3")
    assert set(entries(uncordoned)) == {"kubelet"}, "a removed field leaves its owner; empty entries go"

    recordoned = {**uncordoned, "spec": {**uncordoned["spec"], "unschedulable": True}}
    track(uncordoned, recordoned, manager="kubectl", subresource=None, api_version="v1", now="T4")
    assert entries(recordoned)["kubectl"] == {
        "manager": "kubectl",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "T4",
        "fieldsType": "FieldsV1",
        "fieldsV1": UNSCHEDULABLE,
    }


def test_a_takeover_moves_ownership_and_status_writes_have_their_own_entry() -> None:
    a = node(unschedulable=True)
    track(None, a, manager="alice", subresource=None, api_version="v1", now="T0")
    b = {**a, "spec": {"unschedulable": False}}
    track(a, b, manager="bob", subresource=None, api_version="v1", now="T1")
    assert set(entries(b)) == {"bob"} and entries(b)["bob"]["fieldsV1"] == UNSCHEDULABLE

    c = {**b, "status": {"phase": "Running"}}
    track(b, c, manager="bob", subresource="status", api_version="v1", now="T2")
    found = c["metadata"]["managedFields"]
    assert [(e["manager"], e.get("subresource")) for e in found] == [("bob", None), ("bob", "status")]


async def test_patches_through_the_real_client_keep_managed_fields(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    add_workers(cluster, 1)
    core = client.CoreV1Api(api)
    await core.patch_node("workers-0", {"spec": {"unschedulable": True}}, field_manager="alice")
    raw = cluster.get_node("workers-0")
    assert raw is not None
    owned = entries(raw)["alice"]
    assert owned["operation"] == "Update" and owned["fieldsV1"] == UNSCHEDULABLE
    assert owned["time"].endswith("Z") and len(owned["time"]) == len("2026-01-01T00:00:00Z")

    # No fieldManager: named after the User-Agent (this client's is noderescue-tests/1).
    await core.patch_node("workers-0", {"spec": {"unschedulable": None}})
    await core.patch_node("workers-0", {"spec": {"unschedulable": True}})
    raw = cluster.get_node("workers-0")
    assert raw is not None
    assert "alice" not in entries(raw)
    assert entries(raw)["noderescue-tests"]["fieldsV1"] == UNSCHEDULABLE

    shown = await core.read_node("workers-0")
    assert {m.manager for m in shown.metadata.managed_fields} == {"noderescue-tests"}
