"""noderescue.config: the schema, its value types, every cross-field check, error paths and lines,
and the conversion to the core's policy dataclasses."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from noderescue.config import (
    Config,
    ConfigError,
    ConfigIssue,
    format_duration,
    load_config,
    parse_config,
    parse_config_report,
    parse_duration,
)
from noderescue.config_values import parse_bind, parse_quantity
from noderescue.core import model as core
from noderescue.core.model import Action, Quantity

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"

# A small valid configuration; tests deep-copy it and change one thing.
BASE: dict[str, Any] = {
    "clusters": [
        {"name": "prod", "provider": "aws", "aws": {"region": "eu-west-1", "autoScalingGroups": ["w"]}}
    ],
    "nodeClasses": [
        {
            "name": "workers",
            "selector": {"matchLabels": {"noderescue.io/class": "workers"}},
            "rules": [{"type": "Ready", "status": ["False", "Unknown"], "for": "3m"}],
            "ladder": [{"action": "replace", "timeout": "10m"}],
        }
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    """BASE with keys replaced; ``cls__key=value`` changes the first node class."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key.startswith("cls__"):
            data["nodeClasses"][0][key[5:]] = value
        elif key.startswith("cluster__"):
            data["clusters"][0][key[9:]] = value
        else:
            data[key] = value
    return data


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def errors_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.errors


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def one_error(text: str) -> ConfigIssue:
    errors = errors_of(text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def with_step(step: Any) -> str:
    return dump(doc(cls__ladder=[step]))


# ------------------------------------------------------------------------------------------------
# The reference example
# ------------------------------------------------------------------------------------------------


def test_example_loads_and_converts_to_the_core_policy() -> None:
    config = load_config(EXAMPLE)

    assert isinstance(config, Config)
    assert config.dry_run is False
    assert [c.name for c in config.clusters] == ["prod-eu1", "prod-we1"]
    assert config.clusters[0].kubeconfig == Path("/etc/noderescue/prod-eu1.kubeconfig")
    # Relative paths are relative to the file, not to the working directory.
    assert config.clusters[1].kubeconfig == EXAMPLE.parent / "prod-we1.kubeconfig"
    assert config.clusters[0].namespace == "noderescue"
    assert config.clusters[0].aws is not None and config.clusters[0].aws.auto_scaling_groups == (
        "prod-eu1-workers",
        "prod-eu1-gpu",
    )
    assert config.clusters[1].azure is not None and config.clusters[1].azure.replace_mode == "reimage"
    assert config.http_bind == ("127.0.0.1", 9478)
    assert config.notifications[0].events == ("started", "succeeded", "failed", "shortCircuit", "needsHuman")

    policy = config.policy("prod-eu1")
    assert policy.cluster == "prod-eu1" and policy.provider == "aws"
    assert config.policy("prod-we1").provider == "azure"
    assert policy.safety == core.Safety(
        max_unhealthy=Quantity(40, percent=True),
        max_unhealthy_per_zone=Quantity(50, percent=True),
        max_concurrent=2,
        stale_after_s=60.0,
        rate_limits=(
            core.RateLimit(Action.REPLACE, 3, 3600.0),
            core.RateLimit(Action.REBOOT, 5, 3600.0),
            core.RateLimit(Action.REPAIR, 10, 3600.0),
        ),
        max_attempts=3,
        max_attempts_per_s=86400.0,
    )
    control_plane, gpu, workers = policy.classes
    assert control_plane == core.NodeClass(
        name="control-plane",
        selector=core.Selector(
            match_expressions=(core.SelectorRequirement("node-role.kubernetes.io/control-plane", "Exists"),)
        ),
        rules=(core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),),
        ladder=(core.Step(Action.NOTIFY),),
    )
    assert gpu == core.NodeClass(
        name="gpu-pets",
        selector=core.Selector(match_labels=(("node-restriction.kubernetes.io/noderescue-class", "gpu"),)),
        rules=(
            core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),
            core.ConditionRule("KernelDeadlock", frozenset({"True"}), 60.0),
            core.LeaseRule(stale_for_s=120.0),
        ),
        ladder=(
            core.Step(Action.REPAIR, 300.0, command="systemctl restart containerd kubelet"),
            core.Step(
                Action.REBOOT,
                900.0,
                window=core.Window(frozenset({0, 1, 2, 3}), start=120, end=300, timezone="Europe/Berlin"),
            ),
            core.Step(Action.NOTIFY),
        ),
        drain=core.DrainPolicy(timeout_s=600.0, on_timeout="abort", delete_emptydir_data=True),
        max_unavailable=Quantity(1),
    )
    assert workers == core.NodeClass(
        name="workers",
        selector=core.Selector(),
        groups=frozenset({"prod-eu1-workers", "prod-we1-workers"}),
        rules=(
            core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 180.0),
            core.ConditionRule("ReadonlyFilesystem", frozenset({"True"}), 30.0),
        ),
        ladder=(core.Step(Action.REPLACE, 600.0),),
        drain=core.DrainPolicy(timeout_s=300.0, on_timeout="proceed"),
        max_unavailable=Quantity(20, percent=True),
        node_startup_timeout_s=600.0,
    )


def test_example_summary_has_a_line_per_cluster_and_class() -> None:
    lines = load_config(EXAMPLE).summary_lines()
    assert len(lines) == 5
    assert lines[0].startswith("cluster prod-eu1: provider aws eu-west-1")
    assert lines[1].startswith("cluster prod-we1: provider azure")
    assert lines[2] == (
        "control-plane: selector node-role.kubernetes.io/control-plane; "
        "rules Ready in [False,Unknown] for 5m; ladder notify; maxUnavailable 1"
    )
    assert lines[4] == (
        "workers: groups prod-eu1-workers, prod-we1-workers; rules Ready in [False,Unknown] for 3m, "
        "ReadonlyFilesystem in [True] for 30s, startup 10m; ladder replace(10m); maxUnavailable 20%"
    )
    assert "window mon,tue,wed,thu 02:00-05:00 Europe/Berlin" in lines[3]
    # Webhook headers may hold tokens: never in the summary.
    assert not any("Bearer" in line for line in lines)


def test_policy_of_an_unknown_cluster_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        load_config(EXAMPLE).policy("nope")


def test_dry_run_override_forces_dry_run() -> None:
    assert load_config(EXAMPLE, dry_run_override=True).dry_run is True
    assert load_config(EXAMPLE).dry_run is False


