"""Which Kubernetes requests noderescue sends into its own namespace, observed on the wire.

The paths of Kubernetes requests are built at run time (from the configured namespace, node names,
uids), so unlike the cloud calls they cannot be read from the source. Instead every operation of
the code that keeps state in the daemon's namespace — the state ConfigMap (history, pause), the
record store (records, claims; every public operation), the leader Lease, and the one-shot read
of ``plan``/``status`` — is run against the emulator through a client that records each request as
the RBAC verb, API group and resource the API server would authorize.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noderescue.adapters.kube.actions import KubeAdapter
from noderescue.adapters.kube.client import KubeClient, make_api_client
from noderescue.adapters.kube.leader import LeaderElector
from noderescue.adapters.kube.record_store import RecordStore
from noderescue.adapters.kube.state import StateStore
from noderescue.core.model import Action, HistoryEvent, Pause, Phase, Record
from noderescue.runtime.oneshot import read_cluster
from noderescue.sim.cluster import SimCluster

STATE_NAMESPACE = "noderescue"


@dataclass(frozen=True, slots=True)
class KubeRequest:
    """One request as RBAC sees it."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str  # "" for the core group
    resource: str  # plural, with "/subresource" when there is one
    namespace: str | None
    name: str | None


def authorization_of(method: str, path: str, query: dict[str, str] | None) -> KubeRequest:
    """The (verb, group, resource, namespace, name) the API server authorizes for a request."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        raise AssertionError(f"not a resource path: {path}")
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    watching = (query or {}).get("watch") in {"true", "1"}
    verb = {
        "GET": "get" if name else ("watch" if watching else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    return KubeRequest(verb, group, resource, namespace, name)


def record_requests(api: KubeClient, seen: list[KubeRequest]) -> None:
    """Make ``api`` note every request it sends (all of noderescue's go through ``call_api``)."""
    real = api.call_api

    async def recording(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(authorization_of(method, resource_path, kwargs.get("query_params")))
        return await real(resource_path, method, *args, **kwargs)

    api.call_api = recording  # type: ignore[method-assign]


def _record(node: str, uid: str, phase: Phase) -> Record:
    now = time.time()
    return Record(
        node=node,
        node_uid=uid,
        cls="workers",
        step=0,
        action=Action.REPLACE,
        phase=phase,
        attempt=1,
        started=now,
        step_started=now,
        deadline=now + 600,
    )


async def _exercise(api: KubeClient, cluster: SimCluster) -> None:
    now = time.time()
    state = StateStore(api, STATE_NAMESPACE)
    await state.load()
    await state.append([HistoryEvent(now, Action.REPLACE, "workers-0", attempt_start=True)], keep_after=0.0)
    await state.set_pause(Pause(reason="check", since=now))
    await state.clear_pause()

    node = cluster.get_node("workers-0")
    assert node is not None
    uid = str(node["metadata"]["uid"])
    records = RecordStore(api, STATE_NAMESPACE)
    started = _record("workers-0", uid, Phase.STARTED)
    await records.put(started)
    await records.put(dataclasses.replace(started, phase=Phase.ACTING))
    await records.load()
    await records.get("workers-0")
    await records.claim("uid-new", "workers-9", "workers-0")
    await records.claim("uid-new", "workers-9", "workers-0")  # 409, then a read of the claim
    await records.get_claim("uid-new")
    await records.prune_claims(set(), older_than=now + 60)
    await records.delete("workers-0")

    adapter = KubeAdapter(api, state_namespace=STATE_NAMESPACE)
    await adapter.put_record(started)
    await adapter.load_records()
    await adapter.delete_record("workers-0")

    elector = LeaderElector(
        api, namespace=STATE_NAMESPACE, lease_duration_s=2.0, renew_deadline_s=1.0, retry_period_s=0.1
    )
    task = asyncio.create_task(elector.run())
    try:
        async with asyncio.timeout(10):
            await elector.leading.wait()
            await asyncio.sleep(0.3)  # a few renewals
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await elector.release()

    await read_cluster(api, cluster="check", namespace=STATE_NAMESPACE)


async def requests_into_the_state_namespace(tmp_path: Path) -> list[KubeRequest]:
    """Every request the exercise sent into ``STATE_NAMESPACE`` (and, for reference, elsewhere)."""
    seen: list[KubeRequest] = []
    cluster = SimCluster()
    await cluster.start()
    try:
        cluster.add_node("workers-0", labels={}, zone="a", provider_id="aws:///eu-west-1a/i-0")
        kubeconfig = tmp_path / "kubeconfig"
        cluster.write_kubeconfig(kubeconfig)
        api = await make_api_client(kubeconfig, None, timeout_s=5.0)
        try:
            record_requests(api, seen)
            await _exercise(api, cluster)
        finally:
            await api.close()
    finally:
        await cluster.stop()
    return seen
