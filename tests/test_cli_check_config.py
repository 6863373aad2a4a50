"""`noderescue check-config FILE` as an operator runs it: a real subprocess, exit codes, output."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
# <linux/prctl.h>, <linux/capability.h>
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def check_config(path: Path, *flags: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noderescue", "check-config", *flags, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def test_example_is_ok_with_a_line_per_cluster_and_class() -> None:
    result = check_config(EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "cluster prod-eu1",
        "cluster prod-we1",
        "control-plane",
        "gpu-pets",
        "workers",
    ]
    assert result.stderr == ""


THREE_MISTAKES = """\
clusters:
  - name: prod
    provider: aws
    aws: {region: eu-west-1, autoScalingGroups: [w]}
safety:
  maxUnhealthy: 140%
nodeClasses:
  - name: workers
    selector: {matchLabels: {noderescue.io/class: workers}}
    ladder:
      - {action: replace, timeout: 5 minutes}
    drain: {timeout: 5m, onTimeot: proceed}
"""


def test_three_mistakes_exit_2_with_three_messages(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(THREE_MISTAKES)
    result = check_config(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "safety.maxUnhealthy (line 6): percentage 140% is over 100%",
        "nodeClasses[0].ladder[0].timeout (line 11): invalid duration '5 minutes' "
        "(use a number with a unit, e.g. 90s, 5m, 1h30m, 2h or 1d)",
        "nodeClasses[0].drain.onTimeot (line 12): unknown key 'onTimeot' (did you mean 'onTimeout'?)",
        f"3 errors in {path}",
    ]


def assert_one_line_failure(result: subprocess.CompletedProcess[str], path: Path, message: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{path}: {message}"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"a: [1,\n",
            "invalid YAML at line 2, column 1: while parsing a flow node; expected the node "
            "content, but found '<stream end>'",
            id="invalid-yaml",
        ),
        pytest.param(b"", "the file is empty (no configuration in it)", id="empty"),
        pytest.param(
            b"\xff\xd8\xff\xe0garbage",
            "not UTF-8 text (undecodable byte at offset 0); is this a configuration file?",
            id="binary",
        ),
    ],
)
def test_unusable_file_is_one_line_exit_2(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert_one_line_failure(check_config(path), path, message)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert_one_line_failure(check_config(path), path, "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_failure(check_config(tmp_path), tmp_path, "is a directory, not a configuration file")


@pytest.fixture
def unreadable_file() -> Iterator[Path]:
    # A world-traversable directory, so that only the file's own mode keeps a reader out.
    directory = Path(tempfile.mkdtemp(prefix="noderescue-unreadable-"))
    directory.chmod(0o755)
    path = directory / "secret.yaml"
    path.write_bytes(EXAMPLE.read_bytes())
    path.chmod(0o000)
    yield path
    shutil.rmtree(directory)


def _drop_file_permission_bypass() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so that even root is refused by a file's mode (tests run as root here)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file(unreadable_file: Path) -> None:
    if os.geteuid() != 0:
        result = check_config(unreadable_file)
    else:
        try:
            result = check_config(unreadable_file, preexec_fn=_drop_file_permission_bypass)
        except subprocess.SubprocessError as exc:  # no CAP_SETPCAP in this container
            pytest.skip(f"cannot make the file unreadable for root: {exc}")
    assert_one_line_failure(result, unreadable_file, "permission denied")


INLINE_SECRET = """\
clusters:
  - name: prod
    provider: none
notifications:
  - type: webhook
    url: https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX
nodeClasses:
  - name: workers
    selector: {}
    ladder: [notify]