def test_config_is_frozen() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        config.dry_run = True  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# Defaults
# ------------------------------------------------------------------------------------------------


def test_defaults_of_a_minimal_config() -> None:
    text = dump(
        doc(
            nodeClasses=[
                {
                    "name": "all",
                    "selector": {},
                    "ladder": [{"action": "repair", "command": "reboot-me"}, "reboot", "replace", "notify"],
                }
            ]
        )
    )
    config = parse_config(text)
    assert config.dry_run is False
    assert config.http_bind == ("127.0.0.1", 9478)
    assert config.notifications == ()
    assert config.clusters[0].namespace == "noderescue"
    assert config.clusters[0].kubeconfig is None and config.clusters[0].context is None
    policy = config.policy("prod")
    assert policy.safety.max_unhealthy == core.Safety().max_unhealthy
    assert policy.safety.max_concurrent == core.Safety().max_concurrent
    assert policy.safety.stale_after_s == 60.0
    assert {(r.action, r.max, r.per_s) for r in policy.safety.rate_limits} == {
        (Action.REPLACE, 3, 3600.0),
        (Action.REBOOT, 5, 3600.0),
        (Action.REPAIR, 10, 3600.0),
    }
    (cls,) = policy.classes
    assert cls.rules == (core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),)
    assert [(s.action, s.timeout_s) for s in cls.ladder] == [
        (Action.REPAIR, 600.0),
        (Action.REBOOT, 1200.0),
        (Action.REPLACE, 1800.0),
        (Action.NOTIFY, None),
    ]
    assert cls.drain == core.DrainPolicy()
    assert cls.max_unavailable == Quantity(1)
    assert cls.node_startup_timeout_s is None
    assert cls.selector.matches({"any": "thing"})  # an empty selector selects every node


def test_explicit_empty_rate_limits_turn_them_off() -> None:
    config = parse_config(dump(doc(safety={"rateLimits": []})))
    assert config.policy("prod").safety.rate_limits == ()


# ------------------------------------------------------------------------------------------------
# Durations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="hours-minutes"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("1d", 86400.0, id="day"),
        pytest.param("1d2h3m4s", 93784.0, id="all-units"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("1s500ms", 1.5, id="seconds-milliseconds"),
        pytest.param("1.5h", 5400.0, id="fraction"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param(" 5m ", 300.0, id="surrounding-space"),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5 minutes", id="words"),
        pytest.param("300", id="bare-number"),
        pytest.param("", id="empty"),
        pytest.param("m", id="unit-only"),
        pytest.param("5m1h", id="units-out-of-order"),
        pytest.param("5m5m", id="unit-repeated"),
        pytest.param("-5m", id="negative"),
        pytest.param("1h 30m", id="inner-space"),
        pytest.param("5M", id="uppercase-unit"),
        pytest.param("1w", id="weeks"),
        pytest.param("5m!", id="trailing-garbage"),
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(0.5, "500ms", id="milliseconds"),
        pytest.param(1.5, "1.5s", id="fractional-seconds"),
        pytest.param(90, "1m30s", id="minute-and-a-half"),
        pytest.param(300, "5m", id="minutes"),
        pytest.param(5400, "1h30m", id="hours-minutes"),
        pytest.param(86400, "1d", id="day"),
        pytest.param(93784, "1d2h3m4s", id="all-units"),
        pytest.param(-60, "-1m", id="negative"),
        pytest.param(3599.9996, "1h", id="rounded-to-milliseconds-first"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9).map(lambda ms: ms / 1000))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("5 minutes", "invalid duration '5 minutes'", id="words"),
        pytest.param(300, "invalid duration 300: a bare number has no unit; write e.g. 300s", id="bare-int"),
        pytest.param(1.5, "a bare number has no unit", id="bare-float"),
        pytest.param(True, "invalid duration the boolean true", id="boolean"),
        pytest.param("0s", "must be longer than 0s", id="zero-timeout"),
        pytest.param(["5m"], "expected text like 5m, got a list", id="list"),
    ],
)
def test_bad_step_timeout_names_path_and_line(value: Any, message: str) -> None:
    text = with_step({"action": "replace", "timeout": value})
    issue = one_error(text)
    assert issue.path == "nodeClasses[0].ladder[0].timeout"
    assert issue.line == line_of(text, "timeout:") == 21
    assert message in issue.message


# ------------------------------------------------------------------------------------------------
# Counts and percentages
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3, Quantity(3), id="count"),
        pytest.param(0, Quantity(0), id="zero"),
        pytest.param("40%", Quantity(40, percent=True), id="percent"),
        pytest.param("100%", Quantity(100, percent=True), id="hundred-percent"),
        pytest.param("0%", Quantity(0, percent=True), id="zero-percent"),
        pytest.param("5", Quantity(5), id="quoted-count"),
    ],
)
def test_quantity_accepts(value: Any, expected: Quantity) -> None:
    assert parse_quantity(value) == expected
    config = parse_config(dump(doc(cls__maxUnavailable=value)))
    assert config.policy("prod").classes[0].max_unavailable == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("150%", "percentage 150% is over 100%", id="over-100-percent"),
        pytest.param(-1, "must not be negative", id="negative"),
        pytest.param(1.5, "expected a whole number or a percentage like 40%, got the number 1.5", id="float"),
        pytest.param("lots", "invalid count 'lots'", id="word"),
        pytest.param(True, "got the boolean true", id="boolean"),
        pytest.param("-5%", "invalid count", id="negative-percent"),
    ],
)
def test_quantity_refuses(value: Any, message: str) -> None:
    issue = one_error(dump(doc(cls__maxUnavailable=value)))
    assert issue.path == "nodeClasses[0].maxUnavailable"
    assert message in issue.message


def test_safety_percentage_over_100_is_an_error() -> None:
    issue = one_error(dump(doc(safety={"maxUnhealthy": "101%"})))
    assert (issue.path, issue.message) == ("safety.maxUnhealthy", "percentage 101% is over 100%")


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------


