"""An emulated cluster in a process of its own, so that a test can measure the memory of the
daemon's side alone: ``python -m tests.security.emulator_process DIR NODE...`` writes
``DIR/kubeconfig`` and then ``DIR/ready``, and serves until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults


async def serve(out: Path, nodes: list[str]) -> None:
    cluster = SimCluster(audit=AuditLog(None), faults=Faults(seed=7), event_window=64)
    await cluster.start()
    for index, name in enumerate(nodes):
        cluster.add_node(
            name,
            labels={"noderescue.io/class": "workers"},
            zone="eu-west-1a",
            provider_id=f"aws:///eu-west-1a/i-{index:017x}",
        )
    cluster.write_kubeconfig(out / "kubeconfig")
    (out / "ready").write_text("ready\n")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2:]))
