"""Build a cluster's cloud provider from its settings: the only way the runtime gets one.

What comes out is always wrapped in ``GuardedProvider`` (identity guard before every mutating
call), with ``DryRunProvider`` inside it in dry-run mode, so neither can be forgotten.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from noderescue.adapters.cloud import aws as aws_defaults
from noderescue.adapters.cloud import azure as azure_defaults
from noderescue.adapters.cloud.aws import AwsProvider
from noderescue.adapters.cloud.azure import AzureProvider
from noderescue.adapters.cloud.base import CloudProvider, LeaseFence
from noderescue.adapters.cloud.dryrun import DryRunProvider
from noderescue.adapters.cloud.guard import GuardedProvider, NodeReader
from noderescue.adapters.cloud.retry import RetryPolicy
from noderescue.config import ClusterSettings
from noderescue.metrics import METRICS, Metrics

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


@dataclass(frozen=True, slots=True)
class ClusterCloud:
    """A cluster's hands: the guarded provider, and in dry-run the recorder of what it did not do."""

    provider: GuardedProvider
    dry_run: DryRunProvider | None

    async def close(self) -> None:
        await self.provider.close()


async def build_provider(
    cluster: ClusterSettings,
    node_reader: NodeReader,
    *,
    dry_run: bool,
    metrics: Metrics = METRICS,
    retry: RetryPolicy | None = None,
    azure_credential: AsyncTokenCredential | None = None,
    fence: LeaseFence | None = None,
    attempt_timeout_s: float | None = None,
) -> ClusterCloud | None:
    """``None`` for provider ``none`` (configuration allows only ``notify`` there).

    ``azure_credential`` defaults to ``DefaultAzureCredential`` (managed identity, workload
    identity, environment, Azure CLI). ``fence`` (the leader election) is asked right before
    each attempt of a mutating call; ``None``: no leader election. ``attempt_timeout_s`` bounds
    each request (default: 5 s on AWS, where it is also the least lease an attempt needs; 20 s
    on Azure).
    """

    inner: CloudProvider
    if cluster.provider == "aws" and cluster.aws is not None:
        aws = cluster.aws
        # Building boto3 clients reads service models from disk: off the event loop.
        inner = await asyncio.to_thread(
            AwsProvider,
            aws.region,
            aws.auto_scaling_groups,
            endpoint_url=str(aws.endpoint_url) if aws.endpoint_url is not None else None,
            retry=retry,
            metrics=metrics,
            fence=fence,
            attempt_timeout_s=attempt_timeout_s or aws_defaults.DEFAULT_ATTEMPT_TIMEOUT_S,
        )
    elif cluster.provider == "azure" and cluster.azure is not None:
        azure = cluster.azure
        inner = AzureProvider(
            azure.subscription_id,
            azure.resource_group,
            azure.scale_sets,
            credential=azure_credential,
            arm_endpoint=str(azure.arm_endpoint) if azure.arm_endpoint is not None else None,
            ca_bundle=azure.ca_bundle,
            replace_mode=azure.replace_mode,
            dry_run=dry_run,
            retry=retry,
            metrics=metrics,
            fence=fence,
            attempt_timeout_s=attempt_timeout_s or azure_defaults.DEFAULT_ATTEMPT_TIMEOUT_S,
        )
    else:
        return None
    recorder = DryRunProvider(inner) if dry_run else None
    return ClusterCloud(GuardedProvider(recorder or inner, node_reader), recorder)