def window_step(window: dict[str, Any]) -> str:
    return with_step({"action": "reboot", "timeout": "15m", "window": window})


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        pytest.param(
            {"days": ["mon", "fri"], "start": "02:00", "end": "05:00"},
            core.Window(frozenset({0, 4}), 120, 300, "UTC"),
            id="weekdays-utc-default",
        ),
        pytest.param(
            {"start": "22:00", "end": "04:00", "overnight": True, "timezone": "Europe/Berlin"},
            core.Window(frozenset(range(7)), 1320, 240, "Europe/Berlin", overnight=True),
            id="overnight-every-day",
        ),
        pytest.param(
            {"days": ["Monday", "SUN"], "start": "00:00", "end": "24:00", "strict": True},
            core.Window(frozenset({0, 6}), 0, 1440, "UTC", strict=True),
            id="full-day-names-and-end-of-day",
        ),
    ],
)
def test_window_accepts(window: dict[str, Any], expected: core.Window) -> None:
    step = parse_config(window_step(window)).policy("prod").classes[0].ladder[0]
    assert step.window == expected


@pytest.mark.parametrize(
    ("window", "path", "message"),
    [
        pytest.param(
            {"start": "05:00", "end": "02:00"},
            "window",
            "end 02:00 is before start 05:00: set overnight: true for a window that crosses midnight",
            id="end-before-start",
        ),
        pytest.param(
            {"start": "02:00", "end": "02:00", "overnight": True},
            "window",
            "start and end are both 02:00",
            id="end-equals-start",
        ),
        pytest.param(
            {"start": "02:00", "end": "05:00", "overnight": True},
            "window",
            "overnight is true but end 05:00 is after start 02:00",
            id="overnight-not-crossing-midnight",
        ),
        pytest.param(
            {"start": "24:00", "end": "05:00", "overnight": True}, "window", "use 00:00", id="start-24"
        ),
        pytest.param(
            {"start": "25:00", "end": "05:00"}, "window.start", "invalid time '25:00'", id="hour-25"
        ),
        pytest.param(
            {"start": "02:60", "end": "05:00"}, "window.start", "invalid time '02:60'", id="minute-60"
        ),
        pytest.param({"start": "2am", "end": "05:00"}, "window.start", "expected HH:MM", id="am-pm"),
        pytest.param(
            {"start": "02:00", "end": "05:00", "timezone": "Mars/Olympus"},
            "window.timezone",
            "unknown timezone 'Mars/Olympus'",
            id="unknown-timezone",
        ),
        pytest.param(
            {"start": "02:00", "end": "05:00", "timezone": "Europe/Berln"},
            "window.timezone",
            "did you mean Europe/Berlin?",
            id="misspelt-timezone",
        ),
        pytest.param(
            {"start": "02:00", "end": "05:00", "timezone": "../../etc/passwd"},
            "window.timezone",
            "unknown timezone",
            id="path-as-timezone",
        ),
        pytest.param(
            {"days": ["funday"], "start": "02:00", "end": "05:00"},
            "window.days[0]",
            "invalid day 'funday'",
            id="bad-day",
        ),
        pytest.param(
            {"days": [], "start": "02:00", "end": "05:00"}, "window.days", "must not be empty", id="no-days"
        ),
        pytest.param({"start": "02:00"}, "window.end", "required key is missing", id="missing-end"),
    ],
)
def test_window_refuses(window: dict[str, Any], path: str, message: str) -> None:
    issue = one_error(window_step(window))
    assert issue.path == f"nodeClasses[0].ladder[0].{path}"
    assert message in issue.message


@pytest.mark.parametrize(
    ("start", "shown"),
    [
        pytest.param("22:00", "got the number 1320", id="22-00"),
        pytest.param("2:00", "got the number 120", id="2-00"),
    ],
)
def test_unquoted_time_is_refused_with_a_hint_to_quote(start: str, shown: str) -> None:
    text = dump(doc()).replace(
        "  ladder:\n  - action: replace\n    timeout: 10m\n",
        f"  ladder:\n  - action: reboot\n    window: {{start: {start}, end: '23:30'}}\n",
    )
    issue = one_error(text)
    assert issue.path == "nodeClasses[0].ladder[0].window.start"
    assert issue.line == line_of(text, "window:") == 21
    assert shown in issue.message
    assert "quote times" in issue.message


def test_unquoted_time_with_a_leading_zero_is_read_as_text_and_accepted() -> None:
    # PyYAML only takes base-60 numbers without a leading zero: `02:00` stays the string "02:00".
    text = dump(doc()).replace(
        "  ladder:\n  - action: replace\n    timeout: 10m\n",
        "  ladder:\n  - action: reboot\n    window: {start: 02:00, end: 05:00}\n",
    )
    window = parse_config(text).policy("prod").classes[0].ladder[0].window
    assert window is not None and (window.start, window.end) == (120, 300)


# ------------------------------------------------------------------------------------------------
# Selectors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        pytest.param({"matchLabels": {"gpu": True}}, {"gpu": "true"}, True, id="yaml-boolean-label-value"),
        pytest.param({"matchLabels": {"tier": 1}}, {"tier": "1"}, True, id="yaml-int-label-value"),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
            {"zone": "b"},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            {},
            True,
            id="notin-absent",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "example.com/spot", "operator": "DoesNotExist"}]},
            {"example.com/spot": ""},
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
            id="labels-and-expressions",
        ),
        pytest.param({}, {"x": "y"}, True, id="empty-selects-all"),
    ],
)
def test_selector_converts_to_a_matching_core_selector(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    cls = parse_config(dump(doc(cls__selector=selector))).policy("prod").classes[0]
    assert cls.selector.matches(labels) is matches


@pytest.mark.parametrize(
    ("selector", "path", "message"),
    [
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "In"}]},
            "matchExpressions[0].values",
            "values must be non-empty when operator is In",
            id="in-without-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": []}]},
            "matchExpressions[0].values",
            "values must be non-empty when operator is NotIn",
            id="notin-empty-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]},
            "matchExpressions[0].values",
            "values may not be given when operator is Exists",
            id="exists-with-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "Equals", "values": ["a"]}]},
            "matchExpressions[0].operator",
            "invalid value 'Equals': expected 'In', 'NotIn', 'Exists' or 'DoesNotExist'",
            id="unknown-operator",
        ),
        pytest.param(
            {"matchLabels": {"-bad": "x"}},
            'matchLabels["-bad"]',
            "invalid label key '-bad'",
            id="bad-key-name",
        ),
        pytest.param(
            {"matchLabels": {"Example.com/x": "y"}},
            'matchLabels["Example.com/x"]',
            "prefix before '/' must be a lowercase DNS subdomain",
            id="uppercase-prefix",
        ),
        pytest.param(
            {"matchLabels": {"k": "v" * 64}}, "matchLabels.k", "invalid label value", id="value-too-long"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "k", "operator": "In", "values": ["bad value"]}]},
            "matchExpressions[0].values[0]",
            "invalid label value 'bad value'",
            id="expression-value-with-space",
        ),
    ],
)
def test_selector_refuses(selector: dict[str, Any], path: str, message: str) -> None:
    issue = one_error(dump(doc(cls__selector=selector)))
    assert issue.path == f"nodeClasses[0].selector.{path}"
    assert message in issue.message


