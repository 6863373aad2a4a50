"""Everything that runs for one cluster, wired from its settings: client, watch cache, leader
election, the Kubernetes and cloud hands (real or dry-run recorders), executor and reconciler.

``ClusterRuntime.build(...)`` then ``await runtime.run(stop)``: runs until ``stop`` is set, then
stops starting steps, gives running steps their grace period, releases the leader Lease (so a
standby takes over at once) and closes its clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from kubernetes_asyncio.client import ApiClient

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

from noderescue.adapters.cloud.factory import ClusterCloud, build_provider
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.adapters.kube import (
    DryRunKubeActions,
    KubeActions,
    KubeAdapter,
    LeaderElector,
    NodeCache,
    StateStore,
    make_api_client,
)
from noderescue.adapters.notify.webhook import Notifier
from noderescue.config import ClusterSettings, Config
from noderescue.core.model import Policy
from noderescue.metrics import Metrics
from noderescue.runtime.announce import Announcer
from noderescue.runtime.executor import Executor, ExecutorTimings
from noderescue.runtime.node_reader import KubeNodeReader
from noderescue.runtime.reconciler import Reconciler

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LeaderTimings:
    """client-go's defaults (DESIGN §5)."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    dry_run: bool = False
    executor: ExecutorTimings = field(default_factory=ExecutorTimings)
    leader: LeaderTimings = field(default_factory=LeaderTimings)
    cloud_retry: RetryPolicy | None = None
    identity: str | None = None  # leader identity (default: host_pid_random)


def _azure_credential(settings: ClusterSettings) -> AsyncTokenCredential | None:
    """With a ``caBundle`` (a private or emulated ARM endpoint), the token endpoint is served with
    the same CA: the default credential chain must trust it too, not only the ARM client."""
    if settings.azure is None or settings.azure.ca_bundle is None:
        return None
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(connection_verify=str(settings.azure.ca_bundle))


class ClusterRuntime:
    def __init__(
        self,
        *,
        settings: ClusterSettings,
        policy: Policy,
        api: ApiClient,
        cache: NodeCache,
        kube: KubeActions,
        cloud: ClusterCloud | None,
        elector: LeaderElector | None,
        executor: Executor,
        reconciler: Reconciler,
        options: RuntimeOptions,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.credential = credential
        self.settings = settings
        self.name = settings.name
        self.policy = policy
        self.api = api
        self.cache = cache
        self.kube = kube
        self.cloud = cloud
        self.elector = elector
        self.executor = executor
        self.reconciler = reconciler
        self.options = options
        self.started = time.time()

    @classmethod
    async def build(
        cls,
        config: Config,
        settings: ClusterSettings,
        *,
        metrics: Metrics,
        notifiers: Sequence[Notifier] = (),
        options: RuntimeOptions = RuntimeOptions(),
    ) -> ClusterRuntime:
        policy = config.policy(settings.name)
        dry_run = options.dry_run
        api = await make_api_client(settings.kubeconfig, settings.context)
        credential: AsyncTokenCredential | None = None
        try:
            cache = NodeCache(
                api,
                cluster=settings.name,
                stale_after_s=policy.safety.stale_after_s,
            )
            kube: KubeActions
            if dry_run:
                kube = DryRunKubeActions(api, state_namespace=settings.namespace)
            else:
                kube = KubeAdapter(api, state_namespace=settings.namespace)
            credential = _azure_credential(settings)
            wake = asyncio.Event()
            elector: LeaderElector | None = None
            if not dry_run:  # dry-run writes no Lease: a leader-less observer
                timings = options.leader
                elector = LeaderElector(
                    api,
                    namespace=settings.namespace,
                    identity=options.identity,
                    lease_duration_s=timings.lease_duration_s,
                    renew_deadline_s=timings.renew_deadline_s,
                    retry_period_s=timings.retry_period_s,
                    on_change=lambda _leader: wake.set(),
                )
            cloud = await build_provider(
                settings,
                KubeNodeReader(api, cache),
                dry_run=dry_run,
                metrics=metrics,
                retry=options.cloud_retry,
                azure_credential=credential,
                fence=elector,
                # An attempt must end before the lease can pass to a standby.
                attempt_timeout_s=min(5.0, options.leader.renew_deadline_s / 2) if elector else None,
            )
            executor = Executor(
                cluster=settings.name,
                policy=policy,
                kube=kube,
                cloud=cloud.provider if cloud is not None else None,
                nodes=cache,
                metrics=metrics,
                fence=elector,
                announcer=Announcer(settings.name, kube, notifiers, dry_run=dry_run),
                dry_run=dry_run,
                timings=options.executor,
                on_worker_done=wake.set,
            )
            reconciler = Reconciler(
                cluster=settings.name,
                policy=policy,
                cache=cache,
                state=StateStore(api, settings.namespace),
                executor=executor,
                metrics=metrics,
                fence=elector,
                dry_run=dry_run,
                wake=wake,
            )
            executor.recheck = reconciler.recheck
            executor.judge = reconciler.judge
        except BaseException:
            await api.close()
            if credential is not None:
                await credential.close()
            raise
        return cls(
            settings=settings,
            policy=policy,
            api=api,
            cache=cache,
            kube=kube,
            cloud=cloud,
            elector=elector,
            executor=executor,
            reconciler=reconciler,
            options=options,
            credential=credential,
        )

    # ------------------------------------------------------------------ state for /readyz

    @property
    def synced(self) -> bool:
        return self.cache.synced_at is not None

    def readiness(self) -> str | None:
        """None when ready, else why not."""
        synced = self.cache.synced_at
        if synced is None:
            return f"cluster {self.name}: not synced yet"
        if not self.cache.reachable:
            return f"cluster {self.name}: API server unreachable"
        if time.time() - synced > self.policy.safety.stale_after_s:
            return f"cluster {self.name}: view is stale"
        return None

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(self.cache.run(), name=f"node-cache {self.name}")
        ]
        if self.elector is not None:
            background.append(asyncio.create_task(self.elector.run(), name=f"leader {self.name}"))
            background.append(asyncio.create_task(self._fence_watch(stop), name=f"fence {self.name}"))
        try:
            if not await self._wait_synced(stop):
                return
            log.info("cluster_synced", cluster=self.name, nodes=len(self.cache.snapshot()))
            if once:
                await self._once(stop)
            else:
                await self.reconciler.run(stop)
        finally:
            await self.executor.shutdown(self.options.executor.stop_grace_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.elector is not None:
                await self.elector.release()
            if self.cloud is not None:
                await self.cloud.close()
            if self.credential is not None:
                await self.credential.close()
            await self.api.close()
            log.info("cluster_stopped", cluster=self.name)

    async def _wait_synced(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await self.cache.wait_synced(0.5)
                return True
        return False

    async def _once(self, stop: asyncio.Event) -> None:
        """``--once``: one full pass (as leader if the Lease can be had within its duration)."""
        if self.elector is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.leader.lease_duration_s + 1):
                    await self.elector.leading.wait()
        await self.reconciler.run_pass()
        await self.executor.wait_idle(self.options.executor.stop_grace_s)

    async def _fence_watch(self, stop: asyncio.Event) -> None:
        """Leadership lost -> cancel the workers at once (each stops after its last written record)."""
        assert self.elector is not None
        was = False
        while not stop.is_set():
            now = self.elector.holds_lease()
            if was and not now:
                log.warning("leadership_lost_cancelling_workers", cluster=self.name)
                await self.executor.cancel_all()
                self.reconciler.wake.set()
            was = now
            await asyncio.sleep(0.5)
