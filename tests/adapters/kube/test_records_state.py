"""Per-node records and the state ConfigMap against the emulator, including lost races."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.errors import NotFound
from noderescue.adapters.kube.records import (
    NodeIdentityChanged,
    StaleRecord,
    record_from_json,
    record_to_json,
    write_record,
)
from noderescue.adapters.kube.state import StateStore
from noderescue.adapters.kube.transport import JSON_PATCH, request_json
from noderescue.core.model import RECORD_ANNOTATION, Action, HistoryEvent, Pause, Phase, Record
from noderescue.sim.cluster import SimCluster
from tests.adapters.kube.conftest import new_client


def node_uid(sim: SimCluster, name: str) -> str:
    node = sim.get_node(name)
    assert node is not None
    return str(node["metadata"]["uid"])


def stored_record(sim: SimCluster, name: str) -> Record | None:
    node = sim.get_node(name)
    assert node is not None
    text = (node["metadata"].get("annotations") or {}).get(RECORD_ANNOTATION)
    return None if text is None else record_from_json(text, name)


def make_record(uid: str, phase: Phase, **changes: Any) -> Record:
    base = Record(
        node="workers-0",
        node_uid=uid,
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=phase,
        attempt=1,
        started=1000.0,
        step_started=1000.0,
        deadline=1600.0,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def node(sim: SimCluster) -> str:
    sim.add_node("workers-0", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-0")
    return "workers-0"


async def test_write_read_and_clear(sim: SimCluster, api: KubeClient, node: str) -> None:
    uid = node_uid(sim, node)
    record = make_record(uid, Phase.CORDONED, cordoned_by_us=True)
    await write_record(api, node, record, expected_uid=uid)
    assert stored_record(sim, node) == record

    later = dataclasses.replace(record, phase=Phase.DRAINING)
    await write_record(api, node, later, expected_uid=uid)
    assert stored_record(sim, node) == later

    await write_record(api, node, None, expected_uid=uid)
    assert stored_record(sim, node) is None


async def test_a_stale_writer_never_rolls_the_record_back(
    sim: SimCluster, api: KubeClient, node: str
) -> None:
    uid = node_uid(sim, node)
    newer = make_record(uid, Phase.ACTING, operation_id="op-1")
    await write_record(api, node, newer, expected_uid=uid)
    with pytest.raises(StaleRecord) as caught:
        await write_record(api, node, make_record(uid, Phase.CORDONED), expected_uid=uid)
    assert caught.value.current == newer
    assert stored_record(sim, node) == newer


async def test_lost_race_is_retried_and_respects_the_newer_record(
    sim: SimCluster, api: KubeClient, kubeconfig: Path, node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer stores a newer record between our read and our patch: our patch fails its
    resourceVersion test, we re-read, see the newer record and refuse to overwrite it."""
    uid = node_uid(sim, node)
    rival = make_record(uid, Phase.DRAINING)
    other = await new_client(kubeconfig)
    patches: list[int] = []
    real_request = request_json

    async def interleaving(api_: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH":
            patches.append(1)
            if len(patches) == 1:  # the rival wins the race, over real HTTP
                body = [
                    {
                        "op": "add",
                        "path": "/metadata/annotations/noderescue.io~1remediation",
                        "value": record_to_json(rival),
                    }
                ]
                await request_json(other, "PATCH", path, body=body, content_type=JSON_PATCH)
        return await real_request(api_, method, path, **kwargs)

    monkeypatch.setattr("noderescue.adapters.kube.records.request_json", interleaving)
    try:
        with pytest.raises(StaleRecord):
            await write_record(api, node, make_record(uid, Phase.CORDONED), expected_uid=uid)
    finally:
        await other.close()
    assert len(patches) == 1, "the losing patch is not retried once the newer record is seen"
    assert stored_record(sim, node) == rival


async def test_lost_race_against_an_unrelated_write_is_retried(
    sim: SimCluster, api: KubeClient, kubeconfig: Path, node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = node_uid(sim, node)
    other = await new_client(kubeconfig)
    patches: list[int] = []
    real_request = request_json

    async def interleaving(api_: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH":
            patches.append(1)
            if len(patches) == 1:  # someone labels the node meanwhile: a new resourceVersion
                await request_json(
                    other,
                    "PATCH",
                    path,
                    body={"metadata": {"labels": {"x": "y"}}},
                    content_type="application/merge-patch+json",
                )
        return await real_request(api_, method, path, **kwargs)

    monkeypatch.setattr("noderescue.adapters.kube.records.request_json", interleaving)
    record = make_record(uid, Phase.STARTED)
    try:
        await write_record(api, node, record, expected_uid=uid)
    finally:
        await other.close()
    assert len(patches) == 2
    assert stored_record(sim, node) == record
    assert (sim.get_node(node) or {})["metadata"]["labels"]["x"] == "y"


async def test_a_reused_node_name_is_refused(sim: SimCluster, api: KubeClient, node: str) -> None:
    with pytest.raises(NodeIdentityChanged):
        await write_record(api, node, make_record("another-uid", Phase.STARTED), expected_uid="another-uid")
    assert stored_record(sim, node) is None


async def test_history_from_two_writers_loses_nothing(api: KubeClient, kubeconfig: Path) -> None:
    other = await new_client(kubeconfig)
    try:
        first, second = StateStore(api, "default"), StateStore(other, "default")

        async def write(store: StateStore, node: str) -> None:
            for i in range(8):
                event = HistoryEvent(ts=1000.0 + i, action=Action.REBOOT, node=node, attempt_start=i == 0)
                await store.append([event], keep_after=0.0)

        await asyncio.gather(write(first, "a"), write(second, "b"))
        history, pause = await first.load()
    finally:
        await other.close()
    assert pause is None
    assert len(history.events) == 16
    assert history.attempts_since("a", 0.0) == 1
    assert history.count_action_since(Action.REBOOT, 1003.5) == 8


async def test_history_is_compacted_and_pause_persists(api: KubeClient) -> None:
    store = StateStore(api, "default")
    assert await store.load() == ((await store.load())[0], None)
    old = HistoryEvent(ts=10.0, action=Action.REPLACE, node="n1")
    new = HistoryEvent(ts=5000.0, action=Action.REPLACE, node="n2")
    await store.append([old], keep_after=0.0)
    await store.set_pause(Pause(reason="maintenance", since=42.0))
    history = await store.append([new], keep_after=100.0)
    assert history.events == (new,)
    loaded, pause = await StateStore(api, "default").load()
    assert loaded.events == (new,)
    assert pause == Pause(reason="maintenance", since=42.0)
    await store.clear_pause()
    assert (await store.load())[1] is None


async def test_state_in_a_missing_namespace_is_not_found(api: KubeClient) -> None:
    with pytest.raises(NotFound):
        await StateStore(api, "no-such-namespace").set_pause(Pause(reason="x"))