@pytest.mark.parametrize(
    ("label_yaml", "value"),
    [
        pytest.param("NO", "NO", id="norway-stays-text"),
        pytest.param("on", "on", id="on-stays-text"),
        pytest.param("yes", "yes", id="yes-stays-text"),
        pytest.param("true", "true", id="true-is-a-boolean-read-back-as-true"),
        pytest.param("False", "false", id="False-is-a-boolean-read-back-as-false"),
    ],
)
def test_yaml_1_1_boolean_words_do_not_change_label_values(label_yaml: str, value: str) -> None:
    text = dump(doc()).replace("noderescue.io/class: workers", f"noderescue.io/class: {label_yaml}")
    selector = parse_config(text).policy("prod").classes[0].selector
    assert selector.match_labels == (("noderescue.io/class", value),)


# ------------------------------------------------------------------------------------------------
# Rules, including YAML 1.1 booleans
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules_yaml", "expected"),
    [
        pytest.param(
            "[{type: KernelDeadlock, status: [True], for: 1m}]",
            core.ConditionRule("KernelDeadlock", frozenset({"True"}), 60.0),
            id="bare-True-is-a-boolean-in-yaml",
        ),
        pytest.param(
            "[{type: Ready, status: [False, Unknown], for: 5m}]",
            core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),
            id="bare-False",
        ),
        pytest.param(
            "[{type: Ready, status: [false, unknown], for: 5m}]",
            core.ConditionRule("Ready", frozenset({"False", "Unknown"}), 300.0),
            id="lowercase",
        ),
        pytest.param(
            "[{type: NetworkingReady, status: False, for: 0s}]",
            core.ConditionRule("NetworkingReady", frozenset({"False"}), 0.0),
            id="single-status-not-in-a-list",
        ),
        pytest.param("[{type: NodeLease, staleFor: 90s}]", core.LeaseRule(90.0), id="node-lease"),
    ],
)
def test_rules_accept(rules_yaml: str, expected: core.Rule) -> None:
    text = dump(doc()).replace(
        "  rules:\n  - type: Ready\n    status:\n    - 'False'\n    - Unknown\n    for: 3m\n", ""
    )
    text = text.replace("  ladder:\n", f"  rules: {rules_yaml}\n  ladder:\n")
    assert parse_config(text).policy("prod").classes[0].rules == (expected,)


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        pytest.param(
            {"type": "NodeLease", "for": "2m"},
            "rules[0]",
            "a NodeLease rule takes only staleFor",
            id="lease-with-for",
        ),
        pytest.param(
            {"type": "NodeLease"}, "rules[0]", "a NodeLease rule needs staleFor", id="lease-without-stale"
        ),
        pytest.param(
            {"type": "Ready", "for": "5m"},
            "rules[0]",
            "a Ready rule needs status and for",
            id="condition-no-status",
        ),
        pytest.param(
            {"type": "Ready", "status": ["False"], "staleFor": "5m"},
            "rules[0]",
            "staleFor is only for NodeLease rules",
            id="stale-for-on-condition",
        ),
        pytest.param(
            {"type": "Ready", "status": ["Broken"], "for": "5m"},
            "rules[0].status[0]",
            "invalid condition status 'Broken'",
            id="bad-status",
        ),
        pytest.param(
            {"type": "Ready", "status": [], "for": "5m"},
            "rules[0].status",
            "must not be empty",
            id="no-status",
        ),
        pytest.param(
            {"type": "", "status": ["True"], "for": "5m"}, "rules[0].type", "must not be empty", id="no-type"
        ),
    ],
)
def test_rules_refuse(rule: dict[str, Any], path: str, message: str) -> None:
    issue = one_error(dump(doc(cls__rules=[rule])))
    assert issue.path == f"nodeClasses[0].{path}"
    assert message in issue.message


# ------------------------------------------------------------------------------------------------
# Cross-field checks
# ------------------------------------------------------------------------------------------------

