"""The daemon process (``noderescue run``): logging, HTTP, systemd, one runtime per cluster,
signals (issue 6 items 3, 5, 7).

Clusters are independent: each runs in its own task of one ``TaskGroup``; an unreachable cluster
keeps its watch retrying, is reported not-ready on ``/readyz`` and acts on nothing (its view is
never fresh), while the others go on. SIGTERM/SIGINT set the stop event: no new steps start,
running steps get 30 s to reach their safe point, Leases are released, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from noderescue import __version__
from noderescue.adapters.notify.webhook import Notifier, WebhookNotifier
from noderescue.config import Config, ConfigError, load_config
from noderescue.config_secrets import SecretError
from noderescue.metrics import METRICS, REGISTRY, Metrics
from noderescue.runtime.cluster import ClusterRuntime, LeaderTimings, RuntimeOptions
from noderescue.runtime.http import AuthSetupError, HttpServer, build_authorizer
from noderescue.runtime.logs import configure_logging
from noderescue.runtime.systemd import SystemdNotifier

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
STATUS_INTERVAL_S = 5.0


class Daemon:
    """The process's clusters, as the HTTP server (``StatusSource``) and systemd see them."""

    def __init__(self, config: Config, *, dry_run: bool) -> None:
        self.config = config
        self.dry_run = dry_run
        self.runtimes: dict[str, ClusterRuntime] = {}
        self.failed: dict[str, str] = {}  # cluster -> why its runtime could not be built
        self.started = time.time()

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = [f"cluster {name}: {why}" for name, why in self.failed.items()]
        for cluster in self.config.clusters:
            runtime = self.runtimes.get(cluster.name)
            if runtime is None:
                if cluster.name not in self.failed:
                    reasons.append(f"cluster {cluster.name}: starting")
                continue
            reason = runtime.readiness()
            if reason is not None:
                reasons.append(reason)
        return not reasons, reasons

    def status(self) -> Mapping[str, object]:
        return {
            "version": __version__,
            "dry_run": self.dry_run,
            "started": self.started,
            "clusters": {
                name: (runtime.reconciler.status() if runtime else {"error": self.failed.get(name)})
                for name, runtime in ((c.name, self.runtimes.get(c.name)) for c in self.config.clusters)
            },
        }

    def summary(self) -> str:
        """The systemd STATUS line."""
        parts = []
        for name, runtime in self.runtimes.items():
            last = runtime.reconciler.last
            role = "dry-run" if self.dry_run else ("leader" if runtime.reconciler.leading else "standby")
            nodes = len(runtime.cache.snapshot())
            in_flight = sum(1 for r in last.records.values() if r.in_flight) if last else 0
            parts.append(f"{name}: {role}, {nodes} nodes, {in_flight} in flight")
        parts += [f"{name}: failed" for name in self.failed]
        return "; ".join(parts) or "starting"


