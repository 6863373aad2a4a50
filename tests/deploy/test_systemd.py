"""The systemd unit: the directives DESIGN §6 and issue 7 require, and systemd's own verdict on
it (`systemd-analyze security` exposure <= 2.0, `systemd-analyze verify` silent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import REPO

UNIT = REPO / "systemd" / "noderescue.service"
ENV_EXAMPLE = REPO / "systemd" / "noderescue.env.example"
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (.ci/deploy-checks installs it)"
)


def _directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, per key in order (keys may repeat)."""
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("Type", "notify", id="sd-notify-ready"),
        pytest.param("NotifyAccess", "main", id="notify-from-main-only"),
        pytest.param("WatchdogSec", "30", id="watchdog"),
        pytest.param("Restart", "on-failure", id="restart"),
        pytest.param("StartLimitIntervalSec", "600", id="start-limit-interval"),
        pytest.param("StartLimitBurst", "5", id="start-limit-burst"),
        pytest.param("RestartPreventExitStatus", "2", id="config-errors-do-not-loop"),
        pytest.param("DynamicUser", "yes", id="dynamic-user"),
        pytest.param("StateDirectory", "noderescue", id="state-directory"),
        pytest.param("ConfigurationDirectory", "noderescue", id="configuration-directory"),
        pytest.param("EnvironmentFile", "-/etc/default/noderescue", id="optional-environment-file"),
        pytest.param(
            "ExecStart",
            # %d: the credentials directory; the config arrives there as a credential.
            "/opt/noderescue/venv/bin/noderescue run --config %d/config.yaml",
            id="exec-start",
        ),
        pytest.param("LoadCredential", "config.yaml:/etc/noderescue/config.yaml", id="config-as-credential"),
        pytest.param("NoNewPrivileges", "yes", id="no-new-privileges"),
        pytest.param("ProtectSystem", "strict", id="read-only-system"),
        pytest.param("CapabilityBoundingSet", "", id="no-capabilities"),
    ],
)
def test_unit_has(key: str, value: str) -> None:
    assert _directives(UNIT.read_text()).get(key) == [value]


def test_unit_allows_network_and_the_notify_socket_only() -> None:
    [families] = _directives(UNIT.read_text())["RestrictAddressFamilies"]
    assert set(families.split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_stop_timeout_leaves_room_for_the_30s_safe_point() -> None:
    [timeout] = _directives(UNIT.read_text())["TimeoutStopSec"]
    assert int(timeout.removesuffix("s")) > 30


def test_environment_example_is_only_comments_and_assignments() -> None:
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        assert not line.strip() or line.startswith("#") or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", line), (
            f"line {number}: {line!r}"
        )


def exposure(unit: Path) -> float:
    assert SYSTEMD_ANALYZE is not None
    completed = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", completed.stdout)
    assert match, completed.stdout + completed.stderr
    return float(match.group(1))


@needs_systemd_analyze
def test_security_exposure_is_at_most_2() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """Without its sandbox the same unit rates far above the bar: the check above measures."""
    bare = tmp_path / "noderescue.service"
    keep = {"Description", "Type", "ExecStart", "WantedBy"}
    bare.write_text(
        "\n".join(
            line
            for line in UNIT.read_text().splitlines()
            if line.startswith("[") or line.partition("=")[0] in keep
        )
    )
    assert exposure(bare) > MAX_EXPOSURE


@needs_systemd_analyze
def test_verify_reports_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at one that does, keep the rest.
    true = shutil.which("true")
    assert true is not None
    unit = tmp_path / "noderescue.service"
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={true}", UNIT.read_text()))
    assert SYSTEMD_ANALYZE is not None
    completed = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (completed.returncode, completed.stdout + completed.stderr) == (0, "")


README = REPO / "systemd" / "README.md"


def test_readme_installs_the_config_unreadable_to_others_and_secrets_as_credentials() -> None:
    text = README.read_text()
    installs = re.findall(r"install\s+(?:-o \S+ )?(?:-g \S+ )?-m (\d{4}) (\S+) /etc/noderescue/(\S+)", text)
    modes = {target: mode for mode, _, target in installs}
    assert modes["config.yaml"] == "0640"
    # Every file installed under /etc/noderescue is unreadable to other users.
    assert all(mode[-1] == "0" for mode in modes.values()), modes
    assert "0644" not in " ".join(line for line in text.splitlines() if "/etc/noderescue/" in line)
    # The webhook URL is a credential, and the example configuration reads it from there.
    assert "LoadCredential=webhook-url:/etc/noderescue/webhook-url" in text
    example = (REPO / "config.example.yaml").read_text()
    assert "urlFile: /run/credentials/noderescue.service/webhook-url" in example