NONE_CLUSTER = {"name": "lab", "provider": "none"}


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        pytest.param(
            doc(cls__ladder=[{"action": "restart", "timeout": "5m"}]),
            "nodeClasses[0].ladder[0].action",
            "unknown action 'restart' (expected one of repair, reboot, replace, notify)",
            id="unknown-action",
        ),
        pytest.param(
            doc(clusters=[*BASE["clusters"], NONE_CLUSTER]),
            "nodeClasses[0].ladder[0]",
            "replace needs a cloud provider, but cluster 'lab' (clusters[1]) has provider none",
            id="replace-on-provider-none",
        ),
        pytest.param(doc(cls__ladder=[]), "nodeClasses[0].ladder", "must not be empty", id="empty-ladder"),
        pytest.param(
            doc(nodeClasses=[BASE["nodeClasses"][0], BASE["nodeClasses"][0]]),
            "nodeClasses[1].name",
            "duplicate class name 'workers' (also nodeClasses[0])",
            id="duplicate-class",
        ),
        pytest.param(
            doc(clusters=[BASE["clusters"][0], BASE["clusters"][0]]),
            "clusters[1].name",
            "duplicate cluster name 'prod' (also clusters[0])",
            id="duplicate-cluster",
        ),
        pytest.param(
            doc(cls__ladder=[{"action": "reboot", "command": "x"}]),
            "nodeClasses[0].ladder[0].command",
            "command is only for repair steps, not reboot",
            id="command-on-reboot",
        ),
        pytest.param(
            doc(cls__ladder=[{"action": "repair", "timeout": "5m"}]),
            "nodeClasses[0].ladder[0].command",
            "repair needs a command",
            id="repair-without-command",
        ),
        pytest.param(
            doc(cls__ladder=["notify", "replace"]),
            "nodeClasses[0].ladder[0]",
            "notify must be the last step of a ladder",
            id="notify-not-last",
        ),
        pytest.param(
            doc(cls__ladder=[{"action": "notify", "timeout": "5m"}]),
            "nodeClasses[0].ladder[0].timeout",
            "notify has no timeout",
            id="timeout-on-notify",
        ),
        pytest.param(
            doc(cls__ladder=[{"action": "notify", "window": {"start": "01:00", "end": "02:00"}}]),
            "nodeClasses[0].ladder[0].window",
            "notify does not wait for a window",
            id="window-on-notify",
        ),
        pytest.param(
            doc(safety={"rateLimits": [{"action": "terminate", "max": 3, "per": "1h"}]}),
            "safety.rateLimits[0].action",
            "unknown action 'terminate'",
            id="rate-limit-unknown-action",
        ),
        pytest.param(
            doc(safety={"rateLimits": [{"action": "notify", "max": 3, "per": "1h"}]}),
            "safety.rateLimits[0].action",
            "notify cannot be rate limited",
            id="rate-limit-notify",
        ),
        pytest.param(
            doc(clusters=[{"name": "prod", "provider": "aws"}]),
            "clusters[0].aws",
            "provider is aws: an aws block is required",
            id="aws-without-block",
        ),
        pytest.param(
            doc(clusters=[{"name": "prod", "provider": "azure"}]),
            "clusters[0].azure",
            "provider is azure: an azure block is required",
            id="azure-without-block",
        ),
        pytest.param(
            doc(
                clusters=[
                    {"name": "prod", "provider": "none", "aws": {"region": "r", "autoScalingGroups": ["a"]}}
                ],
                cls__ladder=["notify"],
            ),
            "clusters[0].aws",
            "an aws block does not belong to a cluster with provider none",
            id="block-on-provider-none",
        ),
        pytest.param(
            doc(cluster__provider="gcp"),
            "clusters[0].provider",
            "invalid value 'gcp': expected 'aws', 'azure' or 'none'",
            id="unknown-provider",
        ),
        pytest.param(doc(clusters=[]), "clusters", "must not be empty", id="no-clusters"),
        pytest.param(
            doc(notifications=[{"type": "webhook", "url": "https://h", "events": ["started", "exploded"]}]),
            "notifications[0].events[1]",
            "invalid value 'exploded'",
            id="unknown-notification-event",
        ),
        pytest.param(
            doc(notifications=[{"type": "webhook", "url": "hooks.example.com"}]),
            "notifications[0].url",
            "invalid URL 'hooks.example.com'",
            id="url-without-scheme",
        ),
        pytest.param(
            doc(cls__drain={"gracePeriod": "1.5s"}),
            "nodeClasses[0].drain.gracePeriod",
            "must be whole seconds",
            id="fractional-grace-period",
        ),
        pytest.param(
            doc(cls__drain={"onTimeout": "retry"}),
            "nodeClasses[0].drain.onTimeout",
            "expected 'abort' or 'proceed'",
            id="bad-on-timeout",
        ),
        pytest.param(
            doc(safety={"maxConcurrent": 0}),
            "safety.maxConcurrent",
            "must be at least 1",
            id="max-concurrent-zero",
        ),
        pytest.param(
            doc(cluster__name="prod eu"),
            "clusters[0].name",
            "invalid name 'prod eu'",
            id="cluster-name-with-space",
        ),
        pytest.param(
            doc(cluster__namespace="NodeRescue"),
            "clusters[0].namespace",
            "invalid name 'NodeRescue'",
            id="bad-namespace",
        ),
        pytest.param(
            doc(dryRun="maybe"), "dryRun", "expected true or false, got 'maybe'", id="dry-run-not-bool"
        ),
        pytest.param(
            doc(nodeClasses={"workers": {}}), "nodeClasses", "expected a list, got a mapping", id="not-a-list"
        ),
    ],
)
def test_each_check_reports_its_path(data: dict[str, Any], path: str, message: str) -> None:
    issue = one_error(dump(data))
    assert issue.path == path
    assert message in issue.message
    assert issue.line is not None


def test_provider_none_is_checked_against_every_class_and_step() -> None:
    data = doc(
        clusters=[*BASE["clusters"], NONE_CLUSTER],
        nodeClasses=[
            {
                "name": "a",
                "selector": {},
                "ladder": [{"action": "repair", "command": "x"}, "reboot", "notify"],
            },
            {"name": "b", "selector": {}, "ladder": ["notify"]},
        ],
    )
    errors = errors_of(dump(data))
    assert [e.path for e in errors] == ["nodeClasses[0].ladder[0]", "nodeClasses[0].ladder[1]"]
    assert all("cluster 'lab'" in e.message for e in errors)


def test_notify_only_ladders_are_fine_on_provider_none() -> None:
    config = parse_config(dump(doc(clusters=[NONE_CLUSTER], cls__ladder=["notify"])))
    assert config.policy("lab").provider == "none"


def test_cross_checks_run_alongside_field_errors() -> None:
    # Duplicate names and notify placement live outside pydantic's per-field pass: they must still
    # be reported when the same classes have field errors.
    broken = {
        "name": "workers",
        "selector": {},
        "ladder": ["notify", {"action": "reboot", "timeout": "soon"}],
    }
    errors = errors_of(dump(doc(nodeClasses=[broken, broken])))
    assert sorted((e.path, e.message.split(" (")[0]) for e in errors) == sorted(
        [
            ("nodeClasses[0].ladder[0]", "notify must be the last step of a ladder"),
            ("nodeClasses[0].ladder[1].timeout", "invalid duration 'soon'"),
            ("nodeClasses[1].ladder[0]", "notify must be the last step of a ladder"),
            ("nodeClasses[1].ladder[1].timeout", "invalid duration 'soon'"),
            ("nodeClasses[1].name", "duplicate class name 'workers'"),
        ]
    )


def test_broken_list_items_are_not_also_reported_as_an_empty_list() -> None:
    errors = errors_of(dump(doc(clusters=[{"name": "a"}, {"name": "b"}])))
    assert [e.path for e in errors] == ["clusters[0].provider", "clusters[1].provider"]