"""
WARNING = (
    "notifications[0].url (line 6): the webhook URL is written inline (webhook URLs carry their "
    "secret): use urlFile (a mounted Secret, a systemd credential) or urlEnv"
)


def test_an_inline_secret_is_a_warning_with_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "inline.yaml"
    path.write_text(INLINE_SECRET)
    result = check_config(path)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "ok"
    assert result.stderr.splitlines() == [f"warning: {WARNING}"]
    assert "XXXXXXXX" not in result.stdout + result.stderr


def test_an_inline_secret_is_an_error_under_strict(tmp_path: Path) -> None:
    path = tmp_path / "inline.yaml"
    path.write_text(INLINE_SECRET)
    result = check_config(path, "--strict")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [WARNING, f"1 error in {path} (--strict: warnings are errors)"]


def test_the_example_passes_strict() -> None:
    result = check_config(EXAMPLE, "--strict")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_an_invalid_secret_url_is_not_printed(tmp_path: Path) -> None:
    path = tmp_path / "bad-url.yaml"
    path.write_text(INLINE_SECRET.replace("https://hooks.slack.com", "hooks.slack.com"))
    result = check_config(path)
    assert result.returncode == 2
    assert "notifications[0].url (line 6): invalid URL 'hooks.slack.com/…'" in result.stderr
    assert "XXXXXXXX" not in result.stderr


def _run_once(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    return subprocess.run(
        [sys.executable, "-m", "noderescue", "run", "--once", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_the_daemon_refuses_to_start_without_its_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(re.sub(r"url: \S+", "urlFile: missing-url", INLINE_SECRET))
    result = _run_once(path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "notifications[0].urlFile" in output and "no such file" in output
    assert "Traceback" not in output


def test_the_daemon_refuses_to_start_when_it_cannot_review_tokens(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(INLINE_SECRET.replace("clusters:", "http: {auth: kubernetes}\nclusters:", 1))
    result = _run_once(path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "http.auth kubernetes" in output and "Traceback" not in output
    assert "XXXXXXXX" not in output


FOOT_GUNS = """\
clusters:
  - name: prod
    provider: aws
    aws: {region: eu-west-1, autoScalingGroups: [w]}
safety:
  maxUnhealthy: 10%
  staleAfter: 100000h
  rateLimits:
    - {action: replace, max: 3, per: 1h}
    - {action: replace, max: 1, per: 10m}
nodeClasses:
  - name: workers
    selector: {matchLabels: {noderescue.io/class: workers}}
    rules:
      - {type: Ready, status: [True], for: 5m}
    ladder:
      - {action: replace, timeout: 1000d}
"""


def check_config_args(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noderescue", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


FOOT_GUN_MESSAGES = [
    "safety.maxUnhealthy (line 6): maxUnhealthy 10% rounds down: a class (or cluster) of fewer than 10 "
    "nodes may have 0 unhealthy nodes, so one unhealthy node trips the short-circuit and none of its nodes "
    "is ever remediated; if a class can be that small, give a count (e.g. maxUnhealthy: 1)",
    "safety.staleAfter (line 7): staleAfter 4166d16h: noderescue would act on a view that old (an API "
    "outage or a frozen watch goes unnoticed as long); a few minutes at most is usual",
    "safety.rateLimits[1].action (line 10): a second rate limit for replace (also safety.rateLimits[0]): "
    "both apply and the stricter one decides; write one",
    "nodeClasses[0].rules[0].status (line 15): a Ready rule that matches status True matches every "
    "healthy node: all of them would be remediated (unhealthy is Ready False or Unknown)",
    "nodeClasses[0].ladder[0].timeout (line 17): timeout 1000d: a failed step would hold its node "
    "(cordoned) that long before escalating; more than a day is almost surely a unit mistake",
]


def test_foot_guns_are_warnings_with_their_paths_and_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "guns.yaml"
    path.write_text(FOOT_GUNS)
    result = check_config_args(str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "ok"
    trust = "selects nodes only by labels a kubelet may set"  # tested with the trust checks
    lines = [line for line in result.stderr.splitlines() if trust not in line]
    assert lines == [f"warning: {m}" for m in FOOT_GUN_MESSAGES]


def test_strict_makes_the_warnings_errors(tmp_path: Path) -> None:
    path = tmp_path / "guns.yaml"
    path.write_text(FOOT_GUNS)
    result = check_config_args("--strict", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        *FOOT_GUN_MESSAGES,
        f"5 errors in {path} (--strict: warnings are errors)",
    ]


def test_strict_passes_a_config_without_foot_guns(tmp_path: Path) -> None:
    path = tmp_path / "fine.yaml"
    path.write_text(
        THREE_MISTAKES.replace("140%", "1").replace("5 minutes", "5m").replace("onTimeot", "onTimeout")
    )
    result = check_config_args("--strict", str(path))
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr
