"""Crash-point enumeration: kill the daemon at every failpoint each remediation flow passes.

For each flow (``flows.FLOWS``) the baseline runs it once without a failpoint, tracing the
failpoints it passes; then one case per (failpoint, mode) arms that point with ``exit`` and either
restarts the daemon after it died (``restart``) or lets an already running standby take over
(``standby``). Every case is judged from the emulator alone (see ``harness``). Cases run
concurrently, each with its own emulator and daemons, bounded by ``CRASHPOINTS_CONCURRENCY``.

Environment:
- ``CRASHPOINTS_CONCURRENCY`` (default 4): cases at once.
- ``CRASHPOINTS_MODES`` (default ``restart,standby``).
- ``CRASHPOINTS_ONLY``: comma-separated ``flow[:failpoint[:mode]]`` patterns (fnmatch), e.g.
  ``aws-reboot:cloud.aws.reboot*:restart``; only the matching cases run.
- ``CRASHPOINTS_REPORT``: a file to write the table and every failure's details to.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from pathlib import Path

import pytest

from tests.e2e.crashpoints.flows import FLOW_BY_NAME, FLOWS, Flow
from tests.e2e.crashpoints.harness import (
    RESTART,
    RESULTS,
    STANDBY,
    CaseResult,
    crash_points,
    render_table,
    run_case,
)

pytestmark = pytest.mark.slow

CONCURRENCY = int(os.environ.get("CRASHPOINTS_CONCURRENCY", "4"))
MODES = tuple(m.strip() for m in os.environ.get("CRASHPOINTS_MODES", f"{RESTART},{STANDBY}").split(",") if m)
ONLY = tuple(p.strip() for p in os.environ.get("CRASHPOINTS_ONLY", "").split(",") if p.strip())

# Plain results, computed by the first test that needs them (each test has its own event loop).
_baselines: dict[str, CaseResult] = {}


def _selected(flow: str, point: str | None = None, mode: str | None = None) -> bool:
    if not ONLY:
        return True
    for pattern in ONLY:
        parts = pattern.split(":")
        wanted = [flow, point, mode][: len(parts)]
        pairs = zip(wanted, parts, strict=True)
        if all(value is None or fnmatch.fnmatchcase(value, part) for value, part in pairs):
            return True
    return False


async def _bounded(
    semaphore: asyncio.Semaphore, flow: Flow, point: str | None, mode: str, root: Path
) -> CaseResult:
    async with semaphore:
        label = f"{flow.name}-{(point or 'baseline').replace('/', '_')}-{mode}"
        result = await run_case(flow, point, mode, root / label)
    RESULTS.append(result)
    return result


async def _all_baselines(root: Path) -> dict[str, CaseResult]:
    """Every selected flow's baseline, run once per session, concurrently."""
    if not _baselines:
        semaphore = asyncio.Semaphore(CONCURRENCY)
        flows = [flow for flow in FLOWS if _selected(flow.name)]
        results = await asyncio.gather(*(_bounded(semaphore, f, None, RESTART, root) for f in flows))
        _baselines.update({r.flow: r for r in results})
    return _baselines


@pytest.fixture(scope="session")
def crash_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crashpoints")


@pytest.mark.parametrize("flow_name", [flow.name for flow in FLOWS])
async def test_baseline_without_a_failpoint(flow_name: str, crash_root: Path) -> None:
    if not _selected(flow_name):
        pytest.skip("not selected by CRASHPOINTS_ONLY")
    baseline = (await _all_baselines(crash_root))[flow_name]
    assert baseline.ok, baseline.report()


@pytest.mark.parametrize("flow_name", [flow.name for flow in FLOWS])
async def test_every_crash_point(flow_name: str, crash_root: Path) -> None:
    if not _selected(flow_name):
        pytest.skip("not selected by CRASHPOINTS_ONLY")
    flow = FLOW_BY_NAME[flow_name]
    baseline = (await _all_baselines(crash_root))[flow_name]
    assert baseline.ok, f"the baseline must pass before its crash points mean anything:\n{baseline.report()}"
    points = crash_points(baseline.trace, baseline.trigger_index)
    assert points, (
        f"{flow_name}: the baseline passed no failpoint (NODERESCUE_FAILPOINTS_TRACE stayed empty): "
        "nothing to kill the daemon at"
    )
    cases = [(p, m) for p in points for m in MODES if _selected(flow_name, p, m)]
    semaphore = asyncio.Semaphore(CONCURRENCY)
    results = await asyncio.gather(*(_bounded(semaphore, flow, p, m, crash_root) for p, m in cases))
    failed = [r for r in results if not r.ok]
    assert not failed, (
        f"{flow_name}: {len(failed)} of {len(results)} crash cases broke\n"
        + render_table([baseline, *results])
        + "\n\n"
        + "\n\n".join(r.report() for r in failed)
    )