# ------------------------------------------------------------------------------------------------
# Unknown keys
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        pytest.param(doc(dryrun=True), "dryrun", "unknown key 'dryrun' (did you mean 'dryRun'?)", id="root"),
        pytest.param(
            doc(cluster__kubeConfig="x"), "clusters[0].kubeConfig", "did you mean 'kubeconfig'?", id="cluster"
        ),
        pytest.param(
            doc(
                clusters=[
                    {
                        "name": "p",
                        "provider": "aws",
                        "aws": {"region": "r", "autoScalingGroups": ["a"], "asg": 1},
                    }
                ]
            ),
            "clusters[0].aws.asg",
            "unknown key 'asg'",
            id="aws-block",
        ),
        pytest.param(
            doc(safety={"maxUnhealthyPerzone": "50%"}),
            "safety.maxUnhealthyPerzone",
            "did you mean 'maxUnhealthyPerZone'?",
            id="safety",
        ),
        pytest.param(
            doc(cls__max_unavailable=1),
            "nodeClasses[0].max_unavailable",
            "keys are camelCase: did you mean 'maxUnavailable'?",
            id="snake-case-class-key",
        ),
        pytest.param(
            doc(cls__drain={"timout": "5m"}),
            "nodeClasses[0].drain.timout",
            "did you mean 'timeout'?",
            id="drain",
        ),
        pytest.param(
            doc(cls__ladder=[{"action": "replace", "wait": "5m"}]),
            "nodeClasses[0].ladder[0].wait",
            "unknown key 'wait' (allowed: action, timeout, command, window)",
            id="step",
        ),
        pytest.param(
            doc(
                cls__ladder=[{"action": "reboot", "window": {"start": "01:00", "end": "02:00", "tz": "UTC"}}]
            ),
            "nodeClasses[0].ladder[0].window.tz",
            "unknown key 'tz'",
            id="window",
        ),
        pytest.param(
            doc(cls__selector={"matchExpressions": [{"key": "k", "operator": "Exists", "value": []}]}),
            "nodeClasses[0].selector.matchExpressions[0].value",
            "did you mean 'values'?",
            id="selector-expression",
        ),
        pytest.param(
            doc(cls__rules=[{"type": "Ready", "status": ["False"], "for": "1m", "after": "1m"}]),
            "nodeClasses[0].rules[0].after",
            "unknown key 'after'",
            id="rule",
        ),
    ],
)
def test_unknown_keys_are_errors_at_every_depth(data: dict[str, Any], path: str, message: str) -> None:
    issue = one_error(dump(data))
    assert issue.path == path
    assert message in issue.message


# ------------------------------------------------------------------------------------------------
# Paths, lines and rendering
# ------------------------------------------------------------------------------------------------

THREE_MISTAKES = textwrap.dedent(
    """\
    dryRun: false
    clusters:
      - name: prod
        provider: aws
        aws: {region: eu-west-1, autoScalingGroups: [w]}
    safety:
      maxUnhealthy: 140%
    nodeClasses:
      - name: workers
        selector: {matchLabels: {noderescue.io/class: workers}}
        rules:
          - {type: Ready, status: [False, Unknown], for: 3m}
        ladder:
          - {action: replace, timeout: 5 minutes}
        drain: {timeout: 5m, onTimeot: proceed}
    """
)


def test_three_independent_mistakes_give_exactly_three_errors_with_paths_and_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(THREE_MISTAKES, source="three.yaml")
    errors = info.value.errors
    assert [(e.path, e.line) for e in errors] == [
        ("safety.maxUnhealthy", 7),
        ("nodeClasses[0].ladder[0].timeout", 14),
        ("nodeClasses[0].drain.onTimeot", 15),
    ]
    assert info.value.render().splitlines() == [
        "safety.maxUnhealthy (line 7): percentage 140% is over 100%",
        "nodeClasses[0].ladder[0].timeout (line 14): invalid duration '5 minutes' "
        "(use a number with a unit, e.g. 90s, 5m, 1h30m, 2h or 1d)",
        "nodeClasses[0].drain.onTimeot (line 15): unknown key 'onTimeot' (did you mean 'onTimeout'?)",
        "3 errors in three.yaml",
    ]


def test_a_single_error_renders_with_a_singular_count() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(dump(doc(dryRun="x")), source="c.yaml")
    assert info.value.render().splitlines()[-1] == "1 error in c.yaml"
    assert str(info.value) == info.value.render()


def test_missing_key_points_at_the_mapping_that_lacks_it() -> None:
    # (A class's selector may be left out when it has groups: the ladder is required.)
    text = "clusters:\n  - name: prod\n    provider: none\nnodeClasses:\n  - name: a\n    selector: {}\n"
    issue = one_error(text)
    assert (issue.path, issue.line, issue.message) == (
        "nodeClasses[0].ladder",
        5,
        "required key is missing",
    )


def test_a_class_without_selector_or_groups_is_refused() -> None:
    text = "clusters:\n  - name: prod\n    provider: none\nnodeClasses:\n  - name: a\n    ladder: [notify]\n"
    issue = one_error(text)
    assert issue.path == "nodeClasses[0]"
    assert "needs a selector, groups, or both" in issue.message


def test_duplicate_yaml_keys_are_errors() -> None:
    text = dump(doc()) + "dryRun: true\ndryRun: false\n"
    issue = one_error(text)
    assert issue.path == "dryRun"
    assert "duplicate key 'dryRun' (first at line" in issue.message


def test_anchors_and_merge_keys_work_and_keep_lines() -> None:
    text = textwrap.dedent(
        """\
        clusters:
          - name: prod
            provider: none
        nodeClasses:
          - &base
            name: a
            selector: {}
            ladder: [notify]
            drain: {timeout: 5m}
          - <<: *base
            name: b
            drain: {timeout: forever}
        """
    )
    issue = one_error(text)
    assert (issue.path, issue.line) == ("nodeClasses[1].drain.timeout", 12)
    fixed = parse_config(text.replace("forever", "7m"))
    assert [c.name for c in fixed.node_classes] == ["a", "b"]
    assert fixed.policy("prod").classes[1].drain.timeout_s == 420.0


# ------------------------------------------------------------------------------------------------
# HTTP bind and paths
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        pytest.param("127.0.0.1:9478", ("127.0.0.1", 9478), id="ipv4"),
        pytest.param("[::1]:9000", ("::1", 9000), id="ipv6"),
        pytest.param(":9478", ("0.0.0.0", 9478), id="all-interfaces"),
        pytest.param("localhost:0", ("localhost", 0), id="any-port"),
    ],
)
def test_http_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected
    assert parse_config(dump(doc(http={"bind": bind}))).http_bind == expected


