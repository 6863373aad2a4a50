"""One crash-point case: the emulator (``noderescue sim serve``) and the daemon as real processes.

``run_case(flow, point, mode, workdir)``:

1. starts the emulator for the flow's scenario and writes the daemon configuration (the one the
   emulator generates, changed by ``Flow.configure``);
2. starts the *armed* daemon (``NODERESCUE_FAILPOINTS="<point>=exit"``: ``os._exit(137)`` there,
   like ``kill -9``) and waits until some daemon holds the leader Lease; in ``standby`` mode it
   then starts a second, unarmed daemon and waits until it is ready;
3. breaks the flow's node (a KernelDeadlock condition, through the emulator's admin endpoint);
4. waits for the armed daemon to die; in ``restart`` mode starts an unarmed daemon in its place;
5. waits for the remediation's end (a final Event on the node), lets things settle, and judges
   it **from the emulator only** (audit log, Nodes, Events, ConfigMaps, ``noderescue status``):
   exactly the flow's destructive calls, each once; the remediation completed; no node left
   cordoned; no record left; exactly one ``RemediationSucceeded`` (Event ``count`` included).

``point=None`` is the baseline: no failpoint, one daemon, the trace of failpoints it passes is kept
(``NODERESCUE_FAILPOINTS_TRACE``) so the suite learns which points to kill at.

Every wait is bounded and says what it waited for; every process is killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from noderescue import failpoints
from tests.e2e.crashpoints.flows import STEP_TIMEOUT_S, Flow, State
from tests.e2e.daemon_process import DaemonProcess

TIME_SCALE = 10.0
NAMESPACE = "noderescue"  # the daemon's state namespace (the configuration's default)
LEADER_LEASE = "noderescue-leader"
RECORD_SELECTOR = "noderescue.io/kind=record"
FINAL_REASONS = ("RemediationSucceeded", "RemediationFailed", "NeedsHuman")
SIM_START_S = 90.0  # a cold start imports moto and boto3 on a shared 2-core machine
LEADER_WAIT_S = 45.0
STANDBY_READY_S = 45.0
# From breaking the node: detection, drain, the call, a restart and its Lease wait, verification;
# a step that cannot prove its outcome escalates at its deadline, which is inside this bound.
FINISH_WAIT_S = STEP_TIMEOUT_S + 45.0
SETTLE_S = 2.0  # after the final Event: the record's deletion, the uncordon, a late duplicate call
CLEAN_WAIT_S = 15.0  # after the final Event: how long the record and the cordon may take to go
STATUS_TIMEOUT_S = 60.0

RESTART = "restart"
STANDBY = "standby"

# Every process a case started and has not reaped: killed when the session ends however it ends
# (an interrupted run must not leave emulators and daemons behind).
_LIVE: set[asyncio.subprocess.Process] = set()


def _started(proc: asyncio.subprocess.Process) -> asyncio.subprocess.Process:
    _LIVE.add(proc)
    return proc


def kill_leftovers() -> int:
    """Kill (SIGKILL) every process still registered; how many there were."""
    killed = 0
    for proc in list(_LIVE):
        _LIVE.discard(proc)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
    return killed


atexit.register(kill_leftovers)


@dataclass
class CaseResult:
    flow: str
    point: str | None  # "name" or "name@n" (its n-th hit); None: the baseline
    mode: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts that are not failures (where it died)
    trace: list[str] = field(default_factory=list)  # baseline: failpoints passed, in order
    trigger_index: int = 0  # baseline: trace lines before the node was broken
    audit: list[dict[str, Any]] = field(default_factory=list)  # noderescue's mutating requests
    seconds: float = 0.0
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        return "ok" if self.ok else "; ".join(self.problems)

    def report(self) -> str:
        """A failure message: what broke, the noderescue audit lines seen, where the logs are."""
        lines = [f"{self.flow} x {self.point or 'baseline'} ({self.mode}): {self.verdict()}"]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  noderescue's mutating requests ({len(self.audit)}):")
        lines += [
            f"    {a.get('api')} {a.get('verb')} {a.get('resource')} {a.get('name')} -> {a.get('code')}"
            for a in self.audit
            if a.get("resource") not in ("leases", "events")
        ]
        lines.append(f"  files (emulator output, daemon logs, traces): {self.workdir}")
        return "\n".join(lines)


class Emulator:
    """``noderescue sim serve`` as a subprocess, and a small client of its Kubernetes API."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path, log: Path) -> None:
        self.proc = proc
        self.out = out
        self.log = log
        self.env = _read_env(out / "env")
        kubeconfig = yaml.safe_load((out / "kubeconfig").read_text())
        self.server = str(kubeconfig["clusters"][0]["cluster"]["server"]).rstrip("/")
        self.token = str(kubeconfig["users"][0]["user"]["token"])
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        )

    @classmethod
    async def start(cls, scenario: Path, workdir: Path) -> Emulator:
        out = workdir / "sim"
        log = workdir / "sim.log"
        with log.open("wb") as sink:
            # A file, not a pipe: nobody reads the emulator's output while the case runs, and a
            # full pipe would block it.
            proc = _started(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "noderescue", "sim", "serve", "--scenario", str(scenario),
                "--out", str(out), "--time-scale", str(TIME_SCALE),
                stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=asyncio.subprocess.STDOUT,
                env=_clean_env({"PYTHONUNBUFFERED": "1"}),
            ))  # fmt: skip
        try:
            deadline = time.monotonic() + SIM_START_S
            while not any(line.startswith("running") for line in log.read_text().splitlines()):
                if proc.returncode is not None:
                    raise AssertionError(f"sim serve exited ({proc.returncode}):\n{log.read_text()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"sim serve not running after {SIM_START_S}s:\n{log.read_text()}")
                await asyncio.sleep(0.2)
            return cls(proc, out, log)
        except BaseException:
            await _kill(proc)
            raise

    async def stop(self) -> None:
        await self._session.close()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.proc.wait()
        await _kill(self.proc)

    # ---- reads

    async def get(self, path: str, **params: str) -> Any:
        async with self._session.get(self.server + path, params=params) as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            return await resp.json()

    async def state(self) -> State:
        nodes = await self.get("/api/v1/nodes")
        return {"nodes": {n["metadata"]["name"]: n for n in nodes["items"]}}

    async def lease_holder(self) -> str | None:
        lease = await self.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEADER_LEASE}")
        if lease is None:
            return None
        return (lease.get("spec") or {}).get("holderIdentity") or None

    async def events(self, node: str) -> list[dict[str, Any]]:
        """noderescue's Events about ``node`` (core/v1, with their aggregation ``count``)."""
        events = await self.get("/api/v1/namespaces/default/events")
        return [
            e
            for e in events["items"]
            if (e.get("involvedObject") or {}).get("name") == node
            and (e.get("source") or {}).get("component") == "noderescue"
        ]

    async def records(self) -> list[str]:
        found = await self.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps", labelSelector=RECORD_SELECTOR)
        return [c["metadata"]["name"] for c in (found or {}).get("items", [])]

    def audit(self) -> list[dict[str, Any]]:
        """noderescue's mutating requests, Kubernetes and cloud (boto3 appends our agent)."""
        path = self.out / "audit.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [line for line in lines if "noderescue/" in str(line.get("userAgent", ""))]

    # ---- writes (the emulator's admin endpoint: what the world does, not what noderescue does)

    async def break_node(self, node: str) -> None:
        body = {"type": "KernelDeadlock", "status": "True", "reason": "DockerHung", "message": "crashpoints"}
        async with self._session.post(f"{self.server}/_sim/nodes/{node}/condition", json=body) as resp:
            resp.raise_for_status()


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            env[key] = shlex.split(value)[0] if value else ""
    return env


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any failpoint arming, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (failpoints.ENV_ARM, failpoints.ENV_TRACE)}
    return {**env, **extra}


