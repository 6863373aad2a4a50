"""Classes that select nodes by the cloud group of their instance (which a node cannot change)."""

from __future__ import annotations

from dataclasses import replace

from noderescue.core.classes import ClassIndex
from noderescue.core.model import NodeView, Selector
from tests.core.factories import node_class

WORKERS = replace(node_class("workers", selector=Selector()), groups=frozenset({"prod-workers"}))
GPU = replace(
    node_class("gpu", selector=Selector((("noderescue.io/class", "gpu"),))), groups=frozenset({"prod-gpu"})
)
LABELLED = node_class("labelled", selector=Selector((("noderescue.io/class", "workers"),)))


def test_a_class_with_groups_selects_by_the_instances_group_not_by_labels() -> None:
    index = ClassIndex([GPU, WORKERS, LABELLED])
    cases = [
        # (labels, group) -> class
        ({}, "prod-workers", "workers"),
        ({"noderescue.io/class": "gpu"}, "prod-workers", "workers"),  # a label cannot hop
        ({"noderescue.io/class": "gpu"}, "prod-gpu", "gpu"),
        ({}, "prod-gpu", None),  # groups AND selector
        ({"noderescue.io/class": "workers"}, None, "labelled"),  # unknown group: labels only
        ({}, None, None),
        ({"noderescue.io/class": "gpu"}, None, None),  # memo keyed by group too
        ({"noderescue.io/class": "gpu"}, "prod-gpu", "gpu"),
    ]
    for labels, group, expected in cases:
        found = index.lookup(labels, group)
        assert (found.name if found else None) == expected, (labels, group)


def test_lookup_node_reads_the_views_group() -> None:
    index = ClassIndex([WORKERS, LABELLED])
    node = NodeView(name="n", uid="u", labels={"noderescue.io/class": "workers"}, group="prod-workers")
    found = index.lookup_node(node)
    assert found is not None and found.name == "workers"


def test_without_groups_the_index_ignores_the_group() -> None:
    index = ClassIndex([LABELLED])
    assert index.lookup({"noderescue.io/class": "workers"}, "anything") is LABELLED
    assert index.lookup({"noderescue.io/class": "workers"}) is LABELLED
