"""Review findings on the configuration."""

from __future__ import annotations

import pytest

from noderescue.config import parse_config
from noderescue.config_errors import ConfigError

CONFIG = """\
clusters:
  - name: a
    provider: aws
    aws: {{region: eu-west-1, autoScalingGroups: [g]}}
nodeClasses:
  - name: w
    selector: {{matchLabels: {{a: b}}}}
    rules: [{{type: Ready, status: [False, Unknown], for: 3m}}]
    ladder:
      - {{action: repair, command: {command}}}
"""


@pytest.mark.parametrize(
    "command",
    [
        pytest.param('""', id="empty"),
        pytest.param('"   "', id="blank"),
        pytest.param('"\\t\\n"', id="whitespace-escapes"),
    ],
)
def test_a_repair_step_with_a_blank_command_is_refused(command: str) -> None:
    """SSM / run-command would "succeed" at running nothing, and the ladder would then wait out
    the step's timeout on a repair that never was one."""
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.format(command=command), source="blank.yaml")
    assert [(e.path, e.line) for e in info.value.errors] == [("nodeClasses[0].ladder[0].command", 10)]
