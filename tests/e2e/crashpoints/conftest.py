"""Prints the crash-point table (flow x failpoint -> ok / what broke) at the end of the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.crashpoints.harness import RESULTS, kill_leftovers, render_table

REPORT_ENV = "CRASHPOINTS_REPORT"  # also write the table (and every failure's details) to this file


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
