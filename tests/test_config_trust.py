"""Which labels a kubelet can forge on its own Node, and check-config's warning about classes that
trust them alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noderescue.config import parse_config
from noderescue.config_trust import node_settable, trust_warnings
from tests.test_cli_check_config import EXAMPLE


@pytest.mark.parametrize(
    ("key", "settable"),
    [
        ("noderescue.io/class", True),
        ("team", True),
        ("example.com/pool", True),
        ("topology.kubernetes.io/zone", True),  # the kubelet sets it itself
        ("kubernetes.io/hostname", True),
        ("node.kubernetes.io/instance-type", True),
        ("node.kubernetes.io/anything", True),  # the kubelet's own namespace
        ("node-restriction.kubernetes.io/class", False),
        ("pool.node-restriction.kubernetes.io/name", False),
        ("node-role.kubernetes.io/control-plane", False),
        ("kubernetes.io/role", False),
        ("example.k8s.io/x", False),
    ],
)
def test_what_a_kubelet_may_set_under_node_restriction(key: str, settable: bool) -> None:
    assert node_settable(key) is settable


def config_with(*classes: dict[str, object]) -> str:
    return yaml.safe_dump(
        {
            "clusters": [
                {"name": "c", "provider": "aws", "aws": {"region": "eu-west-1", "autoScalingGroups": ["w"]}}
            ],
            "nodeClasses": list(classes),
        }
    )


def test_a_class_selected_by_node_settable_labels_alone_is_warned_about() -> None:
    config = parse_config(
        config_with(
            {
                "name": "forgeable",
                "selector": {"matchLabels": {"noderescue.io/class": "w"}},
                "ladder": ["notify"],
            },
            {
                "name": "restricted",
                "selector": {"matchLabels": {"node-restriction.kubernetes.io/class": "w"}},
                "ladder": ["notify"],
            },
            {"name": "grouped", "groups": ["w"], "ladder": ["notify"]},
            {
                "name": "narrowed",
                "groups": ["w"],
                "selector": {"matchLabels": {"noderescue.io/class": "w"}},
                "ladder": ["notify"],
            },
            {"name": "everything", "selector": {}, "ladder": ["notify"]},
        )
    )
    warnings = trust_warnings(config)
    assert len(warnings) == 1
    assert warnings[0].startswith("nodeClasses[0] (forgeable): selects nodes only by labels a kubelet")
    assert "noderescue.io/class" in warnings[0]


def test_groups_no_cluster_manages_are_warned_about() -> None:
    config = parse_config(config_with({"name": "x", "groups": ["w", "typo"], "ladder": ["notify"]}))
    assert trust_warnings(config) == [
        "nodeClasses[0] (x): groups typo are not configured for any cluster (autoScalingGroups / "
        "scaleSets): the class selects no node there"
    ]


def test_the_shipped_example_gets_no_warning() -> None:
    assert trust_warnings(parse_config(EXAMPLE.read_text(), base_dir=EXAMPLE.parent)) == []


def test_check_config_prints_the_warning_and_still_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        config_with(
            {"name": "w", "selector": {"matchLabels": {"noderescue.io/class": "w"}}, "ladder": ["notify"]}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "noderescue", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("ok\n")
    assert "warning: nodeClasses[0] (w): selects nodes only by labels a kubelet" in result.stderr