async def run_daemon(
    config: Config,
    *,
    once: bool = False,
    dry_run: bool = False,
    metrics: Metrics = METRICS,
    options: RuntimeOptions | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or one pass with ``once``); the process exit code."""
    dry_run = dry_run or config.dry_run
    options = options or RuntimeOptions(dry_run=dry_run, leader=leader_timings(config))
    metrics.dry_run.set(1 if dry_run else 0)
    daemon = Daemon(config, dry_run=dry_run)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopper(stop, sig))
    systemd = SystemdNotifier.from_env()
    notifiers: list[WebhookNotifier] = []
    host, port = config.http_bind
    # Secrets and the token reviewer first: a missing secret file fails the start at once (exit
    # 2 through cmd_run), before the port is open or any cluster is touched.
    webhooks = [
        (
            webhook.resolve_url(f"notifications[{index}].url"),
            webhook.resolve_headers(f"notifications[{index}].headers"),
            frozenset(webhook.events),
        )
        for index, webhook in enumerate(config.notifications)
    ]
    authorizer = await build_authorizer(config.http.auth, config.http.auth_kubeconfig)
    server = HttpServer(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}", daemon, REGISTRY, authorizer=authorizer
    )
    watchdog: asyncio.Task[None] | None = None
    try:
        await server.start()
        log.info(
            "daemon_started",
            version=__version__,
            dry_run=dry_run,
            clusters=[c.name for c in config.clusters],
            http_port=server.port,
        )
        watchdog = systemd.start_watchdog()
        for url, headers, events in webhooks:
            notifier = WebhookNotifier(url, events=events, headers=headers)
            notifier.start()
            notifiers.append(notifier)
        async with asyncio.TaskGroup() as group:
            for settings in config.clusters:
                group.create_task(
                    _run_cluster(daemon, config, settings.name, stop, once, metrics, notifiers, options),
                    name=f"cluster {settings.name}",
                )
            if not once:
                group.create_task(_tell_systemd(daemon, systemd, stop), name="systemd-status")
    finally:
        systemd.stopping()
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        for notifier in notifiers:
            await notifier.close()
        await server.stop()
        if authorizer is not None:
            await authorizer.close()
        systemd.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("daemon_stopped")
    return EXIT_FAILURE if daemon.failed and once else EXIT_OK


def leader_timings(config: Config) -> LeaderTimings:
    """The configuration's ``leaderElection`` as the runtime's timings."""
    election = config.leader_election
    return LeaderTimings(
        lease_duration_s=float(election.lease_duration),
        renew_deadline_s=election.renew_deadline,
        retry_period_s=election.retry_period,
    )


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        if not stop.is_set():
            log.info("daemon_stopping", signal=sig.name)
        stop.set()

    return handler


async def _run_cluster(
    daemon: Daemon,
    config: Config,
    name: str,
    stop: asyncio.Event,
    once: bool,
    metrics: Metrics,
    notifiers: Sequence[Notifier],
    options: RuntimeOptions,
) -> None:
    settings = config.cluster(name)
    try:
        runtime = await ClusterRuntime.build(
            config, settings, metrics=metrics, notifiers=notifiers, options=options
        )
    except Exception as exc:
        # A broken kubeconfig or cloud setup of one cluster must not take the others down.
        daemon.failed[name] = f"{type(exc).__name__}: {exc}"
        log.error("cluster_start_failed", cluster=name, error=daemon.failed[name])
        return
    daemon.runtimes[name] = runtime
    if once:
        # One pass, but never wait forever for an unreachable cluster.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.leader.lease_duration_s + options.executor.stop_grace_s):
                await runtime.run(stop, once=True)
        if runtime.reconciler.passes == 0 and not stop.is_set():
            # `run --once` from cron must not exit 0 when the pass it promises never happened.
            daemon.failed[name] = "no pass made: the cluster's view could not be synced in time"
            log.error("cluster_once_no_pass", cluster=name, error=daemon.failed[name])
        return
    try:
        await runtime.run(stop)
    except Exception as exc:
        # One cluster's crash must not stop the others: it shows as not ready on /readyz.
        daemon.failed[name] = f"{type(exc).__name__}: {exc}"
        log.exception("cluster_runtime_crashed", cluster=name)


async def _tell_systemd(daemon: Daemon, systemd: SystemdNotifier, stop: asyncio.Event) -> None:
    ready = False
    while not stop.is_set():
        if not ready and daemon.runtimes and all(r.synced for r in daemon.runtimes.values()):
            systemd.ready()
            ready = True
            log.info("daemon_ready")
        systemd.status(daemon.summary())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STATUS_INTERVAL_S if ready else 0.5):
                await stop.wait()


# ------------------------------------------------------------------------------------------------
# `noderescue run`


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, dry_run_override=args.dry_run)
    except ConfigError as exc:
        sys.stderr.write(exc.render() + "\n")
        return EXIT_USAGE
    try:
        configure_logging(level=args.log_level)
    except ValueError as exc:
        sys.stderr.write(f"noderescue run: {exc}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(run_daemon(config, once=args.once, dry_run=config.dry_run))
    except (SecretError, AuthSetupError) as exc:  # a secret file or the token reviewer: config
        log.error("daemon_failed", error=str(exc))
        return EXIT_USAGE
    except OSError as exc:  # e.g. the HTTP port is taken
        log.error("daemon_failed", error=str(exc))
        return EXIT_FAILURE
