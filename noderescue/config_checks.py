"""Cross-field checks of a configuration (DESIGN §3).

They run on the raw YAML data rather than in pydantic model validators, because a model
validator only runs when every field of its model is valid: done there, one typo in a class would
hide that the same class is a duplicate, or that its ladder cannot work on a provider-none cluster.
Values that are themselves invalid (an unknown action) are skipped here; pydantic reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from noderescue.config_errors import ConfigIssue
from noderescue.config_values import parse_duration_value, parse_quantity
from noderescue.config_yaml import LineMap, YamlPath, format_path, load_yaml
from noderescue.core.durations import format_duration
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


# ------------------------------------------------------------------------------------------------
# Warnings: legal, but almost surely not what was meant
# ------------------------------------------------------------------------------------------------

STALE_AFTER_WARN_S = 3600.0  # a view this old is not a view
TIMEOUT_WARN_S = 86400.0  # a step or drain waiting more than a day is a unit mistake
DEFAULT_MAX_UNHEALTHY = "40%"


def config_warnings(data: Mapping[str, Any], lines: LineMap) -> list[ConfigIssue]:
    """Findings in a valid configuration that are legal but almost surely wrong, each with its
    YAML path and line. ``check-config`` prints them (``--strict``: as errors)."""
    warnings: list[ConfigIssue] = []

    def add(path: YamlPath, message: str) -> None:
        warnings.append(ConfigIssue(format_path(path), lines.line_for(path), message))

    raw_safety = data.get("safety")
    safety: Mapping[str, Any] = raw_safety if isinstance(raw_safety, dict) else {}
    stale_after = _duration(safety.get("staleAfter"))
    if stale_after is not None and stale_after > STALE_AFTER_WARN_S:
        add(
            ("safety", "staleAfter"),
            f"staleAfter {format_duration(stale_after)}: noderescue would act on a view that old "
            "(an API outage or a frozen watch goes unnoticed as long); a few minutes at most is usual",
        )
    _max_unhealthy_warning(safety, add)
    first_limit: dict[str, int] = {}
    for index, limit in _items(safety.get("rateLimits")):
        action = limit.get("action")
        if not isinstance(action, str):
            continue
        if action in first_limit:
            add(
                ("safety", "rateLimits", index, "action"),
                f"a second rate limit for {action} (also safety.rateLimits[{first_limit[action]}]): both "
                "apply and the stricter one decides; write one",
            )
        else:
            first_limit[action] = index

    for class_index, item in _items(data.get("nodeClasses")):
        for rule_index, rule in _items(item.get("rules")):
            statuses = rule.get("status")
            statuses = statuses if isinstance(statuses, list) else [statuses]
            if rule.get("type") == "Ready" and any(str(s) == "True" for s in statuses):
                add(
                    ("nodeClasses", class_index, "rules", rule_index, "status"),
                    "a Ready rule that matches status True matches every healthy node: all of them would "
                    "be remediated (unhealthy is Ready False or Unknown)",
                )
        ladder = item.get("ladder")
        for step_index, step in enumerate(ladder if isinstance(ladder, list) else []):
            timeout = _duration(step.get("timeout")) if isinstance(step, dict) else None
            if timeout is not None and timeout > TIMEOUT_WARN_S:
                add(
                    ("nodeClasses", class_index, "ladder", step_index, "timeout"),
                    f"timeout {format_duration(timeout)}: a failed step would hold its node (cordoned) "
                    "that long before escalating; more than a day is almost surely a unit mistake",
                )
        drain = item.get("drain")
        timeout = _duration(drain.get("timeout")) if isinstance(drain, dict) else None
        if timeout is not None and timeout > TIMEOUT_WARN_S:
            add(
                ("nodeClasses", class_index, "drain", "timeout"),
                f"drain timeout {format_duration(timeout)}: a blocked drain would hold its node that "
                "long; more than a day is almost surely a unit mistake",
            )
    warnings.sort(key=lambda issue: (issue.line is None, issue.line or 0))
    return warnings


def file_warnings(path: Path) -> list[ConfigIssue]:
    """``config_warnings`` of a configuration file that ``load_config`` has accepted."""
    loaded = load_yaml(path.read_bytes().decode("utf-8-sig"), str(path))
    if not isinstance(loaded.data, Mapping):
        return []
    return config_warnings(loaded.data, loaded.lines)


SMALL_CLASS = 3


def _max_unhealthy_warning(safety: Mapping[str, Any], add: Callable[[YamlPath, str], None]) -> None:
    given = "maxUnhealthy" in safety
    try:
        limit = parse_quantity(safety.get("maxUnhealthy", DEFAULT_MAX_UNHEALTHY))
    except ValueError:
        return
    which = "" if given else " (the default)"
    path: YamlPath = ("safety", "maxUnhealthy")
    if limit.value == 0:
        add(
            path,
            f"maxUnhealthy {limit}{which}: one unhealthy node trips the short-circuit, so nothing is "
            "ever remediated",
        )
    elif limit.percent and math.ceil(100 / limit.value) > SMALL_CLASS:
        # Node counts are not in the configuration: say at which size a class stops working. Only
        # when that size is larger than a small class: 40% (Cluster API's usual value) stops
        # classes of one or two nodes, which `noderescue plan` names with the nodes it sees.
        smallest = math.ceil(100 / limit.value)
        add(
            path,
            f"maxUnhealthy {limit}{which} rounds down: a class (or cluster) of fewer than {smallest} nodes "
            f"may have 0 unhealthy nodes, so one unhealthy node trips the short-circuit and none of its "
            "nodes is ever remediated; if a class can be that small, give a count (e.g. maxUnhealthy: 1)",
        )


def _duration(value: Any) -> float | None:
    try:
        return parse_duration_value(value) if value is not None else None
    except ValueError:
        return None


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
