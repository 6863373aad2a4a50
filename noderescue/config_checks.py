"""Cross-field checks of a configuration (DESIGN §3).

They run on the raw YAML data rather than in pydantic model validators, because a model
validator only runs when every field of its model is valid: done there, one typo in a class would
hide that the same class is a duplicate, or that its ladder cannot work on a provider-none cluster.
Values that are themselves invalid (an unknown action) are skipped here; pydantic reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noderescue.config_errors import ConfigIssue
from noderescue.config_yaml import LineMap, YamlPath, format_path
from noderescue.core.model import CLOUD_ACTIONS, Action

_ACTION_NAMES = frozenset(a.value for a in Action)
_CLOUD_ACTION_NAMES = frozenset(a.value for a in CLOUD_ACTIONS)


def cross_checks(data: Mapping[str, Any], lines: LineMap) -> list[ConfigIssue]:
    """Duplicate names, notify placement, cloud actions on provider-none clusters."""
    issues: list[ConfigIssue] = []

    def add(path: YamlPath, message: str) -> None:
        issues.append(ConfigIssue(format_path(path), lines.line_for(path), message))

    clusters = _items(data.get("clusters"))
    classes = _items(data.get("nodeClasses"))
    for section, items, noun in (("clusters", clusters, "cluster"), ("nodeClasses", classes, "class")):
        first: dict[str, int] = {}
        for index, item in items:
            name = item.get("name")
            if not isinstance(name, str):
                continue
            if name in first:
                add(
                    (section, index, "name"),
                    f"duplicate {noun} name '{name}' (also {section}[{first[name]}])",
                )
            else:
                first[name] = index

    providerless = [
        (index, str(item.get("name", f"clusters[{index}]")))
        for index, item in clusters
        if item.get("provider") == "none"
    ]
    for class_index, item in classes:
        actions = _ladder_actions(item.get("ladder"))
        for position, (step_index, action) in enumerate(actions):
            if action == Action.NOTIFY.value and position != len(actions) - 1:
                add(
                    ("nodeClasses", class_index, "ladder", step_index),
                    "notify must be the last step of a ladder (the steps after it would never run)",
                )
            if action in _CLOUD_ACTION_NAMES:
                for cluster_index, cluster_name in providerless:
                    add(
                        ("nodeClasses", class_index, "ladder", step_index),
                        f"{action} needs a cloud provider, but cluster '{cluster_name}' "
                        f"(clusters[{cluster_index}]) has provider none; every class's ladder applies to "
                        "every cluster",
                    )
    return issues


def _items(value: Any) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]


def _ladder_actions(ladder: Any) -> list[tuple[int, str]]:
    """(index, action) of every ladder step whose action is known (bad ones are reported elsewhere)."""
    if not isinstance(ladder, list):
        return []
    actions: list[tuple[int, str]] = []
    for index, step in enumerate(ladder):
        action = step.get("action") if isinstance(step, dict) else step
        if isinstance(action, str) and action in _ACTION_NAMES:
            actions.append((index, action))
    return actions
