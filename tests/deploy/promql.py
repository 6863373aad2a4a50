"""PromQL in the alerts and the dashboard, checked against the metrics noderescue exports."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from noderescue.metrics import Metrics

# Grafana variables, replaced by something the PromQL parser accepts.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$cluster": ".*",
}
_SUFFIXES_BY_TYPE = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def exported_metric_families() -> dict[str, str]:
    """Every series name the §6 metrics can produce -> its metric family, derived from
    ``noderescue.metrics`` (``noderescue_remediations_total`` -> ``noderescue_remediations``)."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {
        family.name + suffix: family.name
        for family in registry.collect()
        for suffix in _SUFFIXES_BY_TYPE[family.type]
    }


def exported_metric_names() -> set[str]:
    return set(exported_metric_families())


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects; fails the test on a PromQL syntax error."""
    promql_parser = pytest.importorskip("promql_parser")
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in re.sub(r"\{\{[^}]*\}\}", "", expr), f"unknown variable in {expr!r}"
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"invalid PromQL {expr!r}: {exc}") from exc
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(tree, visit)
    return names
