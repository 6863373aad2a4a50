"""Prints the crash-point table (flow x failpoint -> ok / what broke) at the end of the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.crashpoints.harness import RESULTS, kill_leftovers, render_table

REPORT_ENV = "CRASHPOINTS_REPORT"  # also write the table (and every failure's details) to this file
RUN_ENV = "CRASHPOINTS"  # 1: run the suite (about 15 minutes on 2 cores)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Opt-in until every (flow, failpoint) case is green: `CRASHPOINTS=1 pytest tests/e2e/crashpoints`.
    The table of what still breaks is in docs/crashpoints.md."""
    if os.environ.get(RUN_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"crash-point suite: set {RUN_ENV}=1 to run it")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and "test_judge" not in item.nodeid:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    table = render_table(RESULTS)
    if not table:
        return
    terminalreporter.section("crash points")
    terminalreporter.write_line(table)
    path = os.environ.get(REPORT_ENV)
    if path:
        details = [r.report() for r in RESULTS if not r.ok]
        Path(path).write_text(table + "\n\n" + "\n\n".join(details) + "\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # An interrupted run (Ctrl-C, a timeout) skips the cases' own clean-up: kill what they started.
    kill_leftovers()
