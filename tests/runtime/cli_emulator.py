"""The emulated cluster the command-line tests share: fixtures, a populated cluster, a
configuration for it and a runner for `python -m noderescue` as a real process.

Test modules take the fixtures with ``from tests.runtime.cli_emulator import *`` (pytest finds
fixtures by name in the module's namespace) and import the helpers by name.

``populate`` builds: class ``workers`` (replace) of nine nodes and class ``gpu`` (reboot) of
three, plus an unmatched ``infra-0``: 13 nodes, 12 in a class, 5 of them unhealthy or pending
(pending nodes count, as in Cluster API; the cluster-wide maxUnhealthy 50% allows 6, so only class
gpu short-circuits: 2 of 3 where 50% allows 1).

- workers-1: KernelDeadlock           -> start replace
- workers-4: ReadonlyFilesystem       -> pending (its rule waits 1h)
- workers-5: KernelDeadlock           -> (excluded by tests that label it)
- gpu-0, gpu-1: KernelDeadlock        -> 2 of 3 gpu nodes: class gpu short-circuits
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.core.model import EXCLUDE_LABEL
from noderescue.sim.audit import AuditLog
from noderescue.sim.cluster import SimCluster
from noderescue.sim.kubeapi.resources import NODES

__all__ = ["api", "audit", "config_file", "kubeconfig", "populated", "sim"]

CLASS_LABEL = "noderescue.io/class"
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
CLI_TIMEOUT_S = 60.0

CONFIG_TEMPLATE = """\
clusters:
{clusters}
safety:
  maxUnhealthy: 50%
  maxUnhealthyPerZone: 100%
  maxConcurrent: 2
  staleAfter: 60s
  rateLimits:
    - {{action: replace, max: 3, per: 1h}}
    - {{action: reboot, max: 5, per: 1h}}
nodeClasses:
  - name: workers
    selector: {{matchLabels: {{noderescue.io/class: workers}}}}
    rules:
      - {{type: Ready, status: [False, Unknown], for: 5m}}
      - {{type: KernelDeadlock, status: [True], for: 0s}}
      - {{type: ReadonlyFilesystem, status: [True], for: 1h}}
    ladder: [{{action: replace, timeout: 10m}}]
    maxUnavailable: 2
  - name: gpu
    selector: {{matchLabels: {{noderescue.io/class: gpu}}}}
    rules:
      - {{type: KernelDeadlock, status: [True], for: 0s}}
    ladder: [{{action: reboot, timeout: 15m}}, notify]
"""

CLUSTER_TEMPLATE = """\
  - name: {name}
    kubeconfig: {kubeconfig}
    provider: aws
    aws: {{region: eu-west-1, autoScalingGroups: [workers, gpu]}}
"""


def write_config(path: Path, clusters: dict[str, Path]) -> Path:
    """A configuration for ``clusters`` (name -> kubeconfig) with the classes above."""
    blocks = "".join(CLUSTER_TEMPLATE.format(name=n, kubeconfig=k) for n, k in clusters.items())
    path.write_text(CONFIG_TEMPLATE.format(clusters=blocks.rstrip("\n")))
    return path


def add_nodes(cluster: SimCluster, cls: str, count: int, **extra_labels: str) -> None:
    for i in range(count):
        zone = ZONES[i % len(ZONES)]
        cluster.add_node(
            f"{cls}-{i}",
            labels={CLASS_LABEL: cls, **extra_labels},
            zone=zone,
            provider_id=f"aws:///{zone}/i-{cls}{i:04d}",
        )


def populate(cluster: SimCluster) -> None:
    add_nodes(cluster, "workers", 9)
    add_nodes(cluster, "gpu", 3)
    cluster.add_node("infra-0", labels={}, zone=ZONES[0], provider_id="aws:///eu-west-1a/i-infra0")
    cluster.set_condition("workers-1", "KernelDeadlock", "True", "DockerHung", "task docker:7 blocked")
    cluster.set_condition("workers-4", "ReadonlyFilesystem", "True", "FilesystemIsReadOnly")
    cluster.set_condition("workers-5", "KernelDeadlock", "True", "DockerHung")
    cluster.set_condition("gpu-0", "KernelDeadlock", "True", "DockerHung")
    cluster.set_condition("gpu-1", "KernelDeadlock", "True", "DockerHung")


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog(None)


@pytest.fixture
async def sim(audit: AuditLog) -> AsyncIterator[SimCluster]:
    cluster = SimCluster(audit=audit)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
def kubeconfig(sim: SimCluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    sim.write_kubeconfig(path)
    return path


@pytest.fixture
def config_file(kubeconfig: Path, tmp_path: Path) -> Path:
    return write_config(tmp_path / "noderescue.yaml", {"emu": kubeconfig})


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await make_api_client(kubeconfig, None, timeout_s=5.0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def populated(sim: SimCluster) -> Iterator[SimCluster]:
    populate(sim)
    yield sim


async def run_cli(*args: str, timeout_s: float = CLI_TIMEOUT_S) -> tuple[int, str, str]:
    """``python -m noderescue ARGS`` as a real process; the emulator keeps serving from this loop
    meanwhile (a blocking subprocess.run would deadlock it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "noderescue",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def our_writes(audit: AuditLog) -> list[dict[str, Any]]:
    return [line for line in audit.lines if str(line["userAgent"]).startswith("noderescue/")]


def by_name(items: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def label_excluded(cluster: SimCluster, node: str) -> None:
    """Label a node noderescue.io/exclude=true in the emulator's store (not through the API, so
    the audit log stays free of writes the test made)."""

    def change(obj: dict[str, Any]) -> bool:
        obj["metadata"].setdefault("labels", {})[EXCLUDE_LABEL] = "true"
        return True

    assert cluster.store.mutate(NODES, "", node, change) is not None