@pytest.mark.parametrize(
    "bind",
    [
        pytest.param("localhost", id="no-port"),
        pytest.param("0.0.0.0:99999", id="port-too-big"),
        pytest.param("::1:9478", id="ipv6-without-brackets"),
        pytest.param(9478, id="bare-port-number"),
    ],
)
def test_http_bind_refuses(bind: Any) -> None:
    issue = one_error(dump(doc(http={"bind": bind})))
    assert issue.path == "http.bind"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    data = doc(
        clusters=[
            {
                "name": "a",
                "provider": "aws",
                "kubeconfig": "kube/a.yaml",
                "aws": {"region": "r", "autoScalingGroups": ["g"]},
            },
            {
                "name": "b",
                "provider": "azure",
                "kubeconfig": "/abs/b.yaml",
                "azure": {
                    "subscriptionId": "s",
                    "resourceGroup": "rg",
                    "scaleSets": ["ss"],
                    "caBundle": "ca.pem",
                    "armEndpoint": "https://127.0.0.1:8443",
                    "replaceMode": "delete",
                },
            },
        ]
    )
    path = tmp_path / "noderescue.yaml"
    path.write_text(dump(data))
    config = load_config(path)
    assert config.clusters[0].kubeconfig == tmp_path / "kube" / "a.yaml"
    assert config.clusters[1].kubeconfig == Path("/abs/b.yaml")
    assert config.clusters[1].azure is not None
    assert config.clusters[1].azure.ca_bundle == tmp_path / "ca.pem"
    assert config.clusters[1].azure.replace_mode == "delete"
    assert parse_config(dump(data)).clusters[0].kubeconfig == Path("kube/a.yaml")


# ------------------------------------------------------------------------------------------------
# Files that are not a configuration
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(b"# only a comment\n\n", "the file is empty", id="comments-only"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text", id="binary-garbage"),
        pytest.param(b"a: b\x00c\n", "invalid YAML at line 1: control character #x0000", id="nul-byte"),
        pytest.param(b"- a\n- b\n", "the top level must be a mapping", id="top-level-list"),
        pytest.param(b"just words\n", "the top level must be a mapping", id="top-level-scalar"),
        pytest.param(
            b"a: b\n  c: d\n", "invalid YAML at line 2, column 4: mapping values are not allowed", id="syntax"
        ),
        pytest.param(b"a: [1,\n", "invalid YAML at line 2, column 1", id="unclosed-flow"),
        pytest.param(b"a: 1\n---\nb: 2\n", "expected a single document", id="two-documents"),
        pytest.param(
            b"a: !!python/object:os.system {}\n", "could not determine a constructor", id="python-tag"
        ),
    ],
)
def test_unusable_files_give_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    rendered = info.value.render()
    assert "\n" not in rendered
    assert rendered.startswith(f"{path}: ")
    assert message in rendered


def test_missing_file_and_directory_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file$"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_unicode_is_fine_where_text_is_free_and_refused_where_kubernetes_forbids_it(tmp_path: Path) -> None:
    data = doc(
        notifications=[
            {"type": "webhook", "url": "https://hooks.example.com/ü", "headers": {"X-Team": "Ærø"}}
        ]
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "\ufeff# Konfiguration für Müller — 日本\n" + yaml.safe_dump(data, allow_unicode=True), "utf-8"
    )
    config = load_config(path)  # a UTF-8 byte order mark is fine
    assert config.notifications[0].headers == {"X-Team": "Ærø"}
    issue = one_error(dump(doc(cls__selector={"matchLabels": {"team": "müller"}})))
    assert issue.path == "nodeClasses[0].selector.matchLabels.team"


def test_billion_laughs_document_is_refused_quickly() -> None:
    # 9**9 list items when expanded: walking the aliases instead of the shared nodes would hang.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    errors = errors_of("\n".join(lines))
    assert any(e.path == "clusters" for e in errors)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("90s", 90.0, id="duration"),
        pytest.param(None, None, id="null-waits-until-the-drain-timeout"),
    ],
)
def test_drain_skip_wait_for_delete_timeout(value: str | None, expected: float | None) -> None:
    config = parse_config(dump(doc(cls__drain={"skipWaitForDeleteTimeout": value})))
    (cls,) = config.policy(config.clusters[0].name).classes
    assert cls.drain.skip_wait_for_delete_s == expected


# ------------------------------------------------------------------ warnings (legal foot-guns)


def warnings_of(data: dict[str, Any]) -> list[str]:
    from noderescue.config_checks import config_warnings
    from noderescue.config_yaml import load_yaml

    text = dump(data)
    parse_config(text)  # every case is a valid configuration
    loaded = load_yaml(text, "<test>")
    return [f"{w.path}: {w.message}" for w in config_warnings(loaded.data, loaded.lines)]


QUIET = {"maxUnhealthy": 1}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"safety": QUIET}, [], id="clean"),
        pytest.param({}, [], id="default-percent"),
        pytest.param(
            {"safety": {"maxUnhealthy": "30%"}},
            ["safety.maxUnhealthy: maxUnhealthy 30% rounds down: a class (or cluster) of fewer than 4"],
            id="30-percent",
        ),
        pytest.param({"safety": {"maxUnhealthy": "100%"}}, [], id="100-percent"),
        pytest.param(
            {"safety": {"maxUnhealthy": "10%"}},
            ["safety.maxUnhealthy: maxUnhealthy 10% rounds down: a class (or cluster) of fewer than 10"],
            id="10-percent",
        ),
        pytest.param(
            {"safety": {"maxUnhealthy": 0}},
            ["safety.maxUnhealthy: maxUnhealthy 0: one unhealthy node trips"],
            id="zero",
        ),
        pytest.param({"safety": {**QUIET, "staleAfter": "1h"}}, [], id="stale-1h-ok"),
        pytest.param(
            {"safety": {**QUIET, "staleAfter": "61m"}},
            ["safety.staleAfter: staleAfter 1h1m: "],
            id="stale-61m",
        ),
        pytest.param(
            {
                "safety": {
                    **QUIET,
                    "rateLimits": [
                        {"action": "reboot", "max": 1, "per": "1h"},
                        {"action": "replace", "max": 1, "per": "1h"},
                    ],
                }
            },
            [],
            id="distinct-limits",
        ),
        pytest.param(
            {"safety": QUIET, "cls__rules": [{"type": "Ready", "status": "True", "for": "1m"}]},
            ["nodeClasses[0].rules[0].status: a Ready rule that matches status True"],
            id="ready-true-scalar",
        ),
        pytest.param(
            {"safety": QUIET, "cls__rules": [{"type": "KernelDeadlock", "status": ["True"], "for": "1m"}]},
            [],
            id="other-condition-true",
        ),
        pytest.param(
            {"safety": QUIET, "cls__ladder": [{"action": "replace", "timeout": "1d"}]}, [], id="timeout-1d-ok"
        ),
        pytest.param(
            {"safety": QUIET, "cls__drain": {"timeout": "8760h"}},
            ["nodeClasses[0].drain.timeout: drain timeout 365d: "],
            id="drain-a-year",
        ),
    ],
)
def test_config_warnings(changes: dict[str, Any], expected: list[str]) -> None:
    found = warnings_of(doc(**changes))
    assert len(found) == len(expected), found
    for message, start in zip(found, expected, strict=True):
        assert message.startswith(start), message
