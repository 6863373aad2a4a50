"""The Grafana dashboard shows every §6 metric, imports into any Grafana (datasource as an
input), and filters by a `cluster` variable."""

from __future__ import annotations

import json
from typing import Any, TypedDict, cast

import pytest

from tests.deploy.manifests import DEPLOY
from tests.deploy.promql import exported_metric_families, exported_metric_names, metric_names

DASHBOARD = DEPLOY / "grafana" / "noderescue-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Metrics without a cluster label (the clouds and the mode are process-wide).
UNCLUSTERED = {"noderescue_cloud_api_calls_total", "noderescue_dry_run"}


class GridPos(TypedDict):
    x: int
    y: int
    w: int
    h: int


class Target(TypedDict):
    datasource: dict[str, str]
    expr: str
    refId: str


def _dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text()))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _targets() -> list[Target]:
    return [cast(Target, t) for p in _panels() for t in p["targets"]]


def test_dashboard_declares_its_datasource_as_an_input() -> None:
    dashboard = _dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["id"] is None  # an importable export carries no database id
    for panel in _panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_cluster_variable_lists_the_clusters_noderescue_reports() -> None:
    [variable] = [v for v in _dashboard()["templating"]["list"] if v["name"] == "cluster"]
    assert variable["datasource"] == DATASOURCE
    assert variable["includeAll"] is True and variable["multi"] is True
    assert variable["query"]["query"] == "label_values(noderescue_watch_last_sync_timestamp_seconds, cluster)"


def test_every_metric_is_on_the_dashboard() -> None:
    families = exported_metric_families()
    shown = {families[name] for t in _targets() for name in metric_names(t["expr"]) if name in families}
    assert set(families.values()) - shown == set(), "metrics missing from the dashboard"


@pytest.mark.parametrize("index", range(len(json.loads(DASHBOARD.read_text())["panels"])))
def test_panel_queries_parse_and_select_only_exported_metrics(index: int) -> None:
    panel = _dashboard()["panels"][index]
    if panel["type"] == "row":
        assert panel["gridPos"]["w"] == 24
        return
    assert panel["targets"], panel["title"]
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))
    for target in panel["targets"]:
        names = metric_names(target["expr"])
        assert names and names <= exported_metric_names(), (panel["title"], names)
        if names - UNCLUSTERED:
            assert 'cluster=~"$cluster"' in target["expr"], (panel["title"], target["expr"])


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = cast(GridPos, panel["gridPos"])
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
