"""The ``leaderElection`` block: defaults, validation with paths, and what the daemon runs with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from noderescue.config import ConfigError, load_config, parse_config
from noderescue.runtime.app import leader_timings
from noderescue.runtime.cluster import LeaderTimings
from tests.test_config import BASE

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def text_with(election: Any) -> str:
    data: dict[str, Any] = copy.deepcopy(BASE)
    data["leaderElection"] = election
    return yaml.safe_dump(data, sort_keys=False)


def test_defaults_are_client_go_s() -> None:
    config = parse_config(yaml.safe_dump(BASE, sort_keys=False))
    assert leader_timings(config) == LeaderTimings(15.0, 10.0, 2.0)


def test_the_example_documents_the_defaults() -> None:
    assert leader_timings(load_config(EXAMPLE)) == LeaderTimings(15.0, 10.0, 2.0)


def test_short_timings_reach_the_runtime() -> None:
    config = parse_config(text_with({"leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "500ms"}))
    assert leader_timings(config) == LeaderTimings(3.0, 2.0, 0.5)


def test_one_key_given_keeps_the_other_defaults() -> None:
    config = parse_config(text_with({"leaseDuration": "30s"}))
    assert leader_timings(config) == LeaderTimings(30.0, 10.0, 2.0)


@pytest.mark.parametrize(
    ("election", "path", "message"),
    [
        pytest.param(
            {"leaseDuration": "10s", "renewDeadline": "10s"},
            "leaderElection",
            "renewDeadline 10s must be shorter than leaseDuration 10s",
            id="renew-not-shorter-than-lease",
        ),
        pytest.param(
            {"leaseDuration": "5s"},
            "leaderElection",
            "renewDeadline 10s must be shorter than leaseDuration 5s",
            id="lease-below-default-renew",
        ),
        pytest.param(
            {"renewDeadline": "2s", "retryPeriod": "2s"},
            "leaderElection",
            "retryPeriod 2s must be shorter than renewDeadline 2s",
            id="retry-not-shorter-than-renew",
        ),
        pytest.param(
            {"leaseDuration": "2500ms", "renewDeadline": "1s", "retryPeriod": "200ms"},
            "leaderElection.leaseDuration",
            "must be whole seconds",
            id="fractional-lease",
        ),
        pytest.param({"leaseDuration": "0s"}, "leaderElection.leaseDuration", "longer than 0s", id="zero"),
        pytest.param({"retryPeriod": "soon"}, "leaderElection.retryPeriod", "invalid duration", id="bad"),
        pytest.param({"renewDeadline": 10}, "leaderElection.renewDeadline", "", id="bare-number"),
        pytest.param({"leaseDuraton": "15s"}, "leaderElection.leaseDuraton", "unknown key", id="typo"),
    ],
)
def test_refused_with_its_path(election: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text_with(election))
    (issue,) = info.value.errors
    assert issue.path == path, str(issue)
    assert message in issue.message
