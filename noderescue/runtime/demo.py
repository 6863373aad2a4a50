"""``noderescue demo``: the newcomer's first run (issue 6 item 9).

Starts the emulated world of a built-in scenario in this process, runs the real daemon against it
as a separate process (``python -m noderescue run --config <dir>/noderescue.yaml`` with the
world's environment), turns the daemon's JSON log lines into a live timeline and prints a summary
table once every remediation it started has ended. Time runs ``DEMO_TIME_SCALE`` times faster
than real, so the whole story takes seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import yaml

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEMO_TIME_SCALE = 5.0
DEMO_TIMEOUT_S = 80.0
QUIET_AFTER_S = 2.0  # the story is over this long after the last remediation ended
# Emulated seconds from a fault to its detection, at most (a stopped kubelet: the node Lease
# turns stale after 30 s in the world's configuration).
DETECTION_EMULATED_S = 40.0

# Node Events worth a timeline line, with how to say them.
_EVENT_WORDS = {
    "Cordoned": "cordoned",
    "DrainStarted": "drain started",
    "DrainSucceeded": "drained",
    "DrainTimedOut": "drain did not finish",
    "RepairCommandSent": "repair command sent",
    "RebootIssued": "reboot issued",
    "ReplacementRequested": "replacement requested",
    "ReplacementJoined": "replacement joined",
    "RebootVerified": "reboot verified",
    "Uncordoned": "uncordoned",
    "Escalated": "escalated",
    "NeedsHuman": "NEEDS A HUMAN",
}


@dataclass
class Remediation:
    node: str
    cls: str
    actions: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float | None = None
    result: str = "in flight"
    detail: str = ""


@dataclass
class Timeline:
    """Reads the daemon's JSON log lines, prints the story, keeps the summary."""

    out: TextIO
    t0: float = field(default_factory=time.monotonic)
    remediations: dict[str, Remediation] = field(default_factory=dict)
    last_end: float | None = None
    daemon_port: int | None = None
    _drain_said: dict[str, int] = field(default_factory=dict)

    def say(self, text: str) -> None:
        self.out.write(f"  {time.monotonic() - self.t0:6.1f}s  {text}\n")
        self.out.flush()

    # The story cannot be over before the scenario's last fault had time to be detected.
    not_before: float = 0.0

    @property
    def settled(self) -> bool:
        return (
            time.monotonic() - self.t0 >= self.not_before
            and bool(self.remediations)
            and all(r.ended is not None for r in self.remediations.values())
            and self.last_end is not None
            and time.monotonic() - self.last_end >= QUIET_AFTER_S
        )

    def feed(self, raw: bytes) -> None:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(line, dict):
            self.line(line)

    def line(self, line: dict[str, Any]) -> None:
        event = line.get("event")
        node = str(line.get("node") or "")
        if event == "daemon_started":
            self.daemon_port = line.get("http_port")
            self.say(f"daemon up, watching {', '.join(line.get('clusters') or [])}")
        elif event == "cluster_synced":
            self.say(f"cluster {line.get('cluster')} synced: {line.get('nodes')} nodes")
        elif event == "leader_acquired":
            self.say("took the leader Lease")
        elif event == "gate_tripped":
            self.say(f"gate {line.get('gate')} tripped for {line.get('scope')}: {line.get('reason')}")
        elif event == "decision":
            self.decision(line, node)
        elif event == "drain_progress":
            remaining = int(line.get("remaining") or 0)
            if self._drain_said.get(node) != remaining:
                self._drain_said[node] = remaining
                self.say(f"{node}: draining, {remaining} of {line.get('total')} pods left")
        elif event == "node_event" and line.get("reason") in _EVENT_WORDS:
            self.say(f"{node}: {_EVENT_WORDS[line['reason']]} - {line.get('message', '')}")
            if line.get("reason") == "NeedsHuman":
                self.end(node, "needs a human", str(line.get("message") or ""))
        elif event == "remediation_finished":
            self.end(node, str(line.get("result")), str(line.get("reason") or ""))
            self.say(f"{node}: remediation {line.get('result')} ({line.get('reason')})")

    def decision(self, line: dict[str, Any], node: str) -> None:
        kind = line.get("decision")
        action = str(line.get("action") or "")
        if kind == "start":
            self.remediations[node] = Remediation(node, str(line.get("class")), [action], time.monotonic())
            self.say(f"{node}: detected unhealthy ({line.get('reason')}) -> {action}")
        elif kind == "escalate":
            rem = self.remediations.get(node)
            if rem is not None:
                rem.actions.append(action)
            self.say(f"{node}: {line.get('reason')}")
        elif kind == "skip":
            self.say(f"{node}: held back by gate {line.get('gate')}: {line.get('reason')}")

    def end(self, node: str, result: str, detail: str) -> None:
        rem = self.remediations.get(node)
        if rem is None or rem.ended is not None:
            return
        rem.ended = time.monotonic()
        rem.result = result
        rem.detail = detail
        self.last_end = rem.ended

    def summary(self) -> str:
        rows = [("node", "class", "actions", "result", "took")]
        for rem in self.remediations.values():
            took = f"{(rem.ended or time.monotonic()) - rem.started:.1f}s"
            rows.append((rem.node, rem.cls, " -> ".join(rem.actions), rem.result, took))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)


