"""A whole emulated world: the Kubernetes API and cluster, the scenario's cloud, and its events.

    async with World.start("one-bad-worker", out_dir=tmp_path, time_scale=10) as world:
        world.kubeconfig, world.env(), world.aws.endpoint, world.cluster ...

On entry it starts ``SimCluster`` (with the audit log ``out_dir/audit.jsonl`` and ``Faults``),
the provider's emulator (moto + proxy for AWS, the ARM emulator for Azure), creates the groups'
instances and Nodes, the workloads and DaemonSets, writes ``kubeconfig``, ``env`` and
``noderescue.yaml`` into ``out_dir`` and starts the event runner. On exit it stops all of it.

Times in the scenario are emulated seconds; real = emulated / ``time_scale``. The daemon
configuration written for the scenario is in real seconds, so a daemon run beside a fast world
sees the scenario's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from noderescue.core.durations import format_duration
from noderescue.sim import aws as aws_sim
from noderescue.sim import azure as azure_sim
from noderescue.sim.audit import AuditLog
from noderescue.sim.aws import AwsCloud
from noderescue.sim.azure import AzureCloud
from noderescue.sim.cluster import SimCluster
from noderescue.sim.faults import Faults
from noderescue.sim.scenario import EventRunner, Group, Scenario, load_scenario, node_labels, spread
from noderescue.sim.tls import write_trust_bundle

log = structlog.get_logger(__name__)

# NPD conditions every generated node class watches, besides those the scenario's events set.
_DEFAULT_NPD_CONDITIONS = ("KernelDeadlock", "ReadonlyFilesystem")
GROUP_LABEL = "noderescue.io/sim-group"
# Emulated seconds a drain may take (pods' 30 s grace, PDBs letting one pod go at a time); a
# reboot's or replace's step timeout counts from the step's start, so it includes the drain.
_DRAIN_S = 120.0


@dataclass(slots=True)
class World:
    scenario: Scenario
    out_dir: Path
    time_scale: float
    cluster: SimCluster
    audit: AuditLog
    faults: Faults
    aws: AwsCloud | None = None
    azure: AzureCloud | None = None
    events: EventRunner | None = None
    _events_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.out_dir / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.out_dir / "env"

    @property
    def config_file(self) -> Path:
        return self.out_dir / "noderescue.yaml"

    @property
    def trust_bundle(self) -> Path:
        return self.out_dir / "ca-bundle.pem"

    @property
    def audit_file(self) -> Path:
        return self.out_dir / "audit.jsonl"

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        scenario: Scenario | str,
        *,
        out_dir: Path,
        time_scale: float = 1.0,
        port: int = 0,
        nodes: int | None = None,
        run_events: bool = True,
    ) -> AsyncIterator[World]:
        """Start everything for ``scenario`` (a Scenario, a built-in name or a YAML path).

        ``nodes`` resizes the scenario (for ``large``); ``run_events=False`` leaves the events to
        the caller (``world.events.run()``).
        """
        if isinstance(scenario, str):
            scenario = load_scenario(scenario)
        if nodes is not None:
            scenario = scenario.scaled(nodes)
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        # Absolute: the env file and the daemon config are read from other directories.
        out_dir = await asyncio.to_thread(out_dir.resolve)
        audit = AuditLog(out_dir / "audit.jsonl")
        faults = Faults()
        cluster = SimCluster(time_scale=time_scale, audit=audit, faults=faults)
        world = cls(
            scenario=scenario,
            out_dir=out_dir,
            time_scale=time_scale,
            cluster=cluster,
            audit=audit,
            faults=faults,
        )
        try:
            await cluster.start(port=port)
            await world._populate()
            world.write_files()
            world.events = EventRunner(scenario, cluster, faults, time_scale=time_scale)
            if run_events:
                world._events_task = asyncio.create_task(
                    world.events.run(), name=f"sim-events-{scenario.name}"
                )
            log.info("sim_world_started", scenario=scenario.name, api=cluster.url, out_dir=str(out_dir))
            yield world
        finally:
            await world._stop()

    async def _populate(self) -> None:
        scenario = self.scenario
        if scenario.provider == "aws":
            self.aws = AwsCloud(scenario, self.cluster, audit=self.audit, throttle=self.faults)
            await self.aws.start()
            await self.aws.create_groups()
        elif scenario.provider == "azure":
            self.azure = AzureCloud(
                scenario,
                self.cluster,
                ca_bundle=self.out_dir / "azure-ca.pem",
                audit=self.audit,
                throttle=self.faults,
            )
            await self.azure.start()
            await asyncio.to_thread(write_trust_bundle, self.trust_bundle, self.azure.ca_bundle)
            await self.azure.create_groups()
        else:
            for group in scenario.groups:
                self._add_plain_nodes(group)
        for group in scenario.groups:
            if group.pods_per_node:
                self.cluster.add_workload(f"{group.name}-pods", replicas=group.size * group.pods_per_node)
        for workload in scenario.workloads:
            pdb = workload.pdb
            self.cluster.add_workload(
                workload.name,
                replicas=workload.replicas,
                namespace=workload.namespace,
                pdb_max_unavailable=pdb.max_unavailable if pdb else None,
                pdb_min_available=pdb.min_available if pdb else None,
                empty_dir=workload.empty_dir,
            )
        for daemonset in scenario.daemonsets:
            self.cluster.add_daemonset(daemonset.name, namespace=daemonset.namespace)
        for pod in scenario.pods:
            self.cluster.add_bare_pod(pod.name, pod.node, namespace=pod.namespace)

    def _add_plain_nodes(self, group: Group) -> None:
        for index, short_zone in enumerate(spread(group.size, group.zones)):
            name = f"{group.name}-{index}"
            zone = self.scenario.full_zone(short_zone)
            self.cluster.add_node(
                name,
                labels=node_labels(self.scenario, group, zone),
                zone=zone,
                provider_id=f"none:///{name}",
                boot_seconds=group.boot_seconds,
            )
            if group.repairable:
                self.cluster.set_repairable(name, True)

    async def _stop(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_task
            self._events_task = None
        if self.aws is not None:
            await self.aws.stop()
        if self.azure is not None:
            await self.azure.stop()
        await self.cluster.stop()
        self.audit.close()

    def instance_of_node(self, node: str) -> str | None:
        """The cloud instance behind a node: an EC2 instance id or a VMSS instance id."""
        if self.aws is not None:
            return self.aws.instance_of_node(node)
        if self.azure is not None:
            return self.azure.instance_of_node(node)
        return None

    # ----------------------------------------------------------------------------------------
    # files for clients and the daemon

    def env(self) -> dict[str, str]:
        """Environment for clients of this world (the content of ``out_dir/env``)."""
        env = {"KUBECONFIG": str(self.kubeconfig)}
        if self.aws is not None:
            env |= {
                "AWS_ENDPOINT_URL": self.aws.endpoint,
                "AWS_ACCESS_KEY_ID": aws_sim.FAKE_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": aws_sim.FAKE_SECRET_ACCESS_KEY,
                "AWS_DEFAULT_REGION": self.scenario.region,
                "AWS_REGION": self.scenario.region,
            }
        if self.azure is not None:
            env |= {
                "AZURE_ARM_ENDPOINT": self.azure.endpoint,
                "AZURE_CA_BUNDLE": str(self.azure.ca_bundle),
                "AZURE_TENANT_ID": azure_sim.FAKE_TENANT_ID,
                "AZURE_CLIENT_ID": azure_sim.FAKE_CLIENT_ID,
                "AZURE_CLIENT_SECRET": azure_sim.FAKE_CLIENT_SECRET,
                "AZURE_SUBSCRIPTION_ID": self.azure.subscription_id,
                "AZURE_RESOURCE_GROUP": self.azure.resource_group,
                # DefaultAzureCredential asks the emulator for its token, and trusts it through
                # SSL_CERT_FILE (the system's CAs plus the emulator's).
                "AZURE_AUTHORITY_HOST": self.azure.endpoint,
                "SSL_CERT_FILE": str(self.trust_bundle),
            }
        return env

    def write_files(self) -> None:
        self.cluster.write_kubeconfig(self.kubeconfig)
        lines = [f"{key}={shlex.quote(value)}" for key, value in self.env().items()]
        self.env_file.write_text("\n".join(lines) + "\n")
        self.config_file.write_text(yaml.safe_dump(self.daemon_config(), sort_keys=False))

    def _real(self, emulated_s: float) -> str:
        return format_duration(max(0.001, emulated_s / self.time_scale))

    def daemon_config(self) -> dict[str, Any]:
        """A noderescue configuration (DESIGN §3) that fits the scenario, in real seconds."""
        scenario = self.scenario
        cluster: dict[str, Any] = {
            "name": scenario.name,
            "kubeconfig": str(self.kubeconfig),
            "provider": scenario.provider,
        }
        if self.aws is not None:
            cluster["aws"] = {
                "region": scenario.region,
                "autoScalingGroups": [g.name for g in scenario.groups],
                "endpointUrl": self.aws.endpoint,
            }
        if self.azure is not None:
            cluster["azure"] = {
                "subscriptionId": self.azure.subscription_id,
                "resourceGroup": self.azure.resource_group,
                "scaleSets": [g.name for g in scenario.groups],
                "armEndpoint": self.azure.endpoint,
                "caBundle": str(self.azure.ca_bundle),
            }
        watched = list(_DEFAULT_NPD_CONDITIONS)
        for event in scenario.events:
            if (
                event.condition is not None
                and event.condition.type not in watched
                and event.condition.type != "Ready"
            ):
                watched.append(event.condition.type)
        return {
            "dryRun": False,
            "clusters": [cluster],
            "safety": {
                "maxUnhealthy": "40%",
                "maxUnhealthyPerZone": "50%",
                "maxConcurrent": 2,
                "staleAfter": self._real(10),
            },
            # Port 0: several worlds (and daemons) run side by side on one machine.
            "http": {"bind": "127.0.0.1:0"},
            "nodeClasses": [self._node_class(g, watched) for g in scenario.groups],
        }

    def _node_class(self, group: Group, watched: list[str]) -> dict[str, Any]:
        labels = dict(group.labels) or {GROUP_LABEL: group.name}
        rules: list[dict[str, Any]] = [
            {"type": "Ready", "status": ["False", "Unknown"], "for": self._real(10)},
            {"type": "NodeLease", "staleFor": self._real(30)},
        ]
        rules += [{"type": t, "status": ["True"], "for": self._real(2)} for t in watched]
        ladder: list[dict[str, Any]]
        if self.scenario.provider == "none":
            ladder = [{"action": "notify"}]
        elif group.pet:
            ladder = [
                {
                    "action": "repair",
                    "timeout": self._real(20),
                    "command": "systemctl restart containerd kubelet",
                },
                {"action": "reboot", "timeout": self._real(_DRAIN_S + 30 + 2 * group.boot_seconds)},
                {"action": "notify"},
            ]
        else:
            ladder = [
                {
                    "action": "replace",
                    "timeout": self._real(_DRAIN_S + 30 + 2 * group.join_seconds + group.boot_seconds),
                }
            ]
        return {
            "name": group.name,
            "selector": {"matchLabels": labels},
            "rules": rules,
            "ladder": ladder,
            # Long enough for the pods' own 30 s grace and a PDB that lets one pod go at a time.
            # A pet whose kubelet is gone never confirms its pods' deletion: the drain stops
            # waiting for them 10 s past their deletionTimestamp, and a pet's reboot goes on
            # after the drain timeout anyway. Cattle keep their PDBs (pdb-blocked shows the
            # diagnosis).
            "drain": {
                "timeout": self._real(_DRAIN_S),
                "onTimeout": "proceed" if group.pet else "abort",
                "deleteEmptyDirData": True,
                "skipWaitForDeleteTimeout": self._real(10),
            },
            "maxUnavailable": 1,
        }
