"""Test wiring: the real ClusterRuntime (kubernetes-asyncio over HTTP, boto3 against the emulated
AWS) in-process against an emulated ``World``, with short timings."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.adapters.kube import StateStore, make_api_client, record_from_json
from noderescue.adapters.kube.record_store import RecordStore
from noderescue.config import Config, parse_config
from noderescue.core.model import HistoryEvent, Record
from noderescue.metrics import Metrics
from noderescue.runtime.cluster import ClusterRuntime, LeaderTimings, RuntimeOptions
from noderescue.runtime.executor import ExecutorTimings
from noderescue.sim.kubeapi.resources import CONFIGMAPS, CORE_EVENTS
from noderescue.sim.world import World

FAST_EXECUTOR = ExecutorTimings(
    poll_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.5, stop_grace_s=5.0, halted_retry_s=0.5
)
FAST_LEADER = LeaderTimings(lease_duration_s=1.5, renew_deadline_s=1.0, retry_period_s=0.2)
FAST_CLOUD = RetryPolicy(deadline_s=5.0, backoff_initial_s=0.02, backoff_max_s=0.2)


def world_raw_config(world: World, tweak: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The configuration the world writes, with a drain that can finish: the world's drain timeout
    (30 emulated s) equals the pods' default grace period, so pods would still be terminating."""
    raw = world.daemon_config()
    for cls in raw["nodeClasses"]:
        cls["drain"]["gracePeriod"] = "1s"
    if tweak is not None:
        tweak(raw)
    return raw


def world_config(world: World, tweak: Callable[[dict[str, Any]], None] | None = None) -> Config:
    return parse_config(yaml.safe_dump(world_raw_config(world, tweak), sort_keys=False))


@dataclass
class Running:
    runtime: ClusterRuntime
    stop: asyncio.Event
    task: asyncio.Task[None]
    metrics: Metrics

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running(
    world: World,
    *,
    dry_run: bool = False,
    config: Config | None = None,
    identity: str | None = None,
    executor: ExecutorTimings = FAST_EXECUTOR,
    prepare: Callable[[ClusterRuntime], None] | None = None,
) -> AsyncIterator[Running]:
    """Build the cluster's runtime from ``config`` (default: the world's), let ``prepare`` swap
    in recorders, run it until the block exits."""
    config = config or world_config(world)
    metrics = Metrics(CollectorRegistry())
    options = RuntimeOptions(
        dry_run=dry_run, executor=executor, leader=FAST_LEADER, cloud_retry=FAST_CLOUD, identity=identity
    )
    runtime = await ClusterRuntime.build(config, config.clusters[0], metrics=metrics, options=options)
    if prepare is not None:
        prepare(runtime)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop), name=f"runtime {identity or 'test'}")
    try:
        yield Running(runtime, stop, task, metrics)
    finally:
        stop.set()
        await task


async def eventually(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def mutating_lines(world: World) -> list[dict[str, Any]]:
    """Audit lines (mutating requests only) made by noderescue (boto3 appends our agent)."""
    return [line for line in world.audit.lines if "noderescue/" in str(line.get("userAgent", ""))]


def node_events(world: World, node: str) -> list[str]:
    """Reasons of the noderescue Events about ``node``, oldest first."""
    out = []
    for obj in world.cluster.store.objects(CORE_EVENTS, "default"):
        if (obj.get("source") or {}).get("component") != "noderescue":
            continue
        if (obj.get("involvedObject") or {}).get("name") == node:
            out.append((obj.get("firstTimestamp") or "", obj["metadata"]["name"], obj["reason"]))
    return [reason for _, _, reason in sorted(out)]


def write_unreachable_cluster_config(tmp_path: Path) -> Path:
    """A daemon config (returned) for one cluster whose API server refuses every connection."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    config = tmp_path / "noderescue.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "gone",
                        "kubeconfig": str(kubeconfig),
                        "provider": "aws",
                        "aws": {
                            "region": "eu-west-1",
                            "autoScalingGroups": ["workers"],
                            "endpointUrl": "http://127.0.0.1:9",
                        },
                    }
                ],
                "http": {"bind": "127.0.0.1:0"},
                "nodeClasses": [
                    {
                        "name": "workers",
                        "selector": {"matchLabels": {"a": "b"}},
                        "ladder": [{"action": "replace", "timeout": "5m"}],
                    }
                ],
            }
        )
    )
    return config


STATE_NAMESPACE = "noderescue"  # the default `namespace` of a cluster stanza


def stored_record(world: World, node: str) -> Record | None:
    """The remediation record of ``node`` as the record store holds it (a ConfigMap in the
    daemon's namespace), read straight from the emulator."""
    for obj in world.cluster.store.objects(CONFIGMAPS, STATE_NAMESPACE):
        labels = obj["metadata"].get("labels") or {}
        if labels.get("noderescue.io/kind") != "record":
            continue
        rec = record_from_json((obj.get("data") or {})["record"])
        if rec.node == node:
            return rec
    return None


async def seed_record(world: World, rec: Record) -> None:
    """Store ``rec`` as a daemon that died would have left it: the record in the store and the
    history event that admitted it (a record no history admits is refused as forged)."""
    api = await make_api_client(world.kubeconfig, None)
    try:
        await RecordStore(api, STATE_NAMESPACE).put(rec)
        event = HistoryEvent(rec.step_started, rec.action, rec.node, attempt_start=rec.step == 0)
        await StateStore(api, STATE_NAMESPACE).append([event], keep_after=0.0)
    finally:
        await api.close()
