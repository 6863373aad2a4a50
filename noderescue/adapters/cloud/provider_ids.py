"""Parsing of a Node's ``spec.providerID`` into the cloud's coordinates of its machine."""

from __future__ import annotations

import re
from dataclasses import dataclass

from noderescue.adapters.cloud.base import UnsupportedProviderId

# cloud-provider-aws writes aws:///<availability-zone>/<instance-id>; some old clusters leave the
# zone empty (aws:////<instance-id>).
_AWS_RE = re.compile(r"aws:///(?P<zone>[a-z0-9-]*)/(?P<instance>i-[0-9a-f]{8,17})")

# cloud-provider-azure writes the VM's ARM id behind azure://; resource-group segment and the
# fixed keywords vary in case between clusters (AKS lower-cases the resource group).
# Matched with fullmatch (``$`` would also accept a trailing newline). The instance id is ASCII
# digits: ``\d`` takes any Unicode digit, which int() (and a lenient server) reads as the ASCII
# one, a second spelling of the same VM. No whitespace in any segment.
_AZURE_VMSS_RE = re.compile(
    r"azure:///subscriptions/(?P<sub>[^/\s]+)/resourceGroups/(?P<rg>[^/\s]+)"
    r"/providers/Microsoft\.Compute/virtualMachineScaleSets/(?P<ss>[^/\s]+)"
    r"/virtualMachines/(?P<instance>[0-9]+)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class AwsInstanceRef:
    zone: str | None
    instance_id: str


@dataclass(frozen=True, slots=True)
class AzureVmssVmRef:
    subscription_id: str
    resource_group: str
    scale_set: str
    instance_id: str  # the scale set's instance id ("3"), not the VM's GUID

    @property
    def vm_name(self) -> str:
        """Azure names scale-set VMs <scaleSet>_<instanceId>; unique within the resource group."""
        return f"{self.scale_set}_{self.instance_id}"


def parse_aws_provider_id(provider_id: str) -> AwsInstanceRef:
    match = _AWS_RE.fullmatch(provider_id)
    if match is None:
        raise UnsupportedProviderId(
            f"not an AWS providerID (want aws:///<zone>/<instance-id>): {provider_id!r}"
        )
    return AwsInstanceRef(zone=match["zone"] or None, instance_id=match["instance"])


def parse_azure_provider_id(provider_id: str) -> AzureVmssVmRef:
    match = _AZURE_VMSS_RE.fullmatch(provider_id)
    if match is None:
        raise UnsupportedProviderId(
            "not an Azure scale-set VM providerID (want azure:///subscriptions/<sub>/resourceGroups/"
            f"<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<ss>/virtualMachines/<id>): "
            f"{provider_id!r}"
        )
    return AzureVmssVmRef(
        subscription_id=match["sub"],
        resource_group=match["rg"],
        scale_set=match["ss"],
        instance_id=match["instance"],
    )
