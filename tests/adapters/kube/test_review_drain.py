"""Drain: API throttling (429 with Retry-After) is not a PodDisruptionBudget refusal (review)."""

from __future__ import annotations

import time

import pytest

from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.cordon import cordon
from noderescue.adapters.kube.drain import DrainProgress, drain_node
from noderescue.core.model import DrainPolicy
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults


@pytest.fixture
def time_scale() -> float:
    return 10.0  # replacement pods start within a fraction of a second


async def test_throttled_evictions_are_retried_and_never_reported_as_pdb_blocked(
    sim: SimCluster, api: KubeClient, faults: Faults
) -> None:
    # A PDB selects the pods but allows every disruption: each 429 here is the API server's own
    # throttling (it carries Retry-After). Taking one for a PDB refusal would show the drain as
    # "blocked" and send an SRE hunting for a budget that blocks nothing.
    for name, zone in (("target", "a"), ("spare", "b")):
        sim.add_node(name, labels={}, zone=zone, provider_id=f"aws:///eu-west-1{zone}/{name}")
    sim.add_workload("web", replicas=4, pdb_max_unavailable=4)
    assert await cordon(api, "target")
    progress: list[DrainProgress] = []
    faults.retry_after_s = 0
    faults.set_api_errors(0.3, (429,))
    try:
        outcome = await drain_node(
            api,
            "target",
            DrainPolicy(grace_period_s=0),
            deadline=time.time() + 10,
            on_progress=progress.append,
            poll_interval_s=0.05,
        )
    finally:
        faults.clear()
    assert outcome.ok, outcome
    assert outcome.blocking_pdbs == ()
    assert progress and max(p.blocked for p in progress) == 0, progress