async def _kill(proc: asyncio.subprocess.Process) -> None:
    _LIVE.discard(proc)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await proc.wait()


async def _wait(
    probe: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    what: Callable[[], str],
    interval_s: float = 0.4,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise CaseFailed(f"timed out after {timeout_s:.0f}s waiting for {what()}")
        await asyncio.sleep(interval_s)


class CaseFailed(Exception):
    """The case could not go on (a bounded wait ran out); the message says what was expected."""


def _trace(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Daemons:
    """The daemon processes of one case, each with its own log and failpoint trace file."""

    def __init__(self, workdir: Path, config: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.config = config
        self.env = env
        self.all: list[DaemonProcess] = []

    async def start(self, name: str, arm: str | None = None) -> DaemonProcess:
        env = {**self.env, failpoints.ENV_TRACE: str(self.trace_file(name))}
        if arm is not None:
            env[failpoints.ENV_ARM] = arm
        # DaemonProcess merges os.environ: the test process arms nothing (``_clean_env``).
        proc = await DaemonProcess.start(self.config, env, name=name)
        _started(proc.proc)
        self.all.append(proc)
        return proc

    def trace_file(self, name: str) -> Path:
        return self.workdir / f"trace-{name}.txt"

    async def stop_all(self) -> None:
        for proc in self.all:
            with contextlib.suppress(Exception):
                await proc.stop(timeout_s=5.0)
            await _kill(proc.proc)
            (self.workdir / f"daemon-{proc.name}.log").write_bytes(b"".join(proc.raw))


async def run_case(flow: Flow, point: str | None, mode: str, workdir: Path) -> CaseResult:
    """Run one (flow, failpoint, mode) case; never raises for what the daemon did wrong."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    result = CaseResult(flow.name, point, mode, workdir=str(workdir))
    started = time.monotonic()
    emulator: Emulator | None = None
    daemons: Daemons | None = None
    try:
        emulator = await Emulator.start(flow.scenario_path, workdir)
        raw = yaml.safe_load((emulator.out / "noderescue.yaml").read_text())
        config = workdir / "noderescue.yaml"
        config.write_text(yaml.safe_dump(flow.configure(raw), sort_keys=False))
        daemons = Daemons(workdir, config, emulator.env)
        await _drive(flow, point, mode, emulator, daemons, result)
    except CaseFailed as exc:
        result.problems.append(str(exc))
    except Exception as exc:  # the harness itself broke: say so in the table, do not hide it
        result.problems.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        if daemons is not None:
            await daemons.stop_all()
        if emulator is not None:
            result.audit = emulator.audit()
            await emulator.stop()
        result.seconds = time.monotonic() - started
    return result


async def _drive(
    flow: Flow, point: str | None, mode: str, emulator: Emulator, daemons: Daemons, result: CaseResult
) -> None:
    name, _, nth = (point or "").partition("@")
    first = await daemons.start("first", arm=None if point is None else f"{name}=exit@{nth or 1}")

    async def leader_or_dead() -> bool:
        return first.proc.returncode is not None or await emulator.lease_holder() is not None

    await _wait(leader_or_dead, timeout_s=LEADER_WAIT_S, what=lambda: f"a leader Lease\n{first.tail(10)}")
    standby: DaemonProcess | None = None
    if mode == STANDBY:
        standby = await daemons.start("standby")

        async def standby_ready() -> bool:
            if standby.proc.returncode is not None:
                raise CaseFailed(f"the standby exited ({standby.proc.returncode}):\n{standby.tail(10)}")
            if not standby.logged("daemon_started"):
                return False
            status, _ = await standby.get("/readyz")
            return status == 200

        await _wait(standby_ready, timeout_s=STANDBY_READY_S, what=lambda: "the standby to be ready")
    before = await emulator.state()
    if flow.node not in before["nodes"]:
        raise CaseFailed(f"{flow.node} is not in the emulated cluster: {sorted(before['nodes'])}")
    trigger_index = len(_trace(daemons.trace_file("first")))
    await emulator.break_node(flow.node)

    async def final_events() -> list[dict[str, Any]]:
        return [e for e in await emulator.events(flow.node) if e.get("reason") in FINAL_REASONS]

    if point is not None:

        async def died_or_finished() -> bool:
            return first.proc.returncode is not None or bool(await final_events())

        await _wait(
            died_or_finished,
            timeout_s=FINISH_WAIT_S,
            what=lambda: f"the armed daemon to die at {point} or the remediation to end",
        )
        trace = _trace(daemons.trace_file("first"))
        if first.proc.returncode is None:
            result.problems.append(f"{point} not reached: the remediation ended without the crash")
        else:
            code = first.proc.returncode
            if code != -signal.SIGKILL and code != failpoints.EXIT_CODE:
                result.problems.append(f"the armed daemon exited {code}, not at the failpoint")
            elif not trace or trace[-1] != name:
                result.problems.append(f"the armed daemon died after {trace[-1:]}, not at {name}")
            elif len(trace) <= trigger_index:
                result.notes.append(f"died at {point} before the node was broken (start-up)")
            else:
                result.notes.append(f"died at {point}, failpoint {len(trace) - trigger_index} of the flow")
            if mode == RESTART:
                await daemons.start("restarted")
    else:
        result.trace = []  # filled below from the whole run

    async def finished() -> bool:
        return bool(await final_events())

    try:
        await _wait(
            finished,
            timeout_s=FINISH_WAIT_S,
            what=lambda: f"the end (a {'/'.join(FINAL_REASONS)} Event on {flow.node})",
        )
    except CaseFailed as exc:
        # Never ended: still say what else is wrong (a second call, a cordon or a record left).
        result.problems.append(str(exc))
    else:

        async def clean() -> bool:
            state = await emulator.state()
            return not await emulator.records() and not _cordoned(state)

        # Bounded, not asserted: a record or a cordon that stays is reported below.
        with contextlib.suppress(CaseFailed):
            await _wait(clean, timeout_s=CLEAN_WAIT_S, what=lambda: "the record and our cordon to go")
        await asyncio.sleep(SETTLE_S)
    after = await emulator.state()
    result.problems += await _judge(flow, emulator, before, after)
    if point is None:
        # The record store seen through the product's own reader, once per flow (a process
        # start per case would cost the suite minutes of CPU): it must agree the store is empty.
        result.problems += await _status_records(daemons.config, emulator.env)
    if point is None:
        result.trace = _trace(daemons.trace_file("first"))
        result.trigger_index = trigger_index


def _cordoned(state: State) -> list[str]:
    return sorted(n for n, obj in state["nodes"].items() if (obj.get("spec") or {}).get("unschedulable"))


async def _judge(flow: Flow, emulator: Emulator, before: State, after: State) -> list[str]:
    events = await emulator.events(flow.node)
    return judge(flow, emulator.audit(), events, await emulator.records(), before, after)


def judge(
    flow: Flow,
    audit: list[dict[str, Any]],
    events: list[dict[str, Any]],
    records: list[str],
    before: State,
    after: State,
) -> list[str]:
    """What is wrong with the end of a case, from what the emulator shows (empty: nothing)."""
    problems: list[str] = []
    calls = Counter(
        str(a["verb"]) for a in audit if a.get("api") == flow.cloud and a.get("verb") in flow.destructive
    )
    if calls != Counter(flow.calls):
        problems.append(f"destructive calls {dict(calls)}, want {flow.calls}")
    told = Counter[str]()
    for event in events:
        # An aggregated Event (the same reason and message again) is one object with count > 1.
        told[str(event.get("reason"))] += int(event.get("count") or 1)
    if told["RemediationSucceeded"] != 1:
        problems.append(f"RemediationSucceeded told {told['RemediationSucceeded']} times, want 1")
    for reason in ("RemediationFailed", "NeedsHuman"):
        if told[reason]:
            problems.append(f"{reason} told {told[reason]} times")
    problems += flow.outcome(flow.node, before, after)
    cordoned = _cordoned(after)
    if cordoned:
        problems.append(f"left cordoned: {cordoned}")
    if records:
        problems.append(f"records left: {records}")
    return problems


async def _status_records(config: Path, env: dict[str, str]) -> list[str]:
    """``noderescue status -o json``: no remediation record left in flight."""
    proc = _started(await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noderescue", "status", "--config", str(config), "-o", "json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_clean_env(env),
    ))  # fmt: skip
    try:
        async with asyncio.timeout(STATUS_TIMEOUT_S):
            out, err = await proc.communicate()
        _LIVE.discard(proc)
    except TimeoutError:
        await _kill(proc)
        return [f"noderescue status did not answer in {STATUS_TIMEOUT_S:.0f}s"]
    if proc.returncode != 0:
        return [f"noderescue status exited {proc.returncode}: {err.decode()[-300:]}"]
    document = json.loads(out)
    left = [
        f"{r['node']} {r['action']} {r['phase']}"
        for cluster in _status_clusters(document)
        for r in cluster.get("remediations") or []
    ]
    return [f"noderescue status shows records: {left}"] if left else []


def _status_clusters(document: Any) -> list[dict[str, Any]]:
    clusters = document.get("clusters") if isinstance(document, dict) else None
    return [c for c in clusters or [] if isinstance(c, dict)]


# ------------------------------------------------------------------------------------------------
# Enumeration and the table
# ------------------------------------------------------------------------------------------------


def crash_points(trace: list[str], trigger_index: int) -> list[str]:
    """The cases a baseline trace asks for, in the order the flow passes them.

    Every distinct failpoint, at its first hit. A point first hit before the node was broken
    (start-up: the Lease, the state ConfigMap) and hit again during the remediation gets a second
    case at its first hit of the remediation (``name@n``, n counted in the baseline run; timing
    may shift it, and the case notes where the daemon really died).
    """
    points: list[str] = []
    for index, name in enumerate(trace):
        if name not in points and "@" not in name:
            points.append(name)
        if index >= trigger_index:
            earlier = trace[:trigger_index].count(name)
            variant = f"{name}@{earlier + 1}"
            if earlier and variant not in points:
                points.append(variant)
    return points


# Every case of the session, for the table printed at its end (tests/e2e/crashpoints/conftest.py).
RESULTS: list[CaseResult] = []


def render_table(results: list[CaseResult], width: int = 150) -> str:
    """flow x failpoint -> ok / what broke, one column per mode."""
    if not results:
        return ""
    modes = sorted({r.mode for r in results if r.point is not None}) or [RESTART]
    rows: dict[tuple[str, str], dict[str, CaseResult]] = {}
    for result in results:
        key = (result.flow, result.point or "(baseline: no failpoint)")
        rows.setdefault(key, {})[RESTART if result.point is None else result.mode] = result
    point_width = min(48, max(len(point) for _, point in rows))
    flow_width = max(len(flow) for flow, _ in rows)
    cell = max(8, (width - flow_width - point_width - 4) // len(modes))
    lines = [
        f"{'flow':<{flow_width}} {'failpoint':<{point_width}} " + " ".join(f"{m:<{cell}}" for m in modes)
    ]
    for (flow, point), by_mode in rows.items():
        cells = []
        for mode in modes:
            found = by_mode.get(mode)
            text = "-" if found is None else found.verdict()
            cells.append(f"{text[: cell - 1]:<{cell}}")
        lines.append(f"{flow:<{flow_width}} {point[:point_width]:<{point_width}} " + " ".join(cells))
    ok = sum(1 for r in results if r.ok)
    crashes = [r for r in results if r.point is not None]
    lines.append(
        f"{ok}/{len(results)} cases ok; {len(crashes)} (flow, failpoint, mode) crash cases, "
        f"{len({(r.flow, r.point) for r in crashes})} (flow, failpoint) pairs"
    )
    return "\n".join(lines)
