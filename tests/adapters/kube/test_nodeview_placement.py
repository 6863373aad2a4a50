"""A node's group and (by default) zone come from the cloud, not from labels the node may set."""

from __future__ import annotations

import copy

from noderescue.adapters.kube.nodeview import node_view_from_json, with_cloud_placement
from tests.adapters.kube.test_nodeview import NODE, T0


def test_the_clouds_zone_replaces_the_nodes_own_label() -> None:
    obj = copy.deepcopy(NODE)
    obj["metadata"]["labels"]["topology.kubernetes.io/zone"] = "eu-west-1c"  # what the node claims
    view = node_view_from_json(obj, first_seen=T0)
    assert view.zone == "eu-west-1c"

    placed = with_cloud_placement(view, "workers", "eu-west-1a", zone_from_cloud=True)

    assert (placed.group, placed.zone) == ("workers", "eu-west-1a")


def test_an_instance_the_cloud_does_not_know_has_no_trusted_zone() -> None:
    view = node_view_from_json(copy.deepcopy(NODE), first_seen=T0)
    placed = with_cloud_placement(view, None, None, zone_from_cloud=True)
    assert (placed.group, placed.zone) == (None, None)


def test_zone_from_label_keeps_the_label_and_unchanged_views_are_not_copied() -> None:
    view = node_view_from_json(copy.deepcopy(NODE), first_seen=T0)
    placed = with_cloud_placement(view, "workers", "eu-west-1b", zone_from_cloud=False)
    assert (placed.group, placed.zone) == ("workers", "eu-west-1a")
    assert with_cloud_placement(placed, "workers", "eu-west-1b", zone_from_cloud=False) is placed
