"""``noderescue pause`` / ``resume``: the durable, cluster-wide stop switch (DESIGN §4 gate 2).

The switch lives in the ``noderescue-state`` ConfigMap of each target cluster (the kube adapter's
``StateStore`` creates it when missing), so it survives daemon restarts and is seen by every
replica. Pausing stops new remediations and escalations; in-flight steps reach their safe point.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube import KubeError, NotFound, StateStore, make_api_client
from noderescue.adapters.kube.state import MalformedState
from noderescue.config import ClusterSettings, Config
from noderescue.core.model import Pause
from noderescue.runtime.oneshot import DEFAULT_READ_TIMEOUT_S, selected_clusters
from noderescue.runtime.render import rfc3339

EXIT_OK = 0
EXIT_FAILURE = 1


@dataclass(frozen=True, slots=True)
class SwitchOutcome:
    """What a pause or resume found and left behind in one cluster."""

    cluster: str
    before: Pause | None
    after: Pause | None
    changed: bool
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"cluster {self.cluster}: {self.error}"
        if self.after is not None:
            since = rfc3339(self.after.since) or "unknown time"
            if not self.changed:
                return f"cluster {self.cluster}: already paused since {since}: {self.after.reason}"
            verb = "pause reason updated" if self.before is not None else "paused"
            return f"cluster {self.cluster}: {verb} (since {since}): {self.after.reason}"
        if self.changed:
            return (
                f"cluster {self.cluster}: resumed (was paused: {self.before.reason if self.before else ''})"
            )
        return f"cluster {self.cluster}: not paused; nothing to resume"


def default_reason() -> str:
    """Who paused, for the next operator reading ``status``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        user = "unknown"
    return f"paused by {user}@{socket.gethostname()} with noderescue pause"


async def pause_cluster(
    api: ApiClient, cluster: str, namespace: str, reason: str, *, now: float
) -> SwitchOutcome:
    """Set the pause; keeps the original ``since`` when it was paused already."""
    store = StateStore(api, namespace)
    _, before = await store.load()
    if before is not None and before.reason == reason:
        return SwitchOutcome(cluster, before, before, changed=False)
    after = Pause(reason=reason, since=before.since if before is not None and before.since else now)
    await store.set_pause(after)
    return SwitchOutcome(cluster, before, after, changed=True)


async def resume_cluster(api: ApiClient, cluster: str, namespace: str) -> SwitchOutcome:
    """Clear the pause; writes nothing when the cluster is not paused."""
    store = StateStore(api, namespace)
    _, before = await store.load()
    if before is None:
        return SwitchOutcome(cluster, None, None, changed=False)
    await store.clear_pause()
    return SwitchOutcome(cluster, before, None, changed=True)


async def _switch_one(
    settings: ClusterSettings, *, pause_reason: str | None, now: float, timeout_s: float
) -> SwitchOutcome:
    try:
        async with asyncio.timeout(timeout_s):
            api = await make_api_client(settings.kubeconfig, settings.context, timeout_s=min(10.0, timeout_s))
            try:
                if pause_reason is not None:
                    return await pause_cluster(api, settings.name, settings.namespace, pause_reason, now=now)
                return await resume_cluster(api, settings.name, settings.namespace)
            finally:
                await api.close()
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        message = f"no answer within {timeout_s:g}s"
    except NotFound as exc:
        message = (
            f"{exc} (the state ConfigMap lives in namespace {settings.namespace}, which must exist: "
            f"kubectl create namespace {settings.namespace})"
        )
    except (KubeError, MalformedState) as exc:
        message = str(exc)
    except Exception as exc:  # a broken kubeconfig or credentials: one line, per cluster
        message = f"{type(exc).__name__}: {exc}"
    return SwitchOutcome(settings.name, None, None, changed=False, error=message.splitlines()[0])


async def switch_clusters(
    clusters: Sequence[ClusterSettings],
    *,
    pause_reason: str | None,
    now: float,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> list[SwitchOutcome]:
    """Pause (``pause_reason`` given) or resume every cluster, side by side."""
    return list(
        await asyncio.gather(
            *(_switch_one(c, pause_reason=pause_reason, now=now, timeout_s=timeout_s) for c in clusters)
        )
    )


def run_switch(
    config: Config,
    *,
    cluster: str | None,
    pause_reason: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> int:
    """``noderescue pause`` (with a reason) / ``resume`` (``pause_reason=None``): 0, or 1 when a
    cluster could not be switched (the others still are)."""
    clusters = selected_clusters(config, cluster)
    outcomes = asyncio.run(
        switch_clusters(clusters, pause_reason=pause_reason, now=time.time(), timeout_s=timeout_s)
    )
    for outcome in outcomes:
        print(
            f"noderescue: {outcome.describe()}" if outcome.error else outcome.describe(),
            file=err if outcome.error else out,
        )
    return EXIT_FAILURE if any(o.error for o in outcomes) else EXIT_OK
