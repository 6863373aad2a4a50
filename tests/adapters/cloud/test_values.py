"""ProviderID parsing and the stored form of operations: pure, table-driven."""

from __future__ import annotations

import pytest

from noderescue.adapters.cloud.base import Operation, OperationKind, UnsupportedProviderId
from noderescue.adapters.cloud.provider_ids import (
    AwsInstanceRef,
    AzureVmssVmRef,
    parse_aws_provider_id,
    parse_azure_provider_id,
)

VMSS = "/providers/Microsoft.Compute/virtualMachineScaleSets"


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        pytest.param(
            "aws:///eu-west-1a/i-0123456789abcdef0",
            AwsInstanceRef("eu-west-1a", "i-0123456789abcdef0"),
            id="17-hex",
        ),
        pytest.param(
            "aws:///us-east-1b/i-12345678", AwsInstanceRef("us-east-1b", "i-12345678"), id="8-hex-legacy"
        ),
        pytest.param(
            "aws:////i-0123456789abcdef0", AwsInstanceRef(None, "i-0123456789abcdef0"), id="no-zone"
        ),
        pytest.param(
            "aws:///us-gov-west-1a/i-0abcdef0123456789",
            AwsInstanceRef("us-gov-west-1a", "i-0abcdef0123456789"),
            id="govcloud-zone",
        ),
    ],
)
def test_aws_provider_id_parses(provider_id: str, expected: AwsInstanceRef) -> None:
    assert parse_aws_provider_id(provider_id) == expected


@pytest.mark.parametrize(
    "provider_id",
    [
        pytest.param("", id="empty"),
        pytest.param("i-0123456789abcdef0", id="bare-instance-id"),
        pytest.param("aws://eu-west-1a/i-0123456789abcdef0", id="two-slashes"),
        pytest.param("aws:///eu-west-1a/fargate-ip-10-0-0-1.ec2.internal", id="fargate"),
        pytest.param("aws:///eu-west-1a/i-0123456789ABCDEF0", id="upper-case-hex"),
        pytest.param("aws:///eu-west-1a/i-0123456789abcdef0/extra", id="trailing-segment"),
        pytest.param("aws:///eu-west-1a/i-0123456789abcdef01", id="too-long"),
        pytest.param(f"azure:///subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/0", id="azure"),
        pytest.param("kind://docker/kind/kind-worker", id="kind"),
    ],
)
def test_aws_provider_id_rejects(provider_id: str) -> None:
    with pytest.raises(UnsupportedProviderId):
        parse_aws_provider_id(provider_id)


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        pytest.param(
            f"azure:///subscriptions/sub-1/resourceGroups/MC_rg_aks_westeurope{VMSS}/aks-pool-1234-vmss/virtualMachines/3",
            AzureVmssVmRef("sub-1", "MC_rg_aks_westeurope", "aks-pool-1234-vmss", "3"),
            id="aks",
        ),
        pytest.param(
            f"azure:///subscriptions/sub-1/resourcegroups/mc_rg_aks_westeurope{VMSS.lower()}/pool/virtualmachines/12",
            AzureVmssVmRef("sub-1", "mc_rg_aks_westeurope", "pool", "12"),
            id="lower-cased-keywords",
        ),
    ],
)
def test_azure_provider_id_parses(provider_id: str, expected: AzureVmssVmRef) -> None:
    assert parse_azure_provider_id(provider_id) == expected


@pytest.mark.parametrize(
    "provider_id",
    [
        pytest.param("", id="empty"),
        pytest.param(
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
            id="standalone-vm",
        ),
        pytest.param(
            f"azure:///subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/abc", id="non-numeric-id"
        ),
        pytest.param(
            f"azure:///subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/", id="no-instance"
        ),
        pytest.param(
            f"azure://subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/0", id="two-slashes"
        ),
        pytest.param(
            f"azure:///subscriptions/s/resourceGroups/rg{VMSS}/ss/virtualMachines/0/x", id="trailing"
        ),
        pytest.param("aws:///eu-west-1a/i-0123456789abcdef0", id="aws"),
    ],
)
def test_azure_provider_id_rejects(provider_id: str) -> None:
    with pytest.raises(UnsupportedProviderId):
        parse_azure_provider_id(provider_id)


def test_azure_vm_name_is_scale_set_underscore_instance() -> None:
    assert AzureVmssVmRef("s", "rg", "pool", "7").vm_name == "pool_7"


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(
            Operation("cmd-1", OperationKind.REPAIR, "i-0123456789abcdef0", 1.5, "aws"), id="aws-repair"
        ),
        pytest.param(
            Operation(
                "op-1", OperationKind.REPLACE, "pool_3", 2.0, "azure", token='{"async_url":"https://x/op"}'
            ),
            id="azure-token",
        ),
    ],
)
def test_operation_round_trips_through_its_stored_form(op: Operation) -> None:
    assert Operation.from_str(op.to_str()) == op
    assert Operation.from_dict(op.to_dict()) == op


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"id": "x"}', id="missing-fields"),
        pytest.param(
            '{"id":"x","kind":"explode","instance_id":"i","started":1,"provider":"aws","token":""}',
            id="bad-kind",
        ),
        pytest.param(
            '{"id":"x","kind":"reboot","instance_id":"i","started":"soon","provider":"aws","token":""}',
            id="bad-started",
        ),
    ],
)
def test_operation_from_a_damaged_record_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a stored cloud operation"):
        Operation.from_str(text)