def test_http_auth_defaults_to_auto_and_takes_a_review_kubeconfig(tmp_path: Path) -> None:
    assert parse_config(dump(doc())).http.auth == "auto"
    config = parse_config(
        dump(doc(http={"bind": ":9478", "auth": "kubernetes", "authKubeconfig": "kc"})), base_dir=tmp_path
    )
    assert config.http.auth == "kubernetes"
    assert config.http.auth_kubeconfig == tmp_path / "kc"
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(doc(http={"auth": "tls"})))
    assert "http.auth" in caught.value.render()


# ---------------------------------------------------------------------------------------------
# Secrets: from files or the environment, warned about inline, never echoed
# ---------------------------------------------------------------------------------------------

SLACK_SECRET = "T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"


def webhook(**keys: Any) -> dict[str, Any]:
    return doc(notifications=[{"type": "webhook", **keys}])


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"hooks.slack.com/services/{SLACK_SECRET}", id="no-scheme"),
        pytest.param(f"ftp://hooks.slack.com/services/{SLACK_SECRET}", id="wrong-scheme"),
        pytest.param(f"https:///services/{SLACK_SECRET}", id="no-host"),
    ],
)
def test_an_invalid_webhook_url_is_reported_without_its_secret(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(webhook(url=url)))
    rendered = caught.value.render()
    assert "notifications[0].url" in rendered
    assert "XXXXXXXX" not in rendered and "B0000" not in rendered
    assert "XXXXXXXX" not in str(caught.value)


def test_webhook_url_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(f"https://hooks.slack.com/services/{SLACK_SECRET}\n")
    config = parse_config(dump(webhook(urlFile="url")), base_dir=tmp_path)
    settings = config.notifications[0]
    assert settings.url is None and settings.url_file == tmp_path / "url"
    assert settings.resolve_url() == f"https://hooks.slack.com/services/{SLACK_SECRET}"
    # The configuration itself never held the secret.
    assert SLACK_SECRET not in repr(config)


def test_webhook_url_and_headers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", "https://example.com/hook?token=abc")
    monkeypatch.setenv("HOOK_AUTH", "Bearer s3cr3t")
    config = parse_config(
        dump(webhook(urlEnv="HOOK_URL", headers={"X-Team": "sre"}, headersEnv={"Authorization": "HOOK_AUTH"}))
    )
    settings = config.notifications[0]
    assert settings.resolve_url() == "https://example.com/hook?token=abc"
    assert settings.resolve_headers() == {"X-Team": "sre", "Authorization": "Bearer s3cr3t"}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param({}, "exactly one of urlFile, urlEnv or url", id="none"),
        pytest.param(
            {"url": "https://h/x", "urlEnv": "X"},
            "exactly one of urlFile, urlEnv or url (got url, urlEnv)",
            id="two",
        ),
        pytest.param({"urlEnv": "not a name"}, "expected an environment variable name", id="bad-env-name"),
        pytest.param(
            {"urlEnv": "U", "headers": {"authorization": "x"}, "headersEnv": {"Authorization": "A"}},
            "header authorization is given more than once",
            id="header-twice",
        ),
    ],
)
def test_webhook_secret_sources_are_validated(keys: dict[str, Any], message: str) -> None:
    [issue] = errors_of(dump(webhook(**keys)))
    assert issue.path == "notifications[0]" or issue.path.startswith("notifications[0].")
    assert message in issue.message


def test_unreadable_secrets_say_where_from_but_not_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noderescue.config_secrets import SecretError

    config = parse_config(dump(webhook(urlFile="missing")), base_dir=tmp_path)
    with pytest.raises(SecretError, match=r"notifications\[0\]\.urlFile: .*missing: no such file"):
        config.notifications[0].resolve_url("notifications[0].url")
    (tmp_path / "bad").write_text(f"hooks.slack.com/services/{SLACK_SECRET}")
    config = parse_config(dump(webhook(urlFile="bad")), base_dir=tmp_path)
    with pytest.raises(SecretError) as caught:
        config.notifications[0].resolve_url("notifications[0].url")
    assert "invalid URL 'hooks.slack.com/…'" in str(caught.value)
    assert SLACK_SECRET not in str(caught.value)
    monkeypatch.delenv("UNSET_HOOK", raising=False)
    config = parse_config(dump(webhook(urlEnv="UNSET_HOOK")))
    with pytest.raises(SecretError, match="UNSET_HOOK is not set"):
        config.notifications[0].resolve_url()


def test_inline_secrets_are_warnings_with_their_yaml_path_and_line() -> None:
    text = dump(
        webhook(
            url="https://hooks.slack.com/services/x", headers={"Authorization": "Bearer t", "X-Team": "a"}
        )
    )
    config, warnings = parse_config_report(text)
    assert config.notifications[0].url == "https://hooks.slack.com/services/x"
    assert [(w.path, w.line) for w in warnings] == [
        ("notifications[0].url", line_of(text, "url:")),
        ("notifications[0].headers.Authorization", line_of(text, "Authorization:")),
    ]
    assert "urlFile" in warnings[0].message
    assert "Bearer t" not in str(warnings[1])


def test_secrets_from_files_or_the_environment_warn_about_nothing() -> None:
    _, warnings = parse_config_report(dump(webhook(urlEnv="U", headersEnv={"Authorization": "A"})))
    assert warnings == []
    _, warnings = parse_config_report(EXAMPLE.read_text(), base_dir=EXAMPLE.parent)
    assert warnings == []
