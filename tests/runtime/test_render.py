"""Table and JSON rendering of plans and status: pure functions, driven by the real planner."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import orjson
import pytest

from noderescue.config import parse_config
from noderescue.core import planner
from noderescue.core.model import (
    EXCLUDE_LABEL,
    Action,
    Condition,
    History,
    HistoryEvent,
    NodeView,
    Pause,
    Phase,
    Policy,
    Record,
    Snapshot,
)
from noderescue.runtime import render
from tests.core.factories import admitted

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z
CONFIG = """\
clusters: [{name: c1, provider: aws, aws: {region: eu-west-1, autoScalingGroups: [w]}}]
safety:
  maxUnhealthy: 40%
  maxUnhealthyPerZone: 100%
  maxConcurrent: 5
  rateLimits: [{action: replace, max: 2, per: 1h}]
nodeClasses:
  - name: workers
    selector: {matchLabels: {class: workers}}
    rules:
      - {type: KernelDeadlock, status: [True], for: 0s}
      - {type: ReadonlyFilesystem, status: [True], for: 10m}
    ladder: [{action: replace, timeout: 10m}]
    maxUnavailable: 3
"""


def policy() -> Policy:
    return parse_config(CONFIG).policy("c1")


def node(
    name: str, *conditions: tuple[str, str], cls: str | None = "workers", excluded: bool = False
) -> NodeView:
    labels = {"class": cls} if cls else {}
    if excluded:
        labels[EXCLUDE_LABEL] = "true"
    conds = (
        Condition("Ready", "True", "KubeletReady", NOW - 3600),
        *(Condition(t, s, "Why", NOW - 60) for t, s in conditions),
    )
    return NodeView(name=name, uid=f"uid-{name}", labels=labels, conditions=conds, lease_renew=NOW - 5)


def cluster_plan(
    nodes: Sequence[NodeView],
    *,
    records: Mapping[str, Record] | None = None,
    history: History = History(),
    pause: Pause | None = None,
) -> render.ClusterPlan:
    pol = policy()
    snapshot = Snapshot(nodes=tuple(nodes), synced_at=NOW, pause=pause)
    plan = planner.plan(snapshot, records or {}, history, pol, NOW)
    read = render.ReadInfo(NOW, len(nodes), pause, records or {}, history)
    return render.ClusterPlan("c1", read=read, plan=plan, policy=pol)


def healthy_nodes(count: int) -> list[NodeView]:
    return [node(f"ok-{i:05d}") for i in range(count)]


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "rows", "indent", "expected"),
    [
        pytest.param(("A", "B"), [], "", ["A  B"], id="headers-only"),
        pytest.param(
            ("NODE", "WHY"),
            [("workers-10", "x"), ("w", "a long reason")],
            "",
            ["NODE        WHY", "workers-10  x", "w           a long reason"],
            id="padded-to-widest-cell",
        ),
        pytest.param(
            ("K", "V", "LAST"),
            [("k", "", "")],
            "  ",
            ["  K  V  LAST", "  k"],
            id="indent-and-no-trailing-spaces",
        ),
    ],
)
def test_format_table(
    headers: tuple[str, ...], rows: list[tuple[str, ...]], indent: str, expected: list[str]
) -> None:
    assert render.format_table(headers, rows, indent=indent) == expected


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        pytest.param(NOW, "20:26:40Z (now)", id="now"),
        pytest.param(NOW + 45, "20:27:25Z (in 45s)", id="future"),
        pytest.param(NOW - 3700, "19:25:00Z (1h1m40s ago)", id="past"),
        pytest.param(NOW + 86400, "2026-05-29 20:26:40Z (in 1d)", id="other-day-shows-date"),
        pytest.param(None, "-", id="none"),
    ],
)
def test_when_text(ts: float | None, expected: str) -> None:
    assert render.when_text(ts, NOW) == expected


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("requested", "stream", "expected"),
    [
        pytest.param(None, _Terminal(), "table", id="default-on-tty"),
        pytest.param(None, io.StringIO(), "json", id="default-when-piped"),
        pytest.param("json", _Terminal(), "json", id="json-on-tty"),
        pytest.param("table", io.StringIO(), "table", id="table-when-piped"),
    ],
)
def test_output_format(requested: str | None, stream: io.StringIO, expected: str) -> None:
    assert render.output_format(requested, stream) == expected


@pytest.mark.parametrize(
    ("ages", "max_", "used", "frees_in"),
    [
        pytest.param([], 2, 0, None, id="empty"),
        pytest.param([100.0], 2, 1, None, id="room-left"),
        pytest.param([100.0, 3000.0], 2, 2, 600.0, id="full-oldest-frees-first"),
        pytest.param([100.0, 2000.0, 3000.0], 2, 3, 1600.0, id="over-full-needs-two-to-leave"),
        pytest.param([4000.0], 2, 0, None, id="outside-window-not-counted"),
    ],
)
def test_rate_limit_usage(ages: list[float], max_: int, used: int, frees_in: float | None) -> None:
    history = History(tuple(HistoryEvent(NOW - age, Action.REPLACE, f"n{i}") for i, age in enumerate(ages)))
    pol = policy()
    (usage,) = render.rate_limit_usage(pol, history, NOW)
    assert (usage.action, usage.used, usage.max) == (Action.REPLACE, used, max_)
    assert usage.frees_at == (None if frees_in is None else NOW + frees_in)


# ------------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------------


def table_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    return [line.split(None, 6) for line in lines[start + 1 :] if line and not line.startswith("healthy:")]


@pytest.mark.parametrize(
    ("nodes", "expected_order"),
    [
        pytest.param(
            [
                node("p-pending", ("ReadonlyFilesystem", "True")),
                node("a-bad", ("KernelDeadlock", "True")),
                node("z-excluded", ("KernelDeadlock", "True"), excluded=True),
                node("m-unmatched", cls=None),
                *healthy_nodes(8),
            ],
            ["a-bad", "z-excluded", "p-pending", "m-unmatched"],
            id="action-blocked-pending-rest",
        ),
        pytest.param(
            [node(f"bad-{i}", ("KernelDeadlock", "True")) for i in range(3)] + healthy_nodes(7),
            ["bad-0", "bad-1", "bad-2"],  # two start, then the rate limit (max 2) holds bad-2
            id="starts-before-rate-limited",
        ),
    ],
)
def test_plan_table_order(nodes: list[NodeView], expected_order: list[str]) -> None:
    text = render.plans_table([cluster_plan(nodes)])
    assert [row[0] for row in table_rows(text)] == expected_order


def test_plan_table_row_says_decision_action_gate_and_why() -> None:
    nodes = [node(f"bad-{i}", ("KernelDeadlock", "True")) for i in range(3)] + healthy_nodes(7)
    rows = {row[0]: row for row in table_rows(render.plans_table([cluster_plan(nodes)]))}
    assert rows["bad-0"][1:6] == ["workers", "unhealthy", "start", "replace", "-"]
    assert rows["bad-0"][6] == "KernelDeadlock=True (Why) for 1m"
    assert rows["bad-2"][1:6] == ["workers", "unhealthy", "skip", "replace", "rate-limit"]
    assert rows["bad-2"][6] == "replace: 2 in the last 1h, max 2 (node: KernelDeadlock=True (Why) for 1m)"


def test_plan_table_summarises_ten_thousand_healthy_nodes_json_lists_them() -> None:
    cp = cluster_plan([node("bad", ("KernelDeadlock", "True")), *healthy_nodes(10_000)])

    text = render.plans_table([cp])
    doc = orjson.loads(render.plans_json([cp]))

    assert len(text.splitlines()) < 12
    assert "healthy: 10000 (workers 10000)" in text
    assert len(doc["clusters"][0]["nodes"]) == 10_001
    assert doc["clusters"][0]["counts"] == [
        {"class": "workers", "health": "healthy", "nodes": 10_000},
        {"class": "workers", "health": "unhealthy", "nodes": 1},
    ]


def test_plan_table_of_paused_cluster_shows_pause_and_gate() -> None:
    cp = cluster_plan(
        [node("bad", ("KernelDeadlock", "True")), *healthy_nodes(4)], pause=Pause("CHG-1", NOW - 120)
    )
    text = render.plans_table([cp])
    assert "pause: PAUSED since 20:24:40Z (2m ago): CHG-1" in text.splitlines()
    assert "  cluster  pause  cluster paused: CHG-1" in text.splitlines()
    assert table_rows(text)[0][:6] == ["bad", "workers", "unhealthy", "skip", "replace", "pause"]


def test_plan_of_unreachable_cluster_renders_error_in_both_formats() -> None:
    cp = render.ClusterPlan("c9", error="ClientConnectorError: refused")
    assert render.plans_table([cp]) == "cluster c9: unreachable: ClientConnectorError: refused\n"
    (cluster,) = orjson.loads(render.plans_json([cp]))["clusters"]
    assert cluster == {
        "name": "c9",
        "reachable": False,
        "error": "ClientConnectorError: refused",
        "readAt": None,
        "nodeCount": None,
        "pause": None,
        "unreadable": [],
        "nextWakeup": None,
        "counts": [],
        "tripped": [],
        "decisions": [],
        "nodes": [],
    }


def test_all_healthy_plan_says_so() -> None:
    text = render.plans_table([cluster_plan(healthy_nodes(3))])
    assert "every node is healthy; nothing to do" in text
    assert text.rstrip().endswith("healthy: 3 (workers 3)")


# ------------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------------


def record(name: str, phase: Phase, **kw: object) -> Record:
    fields: dict[str, object] = {
        "node": name,
        "node_uid": f"uid-{name}",
        "cls": "workers",
        "step": 0,
        "action": Action.REPLACE,
        "phase": phase,
        "attempt": 1,
        "started": NOW - 300,
        "step_started": NOW - 300,
        "deadline": NOW + 300,
        **kw,
    }
    return Record(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("records", "expected_lines"),
    [
        pytest.param({}, ["remediations: none", "needs a human: none"], id="nothing"),
        pytest.param(
            {"bad": record("bad", Phase.ACTING, operation_id="i-0abc", cordoned_by_us=True)},
            [
                "  bad   workers  replace  0     acting  1        20:21:40Z (5m ago)  "
                "20:31:40Z (in 5m)  i-0abc     yes",
            ],
            id="in-flight-record",
        ),
        pytest.param(
            {"bad": record("bad", Phase.NEEDS_HUMAN, reason="replace timed out; ladder exhausted")},
            ["  bad   workers  parked  replace timed out; ladder exhausted", "remediations: none"],
            id="parked-record",
        ),
    ],
)
def test_status_table_sections(records: dict[str, Record], expected_lines: list[str]) -> None:
    nodes = [node("bad", ("KernelDeadlock", "True")), *healthy_nodes(4)]
    lines = render.status_table([cluster_plan(nodes, records=records)]).splitlines()
    for expected in expected_lines:
        assert expected in lines


def test_status_json_counts_in_flight_and_rate_limits() -> None:
    history = History((HistoryEvent(NOW - 600, Action.REPLACE, "bad", attempt_start=True),))
    cp = cluster_plan(
        [node("bad", ("KernelDeadlock", "True")), *healthy_nodes(4)],
        records={"bad": record("bad", Phase.DRAINING)},
        history=history,
    )
    (cluster,) = orjson.loads(render.status_json([cp]))["clusters"]
    assert (cluster["inFlight"], cluster["maxConcurrent"]) == (1, 5)
    assert cluster["rateLimits"] == [
        {"action": "replace", "used": 1, "max": 2, "per": "1h", "nextSlotAt": None}
    ]
    assert [r["phase"] for r in cluster["remediations"]] == ["draining"]


def test_skip_decision_json_names_the_action_held_back() -> None:
    nodes = [node(f"bad-{i}", ("KernelDeadlock", "True")) for i in range(3)] + healthy_nodes(7)
    (cluster,) = orjson.loads(render.plans_json([cluster_plan(nodes)]))["clusters"]
    decisions = {d["node"]: d for d in cluster["decisions"]}
    assert [d["kind"] for d in cluster["decisions"]] == ["start", "start", "skip"]
    assert (decisions["bad-2"]["action"], decisions["bad-2"]["step"]) == ("replace", 0)
    assert decisions["bad-2"]["blocked"]["gate"] == "rate-limit"


def test_status_of_unreachable_cluster_keeps_every_key() -> None:
    cp = render.ClusterPlan("c9", error="request timed out")
    assert render.status_table([cp]) == "cluster c9: unreachable: request timed out\n"
    (cluster,) = orjson.loads(render.status_json([cp]))["clusters"]
    assert cluster["reachable"] is False and cluster["error"] == "request timed out"
    assert set(cluster) == {
        "name",
        "reachable",
        "error",
        "readAt",
        "nodeCount",
        "pause",
        "unreadable",
        "inFlight",
        "maxConcurrent",
        "remediations",
        "needsHuman",
        "rateLimits",
        "tripped",
        "blocked",
    }


def test_record_of_a_vanished_node_is_shown_as_gone() -> None:
    # A replace in flight whose old Node object is already deleted: the plan keeps driving it.
    rec = record("vanished", Phase.ACTING)
    cp = cluster_plan(healthy_nodes(4), records={"vanished": rec}, history=admitted(rec))
    rows = table_rows(render.plans_table([cp]))
    assert rows[0][:5] == ["vanished", "workers", "gone", "continue", "replace"]
    (cluster,) = orjson.loads(render.plans_json([cp]))["clusters"]
    gone = {n["name"]: n for n in cluster["nodes"]}["vanished"]
    assert (gone["health"], gone["record"]["phase"]) == ("gone", "acting")


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param(1e20, id="far-future"),
        pytest.param(-1e20, id="far-past"),
        pytest.param(1e300, id="huge"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(float("nan"), id="nan"),
    ],
)
def test_status_survives_a_record_with_an_impossible_timestamp(ts: float) -> None:
    # Records are annotations on Nodes: a forged or corrupted one must not crash `status`.
    records = {"bad": record("bad", Phase.ACTING, started=ts, step_started=ts, deadline=ts)}
    nodes = [node("bad", ("KernelDeadlock", "True")), *healthy_nodes(2)]
    table = render.status_table([cluster_plan(nodes, records=records)])
    assert "invalid time" in table
    document = orjson.loads(render.status_json([cluster_plan(nodes, records=records)]))
    assert document  # rendered, with the impossible times as null
    assert render.rfc3339(ts) is None
    assert render.when_text(ts, NOW).startswith("invalid time")
