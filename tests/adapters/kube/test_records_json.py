"""Record and history JSON round-trips, the progress order, error mapping: no server."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from noderescue.adapters.kube.errors import (
    Conflict,
    Expired,
    Forbidden,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
    error_from_response,
    map_error,
)
from noderescue.adapters.kube.records import MalformedRecord, progress_key, record_from_json, record_to_json
from noderescue.adapters.kube.state import (
    MalformedState,
    history_from_json,
    history_to_json,
    merged,
    pause_from_json,
    pause_to_json,
)
from noderescue.core.model import Action, History, HistoryEvent, Pause, Phase, Record

FULL = Record(
    node="workers-1",
    node_uid="uid-1",
    cls="workers",
    step=1,
    action=Action.REPLACE,
    phase=Phase.ACTING,
    attempt=2,
    started=1000.5,
    step_started=1100.0,
    deadline=1700.0,
    reason="Ready=Unknown for 5m",
    provider_id="aws:///eu-west-1a/i-1",
    instance_id="i-1",
    boot_id_before="boot-1",
    operation_id="op-7",
    cordoned_by_us=True,
    calls=("replace", "capacity"),
    ladder_source="rule/1",
    ladder_hash="sha256:0123",
)
MINIMAL = Record(
    node="workers-1",
    node_uid="uid-1",
    cls="gpu",
    step=0,
    action=Action.REPAIR,
    phase=Phase.STARTED,
    attempt=1,
    started=10.0,
    step_started=10.0,
    deadline=None,
)


@pytest.mark.parametrize("record", [pytest.param(FULL, id="full"), pytest.param(MINIMAL, id="minimal")])
def test_record_round_trip(record: Record) -> None:
    assert record_from_json(record_to_json(record), record.node) == record
    assert record_from_json(record_to_json(record)) == record  # format 2 names its node


def test_record_json_omits_absent_fields() -> None:
    doc = orjson.loads(record_to_json(MINIMAL))
    assert "operationID" not in doc and "deadline" not in doc
    assert doc["v"] == 2
    assert doc["node"] == "workers-1" and doc["calls"] == [] and doc["ladderSource"] == "class"


def test_format_1_records_are_still_read() -> None:
    """The annotation of earlier releases: no node name, no calls, no ladder."""
    text = (
        '{"v":1,"uid":"uid-1","class":"workers","step":1,"action":"replace","phase":"acting",'
        '"attempt":2,"started":1000.5,"stepStarted":1100.0,"deadline":1700.0,"operationID":"op-7"}'
    )
    record = record_from_json(text, "workers-1")
    assert record.node == "workers-1" and record.operation_id == "op-7"
    assert record.calls == () and record.ladder_source == "class" and record.ladder_hash == ""
    with pytest.raises(MalformedRecord):
        record_from_json(text)  # nothing says which node it is of


def test_a_record_found_for_another_node_is_malformed() -> None:
    with pytest.raises(MalformedRecord):
        record_from_json(record_to_json(FULL), "workers-2")


def _doc(**changes: object) -> str:
    doc = orjson.loads(record_to_json(FULL))
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return orjson.dumps(doc).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[1, 2]", id="list"),
        pytest.param(_doc(v=3), id="future-format"),
        pytest.param(_doc(v=True), id="format-bool"),
        pytest.param(_doc(node=""), id="empty-node"),
        pytest.param(_doc(calls="reboot"), id="calls-string"),
        pytest.param(_doc(calls=["reboot", 1]), id="calls-not-names"),
        pytest.param(_doc(ladderHash=7), id="ladder-hash-number"),
        pytest.param(_doc(v=None), id="no-format"),
        pytest.param(_doc(phase="exploded"), id="unknown-phase"),
        pytest.param(_doc(action="nuke"), id="unknown-action"),
        pytest.param(_doc(step="1"), id="step-string"),
        pytest.param(_doc(step=True), id="step-bool"),
        pytest.param(_doc(attempt=0), id="attempt-zero"),
        pytest.param(_doc(uid=None), id="no-uid"),
        pytest.param(_doc(started="yesterday"), id="started-string"),
        pytest.param(_doc(cordonedByUs="yes"), id="cordoned-not-bool"),
    ],
)
def test_malformed_record_raises_the_typed_error(text: str) -> None:
    with pytest.raises(MalformedRecord):
        record_from_json(text, "workers-1")


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param(dataclasses.replace(FULL, phase=Phase.DRAINING), FULL, id="later-phase"),
        pytest.param(FULL, dataclasses.replace(FULL, step=2, phase=Phase.STARTED), id="next-step"),
        pytest.param(
            FULL, dataclasses.replace(FULL, attempt=3, step=0, phase=Phase.STARTED), id="next-attempt"
        ),
        pytest.param(dataclasses.replace(FULL, operation_id=None), FULL, id="operation-id-learned"),
        pytest.param(dataclasses.replace(FULL, calls=("replace",)), FULL, id="call-intent-recorded"),
    ],
)
def test_progress_key_orders_records(older: Record, newer: Record) -> None:
    assert progress_key(older) < progress_key(newer)


def test_history_round_trip_and_merge_dedups_and_compacts() -> None:
    a = HistoryEvent(ts=10.0, action=Action.REBOOT, node="n1", attempt_start=True)
    b = HistoryEvent(ts=20.0, action=Action.REPLACE, node="n2")
    c = HistoryEvent(ts=5.0, action=Action.REPAIR, node="n3")
    history = History((a, b))
    assert history_from_json(history_to_json(history)) == history
    assert merged(history, [b, c, a], keep_after=0.0).events == (c, a, b)
    assert merged(history, [c], keep_after=10.0).events == (b,)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{}", id="object"),
        pytest.param('[{"ts": 1}]', id="missing-fields"),
        pytest.param('[{"ts": 1, "action": "nuke", "node": "n"}]', id="bad-action"),
        pytest.param("nope", id="not-json"),
    ],
)
def test_malformed_history_raises_the_typed_error(text: str) -> None:
    with pytest.raises(MalformedState):
        history_from_json(text)


def test_pause_round_trip() -> None:
    pause = Pause(reason="maintenance", since=12.5)
    assert pause_from_json(pause_to_json(pause)) == pause


@pytest.mark.parametrize(
    ("status", "body", "expected", "message"),
    [
        pytest.param(
            404,
            b'{"kind":"Status","message":"nodes \\"x\\" not found"}',
            NotFound,
            'nodes "x" not found',
            id="404",
        ),
        pytest.param(409, b'{"message":"conflict"}', Conflict, "conflict", id="409"),
        pytest.param(410, b'{"message":"too old"}', Expired, "too old", id="410"),
        pytest.param(403, b"{}", Forbidden, "HTTP 403", id="403-no-message"),
        pytest.param(503, b"gateway down", Unavailable, "gateway down", id="503-not-json"),
        pytest.param(418, b"{}", KubeError, "HTTP 418", id="other"),
    ],
)
def test_error_from_response(status: int, body: bytes, expected: type[KubeError], message: str) -> None:
    error = error_from_response(status, body)
    assert type(error) is expected
    assert error.message == message
    assert error.status == status


def test_429_carries_retry_after() -> None:
    error = error_from_response(429, b'{"message":"slow down"}', {"Retry-After": "3"})
    assert isinstance(error, TooManyRequests)
    assert error.retry_after == 3.0


def test_map_error_handles_client_side_failures() -> None:
    api_exc = ApiException(status=404, reason="Not Found")
    api_exc.body = b'{"message": "gone"}'
    assert isinstance(map_error(api_exc), NotFound)
    assert isinstance(map_error(TimeoutError()), Unavailable)
    assert isinstance(map_error(ConnectionRefusedError()), Unavailable)
