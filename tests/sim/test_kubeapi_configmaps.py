"""ConfigMaps in the emulated API server behave as the real one's: noderescue keeps its durable
records there, so create races, label-selector lists, deletes and validation must be real."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.sim.conftest import status_body

NS = "default"


def configmap(
    name: str, data: dict[str, Any] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data if data is not None else {"k": "v"},
    }


async def test_create_of_an_existing_name_is_409_already_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(NS, configmap("claim-1", {"holder": "a"}))
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap("claim-1", {"holder": "b"}))
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "AlreadyExists"
    kept = await core.read_namespaced_config_map("claim-1", NS)
    assert kept.data == {"holder": "a"}


async def test_update_with_an_old_resource_version_is_409_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(NS, configmap("rec"))
    body = configmap("rec", {"k": "w"})
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    await core.replace_namespaced_config_map("rec", NS, body)
    body["data"] = {"k": "stale"}
    with pytest.raises(ApiException) as caught:
        await core.replace_namespaced_config_map("rec", NS, body)
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "Conflict"
    assert (await core.read_namespaced_config_map("rec", NS)).data == {"k": "w"}


async def test_label_selector_lists_page_and_deletes_are_final(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for i in range(5):
        await core.create_namespaced_config_map(NS, configmap(f"r-{i}", labels={"kind": "record"}))
    await core.create_namespaced_config_map(NS, configmap("other", labels={"kind": "claim"}))
    await core.create_namespaced_config_map(NS, configmap("unlabelled"))
    first = await core.list_namespaced_config_map(NS, label_selector="kind in (record)", limit=3)
    assert [c.metadata.name for c in first.items] == ["r-0", "r-1", "r-2"]
    rest = await core.list_namespaced_config_map(
        NS, label_selector="kind in (record)", limit=3, _continue=first.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["r-3", "r-4"]
    assert not rest.metadata._continue

    await core.delete_namespaced_config_map("r-1", NS)
    with pytest.raises(ApiException) as caught:
        await core.delete_namespaced_config_map("r-1", NS)
    assert caught.value.status == 404
    listed = await core.list_namespaced_config_map(NS, label_selector="kind")
    names = [c.metadata.name for c in listed.items]
    assert names == ["other", "r-0", "r-2", "r-3", "r-4"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x" * 254, id="longer-than-253"),
        pytest.param("Upper", id="uppercase"),
        pytest.param("under_score", id="underscore"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param("trailing.", id="trailing-dot"),
    ],
)
async def test_an_invalid_name_is_422(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap(name))
    assert caught.value.status == 422
    assert status_body(caught.value)["reason"] == "Invalid"


async def test_a_name_of_253_characters_is_valid(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = ".".join(["a" * 63] * 4)[:253]
    await core.create_namespaced_config_map(NS, configmap(name))
    assert (await core.read_namespaced_config_map(name, NS)).metadata.name == name


async def test_more_than_one_mebibyte_of_data_is_422(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap("big", {"k": "x" * (1024 * 1024 + 1)}))
    assert caught.value.status == 422
    created = await core.create_namespaced_config_map(NS, configmap("big", {"k": "x" * 1000}))
    body = configmap("big", {"k": "x" * (1024 * 1024 + 1)})
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    with pytest.raises(ApiException) as caught:
        await core.replace_namespaced_config_map("big", NS, body)
    assert caught.value.status == 422


async def test_data_values_must_be_strings_and_keys_valid(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        await api.call_api(
            f"/api/v1/namespaces/{NS}/configmaps",
            "POST",
            body=configmap("typed", {"k": 1}),
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
    assert caught.value.status == 400
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap("keys", {"bad key!": "v"}))
    assert caught.value.status == 422


async def test_a_label_value_longer_than_63_is_422(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap("labelled", labels={"node": "n" * 64}))
    assert caught.value.status == 422
