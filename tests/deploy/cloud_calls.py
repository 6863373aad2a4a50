"""Which cloud API operations the adapters in ``noderescue/adapters/cloud/`` call, read from
their source (``ast``), so the shipped permissions can be compared with the code."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore.session
from botocore import xform_name

from tests.deploy.manifests import REPO

CLOUD_ADAPTERS = REPO / "noderescue" / "adapters" / "cloud"


@dataclass(frozen=True, slots=True)
class BotoCall:
    """One boto3 client method used in the source: ``client.<method>`` at ``file:line``."""

    service: str  # boto3 service name: "autoscaling"
    method: str  # snake_case client method: "terminate_instance_in_auto_scaling_group"
    location: str


@functools.cache
def _operations(service: str) -> dict[str, str]:
    """snake_case method -> PascalCase operation for a boto3 service."""
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


@functools.cache
def iam_prefix(service: str) -> str:
    """The IAM action prefix of a boto3 service (its SigV4 signing name: autoscaling, ec2, ssm)."""
    return str(botocore.session.get_session().get_service_model(service).signing_name)


def iam_action(call: BotoCall) -> str:
    return f"{iam_prefix(call.service)}:{_operations(call.service)[call.method]}"


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _client_service(node: ast.expr) -> str | None:
    """``<anything>.client("svc", ...)`` -> "svc"."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def _clients(tree: ast.Module) -> dict[str, str]:
    """Receiver name (``_asg`` for ``self._asg``, or a local name) -> boto3 service."""
    clients: dict[str, str] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        service = _client_service(value)
        for target in targets:
            name = _receiver_name(target)
            if service and name:
                clients[name] = service
    return clients


def boto_calls(directory: Path = CLOUD_ADAPTERS) -> Iterator[BotoCall]:
    """Every boto3 client operation referenced in the modules of ``directory``.

    A method reached through a known client (``self._asg.describe_...``) belongs to that
    client's service. Any other attribute named like an operation of one of the services the
    modules create clients for is counted too (a client passed around under another name);
    a name that is an operation of several of them is an error, so nothing slips through.
    """
    modules = [(path, ast.parse(path.read_text(), str(path))) for path in sorted(directory.glob("*.py"))]
    clients: dict[str, str] = {}
    for _, tree in modules:
        clients.update(_clients(tree))
    services = sorted(set(clients.values()))
    for path, tree in modules:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            location = f"{path.relative_to(REPO)}:{node.lineno}"
            receiver = _receiver_name(node.value)
            if receiver in clients:
                service = clients[receiver]
                if node.attr in _operations(service):
                    yield BotoCall(service, node.attr, location)
                continue
            owners = [s for s in services if node.attr in _operations(s)]
            if len(owners) > 1:
                raise AssertionError(
                    f"{location}: {node.attr} is an operation of {owners}; cannot tell which"
                )
            if owners:
                yield BotoCall(owners[0], node.attr, location)


# azure-mgmt-compute operation group -> SDK method -> RBAC action it needs.
_VMSS = "Microsoft.Compute/virtualMachineScaleSets"
AZURE_ACTIONS: dict[str, dict[str, str]] = {
    "virtual_machine_scale_sets": {
        "get": f"{_VMSS}/read",
        "list": f"{_VMSS}/read",
        "get_instance_view": f"{_VMSS}/read",
        "begin_update": f"{_VMSS}/write",
        "begin_create_or_update": f"{_VMSS}/write",
        "begin_delete_instances": f"{_VMSS}/delete/action",
    },
    "virtual_machine_scale_set_vms": {
        "get": f"{_VMSS}/virtualMachines/read",
        "list": f"{_VMSS}/virtualMachines/read",
        "get_instance_view": f"{_VMSS}/virtualMachines/read",
        "begin_restart": f"{_VMSS}/virtualMachines/restart/action",
        "begin_reimage": f"{_VMSS}/virtualMachines/reimage/action",
        "begin_delete": f"{_VMSS}/virtualMachines/delete",
        "begin_run_command": f"{_VMSS}/virtualMachines/runCommand/action",
    },
}
# Long-running operations are polled at .../providers/Microsoft.Compute/locations/<l>/operations/<id>.
AZURE_LRO_POLLING = "Microsoft.Compute/locations/operations/read"


@dataclass(frozen=True, slots=True)
class AzureCall:
    group: str  # "virtual_machine_scale_set_vms"
    method: str  # "begin_restart"
    location: str


def azure_calls(directory: Path = CLOUD_ADAPTERS) -> Iterator[AzureCall]:
    """Every ``<client>.<operation group>.<method>`` of azure-mgmt-compute in ``directory``."""
    for path in sorted(directory.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in AZURE_ACTIONS
            ):
                yield AzureCall(node.value.attr, node.attr, f"{path.relative_to(REPO)}:{node.lineno}")
