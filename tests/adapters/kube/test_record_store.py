"""Records and replacement claims in noderescue's own namespace, against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from noderescue import failpoints
from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.errors import NotFound
from noderescue.adapters.kube.record_store import (
    KIND_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RecordStore,
    claim_object_name,
    record_object_name,
)
from noderescue.adapters.kube.records import (
    NodeIdentityChanged,
    StaleRecord,
    record_from_json,
    record_to_json,
)
from noderescue.adapters.kube.transport import MERGE_PATCH, request_json
from noderescue.core.model import RECORD_ANNOTATION, Action, Phase, Record
from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import CONFIGMAPS
from tests.adapters.kube.conftest import new_client

NS = "noderescue"


def make_record(
    node: str = "workers-0", uid: str = "uid-0", phase: Phase = Phase.STARTED, **changes: Any
) -> Record:
    base = Record(
        node=node,
        node_uid=uid,
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=phase,
        attempt=1,
        started=1000.0,
        step_started=1000.0,
        deadline=1600.0,
        ladder_hash="sha256:abc",
    )
    return dataclasses.replace(base, **changes)


def stored_configmap(sim: SimCluster, name: str) -> dict[str, Any] | None:
    return sim.store.get(CONFIGMAPS, NS, name)


@pytest.fixture
async def other_api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    """A second client: another daemon (or a kubelet) with its own connection."""
    client = await new_client(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def disarm() -> Any:
    yield
    failpoints.arm("")


async def test_put_load_round_trip_and_delete(sim: SimCluster, api: KubeClient) -> None:
    store = RecordStore(api, NS)
    record = make_record(calls=("replace",), operation_id="op-1", ladder_source="rule/2")
    other = make_record("workers-1", "uid-1", Phase.NEEDS_HUMAN, action=Action.REBOOT)
    await store.put(record)
    await store.put(other)

    obj = stored_configmap(sim, "noderescue-record-workers-0")
    assert obj is not None
    assert obj["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, KIND_LABEL: "record"}
    assert record_from_json(obj["data"]["record"]) == record

    loaded = await RecordStore(api, NS).load()
    assert loaded.records == {"workers-0": record, "workers-1": other}
    assert loaded.claims == {} and loaded.malformed == {}

    later = dataclasses.replace(record, phase=Phase.VERIFYING)
    await store.put(later)
    assert await RecordStore(api, NS).get("workers-0") == later

    await store.delete("workers-0")
    await store.delete("workers-0")  # idempotent
    assert (await RecordStore(api, NS).load()).records == {"workers-1": other}


async def test_a_node_writing_the_annotation_cannot_create_or_change_a_record(
    sim: SimCluster, api: KubeClient, other_api: KubeClient
) -> None:
    """A kubelet may write annotations on its own Node: a forged record there (any phase, a far
    deadline, an operation of its choosing) is not a record."""
    sim.add_node("workers-0", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-0")
    sim.add_node("workers-1", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-1")
    node = sim.get_node("workers-1")
    assert node is not None
    store = RecordStore(api, NS)
    genuine = make_record("workers-1", node["metadata"]["uid"], Phase.DRAINING)
    await store.put(genuine)
    await store.mirror("workers-1", genuine, expected_uid=genuine.node_uid)

    for name in ("workers-0", "workers-1"):  # the kubelets forge records on their own Nodes
        forged = make_record(name, "whatever", Phase.ACTING, deadline=2e9, operation_id="attacker-op")
        patch = {"metadata": {"annotations": {RECORD_ANNOTATION: record_to_json(forged)}}}
        await request_json(other_api, "PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)

    loaded = await RecordStore(api, NS).load()
    assert loaded.records == {"workers-1": genuine}
    assert await RecordStore(api, NS).get("workers-0") is None
    # And our own next write is judged against the stored record, not the forged annotation.
    await store.put(dataclasses.replace(genuine, phase=Phase.ACTING))
    assert (await RecordStore(api, NS).load()).records["workers-1"].phase == Phase.ACTING


async def test_a_record_outlives_its_node(sim: SimCluster, api: KubeClient) -> None:
    sim.add_node("workers-0", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-0")
    node = sim.get_node("workers-0")
    assert node is not None
    record = make_record(uid=node["metadata"]["uid"], phase=Phase.ACTING, calls=("replace",))
    await RecordStore(api, NS).put(record)
    await request_json(api, "DELETE", "/api/v1/nodes/workers-0")  # the node lifecycle controller
    assert sim.get_node("workers-0") is None
    assert (await RecordStore(api, NS).load()).records == {"workers-0": record}


async def test_a_stale_writer_never_rolls_a_newer_record_back(api: KubeClient, other_api: KubeClient) -> None:
    """Two daemons (a leader and one that still thinks it leads): the second stores a newer record
    after the first last read it; the first's write loses its resourceVersion race, re-reads, and
    refuses to overwrite."""
    first, second = RecordStore(api, NS), RecordStore(other_api, NS)
    await first.put(make_record(phase=Phase.CORDONED))  # first now knows a resourceVersion
    newer = make_record(phase=Phase.ACTING, calls=("replace",))
    await second.put(newer)
    with pytest.raises(StaleRecord) as caught:
        await first.put(make_record(phase=Phase.DRAINING))
    assert caught.value.current == newer
    assert await RecordStore(api, NS).get("workers-0") == newer

    # A lost race against an older write is retried: ours is newer and is stored.
    await second.put(dataclasses.replace(newer, operation_id="op-1"))
    final = make_record(phase=Phase.VERIFYING, calls=("replace",), operation_id="op-1")
    await first.put(final)
    assert await RecordStore(api, NS).get("workers-0") == final


async def test_a_recorded_call_intent_is_never_erased_by_a_stale_writer(
    api: KubeClient, other_api: KubeClient
) -> None:
    first, second = RecordStore(api, NS), RecordStore(other_api, NS)
    acting = make_record(phase=Phase.ACTING)
    await first.put(acting)
    await second.put(dataclasses.replace(acting, calls=("reboot",)))
    with pytest.raises(StaleRecord):
        await first.put(dataclasses.replace(acting, deadline=1700.0))  # same phase, no intent
    assert (await RecordStore(api, NS).get("workers-0")) == dataclasses.replace(acting, calls=("reboot",))


async def test_racing_writers_end_at_the_most_advanced_record(api: KubeClient, other_api: KubeClient) -> None:
    """Two writers on the same records at once, one moving forward and one replaying the phases
    backwards (a stale view): every record ends at the most advanced phase."""
    phases = [Phase.STARTED, Phase.CORDONED, Phase.DRAINING, Phase.ACTING, Phase.VERIFYING]
    nodes = [f"workers-{i}" for i in range(12)]

    async def write(store: RecordStore, node: str, order: list[Phase]) -> None:
        for phase in order:
            try:
                await store.put(make_record(node, phase=phase))
            except StaleRecord:
                pass

    forward, backward = RecordStore(api, NS), RecordStore(other_api, NS)
    await asyncio.gather(
        *(write(forward, n, phases) for n in nodes), *(write(backward, n, phases[::-1]) for n in nodes)
    )
    loaded = await RecordStore(api, NS).load()
    assert {n: r.phase for n, r in loaded.records.items()} == dict.fromkeys(nodes, Phase.VERIFYING)


async def test_a_record_of_another_node_object_with_that_name_is_not_overwritten(api: KubeClient) -> None:
    store = RecordStore(api, NS)
    old = make_record(uid="old-uid", phase=Phase.ACTING)
    await store.put(old)
    with pytest.raises(NodeIdentityChanged):
        await RecordStore(api, NS).put(make_record(uid="new-uid", attempt=5))
    assert await store.get("workers-0") == old


async def test_a_claim_is_exclusive_across_daemons_and_restarts(
    api: KubeClient, other_api: KubeClient
) -> None:
    first, second = RecordStore(api, NS), RecordStore(other_api, NS)
    won = await asyncio.gather(
        first.claim("new-uid", "workers-9", "workers-1"), second.claim("new-uid", "workers-9", "workers-2")
    )
    assert sorted(won) == [False, True]
    winner = "workers-1" if won[0] else "workers-2"
    loser = "workers-2" if won[0] else "workers-1"

    restarted = RecordStore(api, NS)  # a new process: nothing in memory
    assert await restarted.claim("new-uid", "workers-9", winner) is True  # a retry of the same replace
    assert await restarted.claim("new-uid", "workers-9", loser) is False
    claims = (await restarted.load()).claims
    assert set(claims) == {"new-uid"}
    assert claims["new-uid"].replaced_node == winner
    assert claims["new-uid"].new_node == "workers-9"


async def test_prune_removes_only_old_claims_of_vanished_nodes(sim: SimCluster, api: KubeClient) -> None:
    now = [1000.0]
    store = RecordStore(api, NS, clock=lambda: now[0])
    await store.claim("live-uid", "live", "old-a")
    await store.claim("gone-old-uid", "gone-old", "old-b")
    now[0] = 5000.0
    await store.claim("gone-recent-uid", "gone-recent", "old-c")
    await store.put(make_record())  # records are not claims

    assert await store.prune_claims({"live-uid"}, older_than=4000.0) == 1
    loaded = await store.load()
    assert set(loaded.claims) == {"live-uid", "gone-recent-uid"}
    assert set(loaded.records) == {"workers-0"}
    assert stored_configmap(sim, claim_object_name("gone-old-uid")) is None
    assert await store.prune_claims({"live-uid"}, older_than=4000.0) == 0


async def _create_configmap(api: KubeClient, name: str, kind: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY, KIND_LABEL: kind}},
        "data": data,
    }
    await request_json(api, "POST", f"/api/v1/namespaces/{NS}/configmaps", body=body)


async def test_a_malformed_object_is_skipped_and_reported(api: KubeClient) -> None:
    store = RecordStore(api, NS)
    good = make_record()
    await store.put(good)
    misplaced = record_to_json(make_record("workers-7"))  # the record of another node
    await _create_configmap(api, "noderescue-record-garbage", "record", {"record": "{not json"})
    await _create_configmap(api, "noderescue-record-workers-3", "record", {"record": misplaced})
    await _create_configmap(api, "noderescue-record-empty", "record", {})
    await _create_configmap(api, "noderescue-claim-x", "claim", {"claim": '{"v": 1}'})

    loaded = await RecordStore(api, NS).load()
    assert loaded.records == {"workers-0": good}
    assert loaded.claims == {}
    assert set(loaded.malformed) == {
        "noderescue-record-garbage",
        "noderescue-record-workers-3",
        "noderescue-record-empty",
        "noderescue-claim-x",
    }
    assert "workers-7" in loaded.malformed["noderescue-record-workers-3"]

    # A put over an unreadable object of its own node overwrites it (it is older than anything).
    await _create_configmap(api, record_object_name("workers-5"), "record", {"record": "[]"})
    fixed = make_record("workers-5", "uid-5")
    await store.put(fixed)
    assert await store.get("workers-5") == fixed


async def test_load_pages_through_more_than_500_objects(
    api: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = RecordStore(api, NS)
    records = [make_record(f"node-{i:04d}", f"uid-{i}") for i in range(510)]
    semaphore = asyncio.Semaphore(16)

    async def put(record: Record) -> None:
        async with semaphore:
            await writer.put(record)

    await asyncio.gather(*(put(r) for r in records))
    await writer.claim("new-uid", "node-new", "node-0001")

    pages: list[dict[str, str]] = []
    real = request_json

    async def counting(api_: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET" and path.endswith("/configmaps"):
            pages.append(dict(kwargs.get("query") or {}))
        return await real(api_, method, path, **kwargs)

    monkeypatch.setattr("noderescue.adapters.kube.transport.request_json", counting)
    loaded = await RecordStore(api, NS).load()
    assert len(loaded.records) == 510 and set(loaded.claims) == {"new-uid"}
    assert loaded.records["node-0509"] == records[509]
    assert len(pages) == 2
    assert all(p["limit"] == "500" and "noderescue.io/kind" in p["labelSelector"] for p in pages)
    assert "continue" in pages[1]


async def test_a_node_name_too_long_for_an_object_name_still_has_its_record(
    sim: SimCluster, api: KubeClient
) -> None:
    long_name = ".".join(["ip-10-0-0-1" + "x" * 50] * 4)  # 247 characters: a valid node name
    record = make_record(long_name, "uid-long")
    store = RecordStore(api, NS)
    await store.put(record)
    name = record_object_name(long_name)
    assert len(name) <= 253 and name.startswith("noderescue-record-ip-10-0-0-1")
    assert name != record_object_name(long_name[:-1])
    assert (await RecordStore(api, NS).load()).records == {long_name: record}
    await store.delete(long_name)
    assert stored_configmap(sim, name) is None


async def test_mirror_shows_the_record_on_the_node_and_never_raises(sim: SimCluster, api: KubeClient) -> None:
    sim.add_node("workers-0", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-0")
    node = sim.get_node("workers-0")
    assert node is not None
    uid = node["metadata"]["uid"]
    store = RecordStore(api, NS)
    record = make_record(uid=uid)

    def annotation() -> str | None:
        current = sim.get_node("workers-0")
        assert current is not None
        value: str | None = (current["metadata"].get("annotations") or {}).get(RECORD_ANNOTATION)
        return value

    await store.mirror("workers-0", record, expected_uid=uid)
    assert orjson.loads(annotation() or "null") == orjson.loads(record_to_json(record))
    await store.mirror("workers-0", record, expected_uid="another-uid")  # a namesake: left alone
    await store.mirror("workers-0", None, expected_uid="another-uid")
    assert annotation() is not None
    await store.mirror("workers-0", None, expected_uid=uid)
    assert annotation() is None
    await store.mirror("workers-0", None, expected_uid=uid)  # nothing to remove
    await store.mirror("gone", record, expected_uid=uid)  # no such node

    broken = RecordStore(api, NS)
    await broken.mirror("bad name/with/slashes", record, expected_uid=uid)  # an API error: logged
    # The mirror is never read back as authority.
    assert (await store.load()).records == {}


async def test_put_in_a_missing_namespace_is_not_found(api: KubeClient) -> None:
    with pytest.raises(NotFound):
        await RecordStore(api, "no-such-namespace").put(make_record())


async def test_failpoints_frame_the_writes(
    sim: SimCluster, api: KubeClient, tmp_path: Path, disarm: None
) -> None:
    trace = tmp_path / "trace"
    store = RecordStore(api, NS)
    failpoints.arm("kube.record.put.after=raise", trace=str(trace))
    with pytest.raises(failpoints.FailpointError):
        await store.put(make_record())
    # The write went out before the point: a crash there leaves the record stored.
    assert await RecordStore(api, NS).get("workers-0") == make_record()
    failpoints.arm("", trace=str(trace))
    await store.claim("u", "n", "r")
    await store.delete("workers-0")
    await store.prune_claims(set(), older_than=1e12)
    assert trace.read_text().split() == [
        "kube.record.put.before",
        "kube.record.put.after",
        "kube.claim.before",
        "kube.claim.after",
        "kube.record.delete.before",
        "kube.record.delete.after",
        "kube.claim.delete.before",
        "kube.claim.delete.after",
    ]
