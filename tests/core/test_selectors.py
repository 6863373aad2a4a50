"""Label selectors (Kubernetes semantics), quantities, and the memoized class index."""

from __future__ import annotations

import pytest

from noderescue.core.classes import ClassIndex
from noderescue.core.model import Quantity, Selector, SelectorRequirement
from tests.core.factories import node_class


def req(key: str, op: str, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key, op, frozenset(values))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param(Selector(), {}, True, id="empty-selects-everything"),
        pytest.param(Selector((("a", "1"),)), {"a": "1", "b": "2"}, True, id="match-labels"),
        pytest.param(Selector((("a", "1"),)), {"a": "2"}, False, id="match-labels-other-value"),
        pytest.param(Selector((("a", "1"),)), {}, False, id="match-labels-absent"),
        pytest.param(Selector(match_expressions=(req("a", "In", "1", "2"),)), {"a": "2"}, True, id="in"),
        pytest.param(Selector(match_expressions=(req("a", "In", "1"),)), {}, False, id="in-absent"),
        pytest.param(Selector(match_expressions=(req("a", "NotIn", "1"),)), {"a": "2"}, True, id="notin"),
        pytest.param(
            Selector(match_expressions=(req("a", "NotIn", "1"),)), {"a": "1"}, False, id="notin-hit"
        ),
        pytest.param(
            Selector(match_expressions=(req("a", "NotIn", "1"),)), {}, True, id="notin-absent-matches"
        ),
        pytest.param(Selector(match_expressions=(req("a", "Exists"),)), {"a": ""}, True, id="exists-empty"),
        pytest.param(Selector(match_expressions=(req("a", "Exists"),)), {}, False, id="exists-absent"),
        pytest.param(Selector(match_expressions=(req("a", "DoesNotExist"),)), {}, True, id="dne"),
        pytest.param(
            Selector(match_expressions=(req("a", "DoesNotExist"),)), {"a": "x"}, False, id="dne-hit"
        ),
        pytest.param(
            Selector((("r", "w"),), (req("a", "Exists"), req("z", "NotIn", "b"))),
            {"r": "w", "a": "1", "z": "c"},
            True,
            id="all-must-hold",
        ),
        pytest.param(
            Selector((("r", "w"),), (req("a", "Exists"), req("z", "NotIn", "b"))),
            {"r": "w", "a": "1", "z": "b"},
            False,
            id="one-fails",
        ),
    ],
)
def test_selector(selector: Selector, labels: dict[str, str], expected: bool) -> None:
    assert selector.matches(labels) is expected


@pytest.mark.parametrize(
    ("quantity", "total", "floor", "ceil"),
    [
        pytest.param(Quantity(40, percent=True), 6, 2, 3, id="40pct-of-6"),
        pytest.param(Quantity(20, percent=True), 3, 0, 1, id="20pct-of-3"),
        pytest.param(Quantity(100, percent=True), 7, 7, 7, id="all"),
        pytest.param(Quantity(0, percent=True), 7, 0, 0, id="none"),
        pytest.param(Quantity(3), 100, 3, 3, id="absolute"),
        pytest.param(Quantity(50, percent=True), 0, 0, 0, id="empty-scope"),
    ],
)
def test_quantity_rounding(quantity: Quantity, total: int, floor: int, ceil: int) -> None:
    assert quantity.floor_of(total) == floor
    assert quantity.ceil_of(total) == ceil


def test_class_index_first_match_wins_and_memo_keeps_presence_apart() -> None:
    gpu = node_class("gpu", selector=Selector(match_expressions=(req("gpu", "Exists"),)))
    cpu = node_class(
        "cpu", selector=Selector(match_expressions=(req("gpu", "DoesNotExist"), req("pool", "In", "a")))
    )
    catch_all = node_class("rest", selector=Selector(match_expressions=(req("pool", "Exists"),)))
    index = ClassIndex([gpu, cpu, catch_all])
    cases = [
        ({"gpu": "", "pool": "a"}, "gpu"),
        ({"pool": "a"}, "cpu"),
        ({"pool": "b"}, "rest"),
        ({"gpu": "", "pool": "a"}, "gpu"),  # memo hit
        ({"pool": "a", "other": "x"}, "cpu"),  # unrelated labels share the memo entry
        ({}, None),
        ({"gpu": "x"}, "gpu"),
    ]
    for labels, expected in cases:
        found = index.lookup(labels)
        assert (found.name if found else None) == expected, labels