def demo_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The world's daemon configuration, adjusted so the demo's story can finish quickly:
    pods get a 1 s grace period (the default 30 s equals the world's drain timeout), pets proceed
    to the reboot when their NotReady node's pods cannot terminate, and small pet classes are not
    short-circuited by a 40 % maxUnhealthy (rounded down, 40 % of 2 is 0)."""
    raw["safety"]["maxUnhealthy"] = "50%"
    raw["safety"]["maxUnhealthyPerZone"] = "100%"
    for cls in raw["nodeClasses"]:
        cls["drain"]["gracePeriod"] = "1s"
        if cls["ladder"][0]["action"] == "repair":
            cls["drain"]["onTimeout"] = "proceed"
    return raw


async def run_demo(
    scenario: str,
    *,
    out: TextIO,
    out_dir: Path,
    time_scale: float = DEMO_TIME_SCALE,
    timeout_s: float = DEMO_TIMEOUT_S,
) -> int:
    from noderescue.sim.world import World

    async with World.start(scenario, out_dir=out_dir, time_scale=time_scale) as world:
        config_path = out_dir / "demo-noderescue.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(world.daemon_config()), sort_keys=False))
        out.write(f"noderescue demo: scenario {world.scenario.name} ({world.scenario.provider}), ")
        out.write(f"{len(world.cluster.node_names())} nodes, time x{time_scale:g}\n")
        if world.scenario.description:
            out.write(f"  {world.scenario.description}\n")
        out.write(f"  files in {out_dir} (audit log: {world.audit_file})\n\n")
        last_fault = max((event.at for event in world.scenario.events), default=0.0)
        timeline = Timeline(out, not_before=(last_fault + DETECTION_EMULATED_S) / time_scale)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "noderescue",
            "run",
            "--config",
            str(config_path),
            env={**os.environ, **world.env()},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        reader = asyncio.create_task(
            _read_logs(proc, timeline, out_dir / "daemon.log"), name="demo-log-reader"
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not timeline.settled and proc.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await proc.wait()  # the daemon dying ends the demo early
        finally:
            code = await _stop_daemon(proc)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        out.write("\n" + timeline.summary() + "\n\n")
        if not timeline.settled:
            out.write("noderescue demo: the story did not finish in time; see daemon.log\n")
            return EXIT_FAILURE
        failed = [r for r in timeline.remediations.values() if r.result not in ("succeeded", "recovered")]
        out.write(f"daemon exited with {code}. Try: noderescue sim serve --scenario {scenario} --out DIR\n")
        return EXIT_FAILURE if failed or code != 0 else EXIT_OK


async def _read_logs(proc: asyncio.subprocess.Process, timeline: Timeline, log_file: Path) -> None:
    assert proc.stderr is not None
    with log_file.open("ab") as sink:
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            sink.write(raw)
            timeline.feed(raw)


async def _stop_daemon(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(35):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        # What the 'sim' extra brings (moto's server runs on flask); imported lazily by the sim.
        import flask  # noqa: F401
        import flask_cors  # noqa: F401
        import moto  # noqa: F401
        import trustme  # noqa: F401

        from noderescue.sim import world  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(
            f"noderescue demo needs the 'sim' extra ({exc.name} is missing): pip install 'noderescue[sim]'\n"
        )
        return EXIT_USAGE
    from noderescue.runtime.logs import configure_logging

    configure_logging(level="warning")  # the world's own logs would drown the timeline
    with tempfile.TemporaryDirectory(prefix="noderescue-demo-") as tmp:
        return asyncio.run(run_demo(args.scenario, out=sys.stdout, out_dir=Path(tmp)))
