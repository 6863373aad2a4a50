"""Events on Nodes, aggregated like the kubelet's recorder."""

from __future__ import annotations

from typing import Any

from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.events import EventRecorder
from noderescue.adapters.kube.transport import list_all, request_json


async def node_events(api: KubeClient) -> list[dict[str, Any]]:
    items, _ = await list_all(api, "/api/v1/namespaces/default/events")
    return [e for e in items if e.get("involvedObject", {}).get("kind") == "Node"]


async def test_repeats_within_ten_minutes_bump_the_count(api: KubeClient) -> None:
    now = [1_700_000_000.0]
    recorder = EventRecorder(api, clock=lambda: now[0])
    for _ in range(3):
        await recorder.emit("workers-1", "uid-1", "RemediationSkipped", "gate short-circuit", type_="Warning")
        now[0] += 60
    await recorder.emit("workers-1", "uid-1", "RemediationSkipped", "gate rate-limit", type_="Warning")

    events = sorted(await node_events(api), key=lambda e: e["count"])
    assert [(e["message"], e["count"]) for e in events] == [("gate rate-limit", 1), ("gate short-circuit", 3)]
    repeated = events[1]
    assert repeated["involvedObject"] == {
        "kind": "Node",
        "name": "workers-1",
        "uid": "uid-1",
        "apiVersion": "v1",
    }
    assert repeated["source"] == {"component": "noderescue"}
    assert repeated["reportingComponent"] == "noderescue"
    assert repeated["type"] == "Warning"
    assert repeated["lastTimestamp"] > repeated["firstTimestamp"]
    assert (recorder.posted, recorder.aggregated) == (2, 2)


async def test_a_repeat_after_the_window_is_a_new_event(api: KubeClient) -> None:
    now = [1_700_000_000.0]
    recorder = EventRecorder(api, clock=lambda: now[0])
    await recorder.emit("workers-1", "uid-1", "Cordoned", "cordoned for reboot")
    now[0] += 601
    await recorder.emit("workers-1", "uid-1", "Cordoned", "cordoned for reboot")
    assert sorted(e["count"] for e in await node_events(api)) == [1, 1]


async def test_a_deleted_event_is_posted_again(api: KubeClient) -> None:
    recorder = EventRecorder(api)
    await recorder.emit("workers-1", "uid-1", "Cordoned", "cordoned")
    (event,) = await node_events(api)
    await request_json(api, "DELETE", f"/api/v1/namespaces/default/events/{event['metadata']['name']}")
    await recorder.emit("workers-1", "uid-1", "Cordoned", "cordoned")
    (again,) = await node_events(api)
    assert again["count"] == 1
    assert again["metadata"]["name"] != event["metadata"]["name"]
