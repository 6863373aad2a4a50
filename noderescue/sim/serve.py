"""``noderescue sim serve``: run a World until SIGINT/SIGTERM (DESIGN §7, §8)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path

from noderescue.sim.scenario import Scenario, ScenarioError, load_scenario
from noderescue.sim.world import World

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Resizes the scenario (for `large`): NODERESCUE_SIM_NODES=5000 noderescue sim serve ...
NODES_ENV = "NODERESCUE_SIM_NODES"
SIM_PACKAGES = ("moto", "flask", "flask_cors", "trustme")


def missing_sim_packages() -> list[str]:
    """The 'sim' extra's packages that are not installed (moto is imported only when needed)."""
    return [name for name in SIM_PACKAGES if importlib.util.find_spec(name) is None]


def serve(scenario: str, out: Path, *, time_scale: float, port: int) -> int:
    """Start the scenario's world, print where its files are, run until stopped; the exit code."""
    missing = missing_sim_packages()
    if missing:
        sys.stderr.write(
            f"noderescue sim needs the 'sim' extra ({', '.join(missing)} missing): "
            "pip install 'noderescue[sim]'\n"
        )
        return EXIT_USAGE
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        sys.stderr.write(exc.render() + "\n")
        return EXIT_USAGE
    if time_scale <= 0:
        sys.stderr.write(f"--time-scale must be positive, got {time_scale}\n")
        return EXIT_USAGE
    nodes_text = os.environ.get(NODES_ENV)
    nodes = None
    if nodes_text:
        if not nodes_text.isdigit() or int(nodes_text) < 1:
            sys.stderr.write(f"{NODES_ENV} must be a positive integer, got {nodes_text!r}\n")
            return EXIT_USAGE
        nodes = int(nodes_text)
    try:
        asyncio.run(_serve(loaded, out, time_scale=time_scale, port=port, nodes=nodes))
    except OSError as exc:  # the port is taken, the out directory is not writable, ...
        sys.stderr.write(f"noderescue sim: cannot start: {exc}\n")
        return EXIT_FAILURE
    return EXIT_OK


async def _serve(scenario: Scenario, out: Path, *, time_scale: float, port: int, nodes: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with World.start(scenario, out_dir=out, time_scale=time_scale, port=port, nodes=nodes) as world:
            what = f"{world.scenario.name} ({world.scenario.provider})"
            _say(f"noderescue sim: scenario {what}, time scale {time_scale}")
            _say(f"  Kubernetes API  {world.cluster.url}")
            if world.aws is not None:
                _say(f"  AWS endpoint    {world.aws.endpoint} (region {world.scenario.region})")
            if world.azure is not None:
                _say(f"  Azure ARM       {world.azure.endpoint} (CA bundle {world.azure.ca_bundle})")
            _say(f"  kubeconfig      {world.kubeconfig}")
            _say(f"  env             {world.env_file}  (source it: set -a; . {world.env_file}; set +a)")
            _say(f"  daemon config   {world.config_file}")
            _say(f"  audit log       {world.audit_file}")
            _say("running; stop with Ctrl-C or SIGTERM")
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _say("noderescue sim: stopped")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a supervisor or test reads these lines while the world runs
