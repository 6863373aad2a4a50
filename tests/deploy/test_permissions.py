"""The permissions we ship are exactly what the code calls: nothing unused to grant, nothing
missing to fail in production, destructive cloud actions fenced by tags. Cloud calls are read from
the adapters' source; the Kubernetes requests into noderescue's own namespace are observed on the
wire against the emulator (their paths are built at run time)."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Literal, NotRequired, TypedDict, cast

import pytest

from tests.deploy.cloud_calls import (
    AZURE_ACTIONS,
    AZURE_LRO_POLLING,
    CLOUD_ADAPTERS,
    azure_calls,
    boto_calls,
    iam_action,
)
from tests.deploy.kube_calls import STATE_NAMESPACE, KubeRequest, requests_into_the_state_namespace
from tests.deploy.manifests import DEPLOY, IN_CLUSTER, only, render, rules_of

IAM_POLICY = DEPLOY / "aws" / "iam-policy.json"
AZURE_ROLE = DEPLOY / "azure" / "role.json"
MANAGED_TAG = "aws:ResourceTag/noderescue.io/managed"


class IamStatement(TypedDict):
    Sid: str
    Effect: Literal["Allow", "Deny"]
    Action: str | list[str]
    Resource: str | list[str]
    Condition: NotRequired[dict[str, dict[str, str | list[str]]]]


class IamPolicy(TypedDict):
    Version: str
    Statement: list[IamStatement]


class AzureRoleDefinition(TypedDict):
    Name: str
    IsCustom: bool
    Description: str
    Actions: list[str]
    NotActions: list[str]
    DataActions: list[str]
    NotDataActions: list[str]
    AssignableScopes: list[str]


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _policy() -> IamPolicy:
    return cast(IamPolicy, json.loads(IAM_POLICY.read_text()))


def _policy_actions() -> set[str]:
    return {a for s in _policy()["Statement"] for a in _listed(s["Action"])}


def _aws_calls_in_code() -> dict[str, str]:
    """IAM action -> where the code calls it."""
    if not (CLOUD_ADAPTERS / "aws.py").exists():
        raise AssertionError("noderescue/adapters/cloud/aws.py does not exist (yet): nothing to compare with")
    return {iam_action(call): call.location for call in boto_calls()}


# ---------------------------------------------------------------------------------------------
# AWS
# ---------------------------------------------------------------------------------------------


def test_iam_policy_is_a_valid_allow_only_policy() -> None:
    policy = _policy()
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)), "duplicate Sid"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        for action in _listed(statement["Action"]):
            service, _, name = action.partition(":")
            assert service and name and "*" not in action, f"wildcard or malformed action {action!r}"


def test_every_action_in_the_policy_is_called_by_the_code() -> None:
    unused = _policy_actions() - set(_aws_calls_in_code())
    assert not unused, f"granted but never called by noderescue/adapters/cloud: {sorted(unused)}"


def test_every_boto3_call_in_the_code_is_allowed_by_the_policy() -> None:
    calls = _aws_calls_in_code()
    missing = {action: where for action, where in calls.items() if action not in _policy_actions()}
    assert not missing, f"called but not granted (AccessDenied in production): {missing}"


def test_the_boto3_call_finder_sees_calls() -> None:
    """The comparison above is only as good as the finder: it must see the calls we know of."""
    calls = _aws_calls_in_code()
    assert "autoscaling:TerminateInstanceInAutoScalingGroup" in calls
    assert "ec2:RebootInstances" in calls


@pytest.mark.parametrize(
    "action",
    [
        pytest.param("autoscaling:TerminateInstanceInAutoScalingGroup", id="terminate"),
        pytest.param("ec2:RebootInstances", id="reboot"),
    ],
)
def test_destructive_actions_need_the_managed_tag(action: str) -> None:
    statements = [s for s in _policy()["Statement"] if action in _listed(s["Action"])]
    assert statements
    for statement in statements:
        assert statement["Resource"] != "*"
        assert statement["Condition"]["StringEquals"][MANAGED_TAG] == "true", statement["Sid"]


def test_send_command_is_limited_to_the_shell_document_and_tagged_instances() -> None:
    statements = [s for s in _policy()["Statement"] if "ssm:SendCommand" in _listed(s["Action"])]
    by_resource = {r: s for s in statements for r in _listed(s["Resource"])}
    assert set(by_resource) == {"arn:aws:ssm:*::document/AWS-RunShellScript", "arn:aws:ec2:*:*:instance/*"}
    instances = by_resource["arn:aws:ec2:*:*:instance/*"]
    assert instances["Condition"]["StringEquals"][MANAGED_TAG] == "true"
    # A statement mixing the document with a tag condition would never match (documents carry
    # no such tag), so each resource stands in its own statement.
    assert by_resource["arn:aws:ssm:*::document/AWS-RunShellScript"] is not instances


# ---------------------------------------------------------------------------------------------
# Azure
# ---------------------------------------------------------------------------------------------


def _role() -> AzureRoleDefinition:
    return cast(AzureRoleDefinition, json.loads(AZURE_ROLE.read_text()))


def test_azure_role_is_a_custom_role_with_only_vmss_actions() -> None:
    role = _role()
    assert role["IsCustom"] is True
    assert role["DataActions"] == [] and role["NotActions"] == [] and role["NotDataActions"] == []
    assert role["AssignableScopes"] and all(s.startswith("/subscriptions/") for s in role["AssignableScopes"])
    allowed = {a for methods in AZURE_ACTIONS.values() for a in methods.values()} | {AZURE_LRO_POLLING}
    assert set(role["Actions"]) <= allowed
    assert len(role["Actions"]) == len(set(role["Actions"]))
    assert not any("*" in a for a in role["Actions"])


def test_azure_role_matches_the_sdk_calls_of_the_adapter() -> None:
    if not list(CLOUD_ADAPTERS.glob("azure*.py")):
        pytest.skip("noderescue/adapters/cloud/azure.py is not written yet")
    calls = list(azure_calls())
    unknown = [c for c in calls if c.method not in AZURE_ACTIONS[c.group]]
    assert not unknown, (
        f"SDK calls with no known RBAC action (add them to cloud_calls.AZURE_ACTIONS): {unknown}"
    )
    needed = {AZURE_ACTIONS[c.group][c.method] for c in calls}
    if any(c.method.startswith("begin_") for c in calls):
        needed.add(AZURE_LRO_POLLING)
    granted = set(_role()["Actions"])
    assert needed - granted == set(), "called but not granted"
    assert granted - needed == set(), "granted but never called"


# ---------------------------------------------------------------------------------------------
# Kubernetes: the Role in noderescue's own namespace
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace_requests(tmp_path_factory: pytest.TempPathFactory) -> list[KubeRequest]:
    seen = asyncio.run(requests_into_the_state_namespace(tmp_path_factory.mktemp("kube")))
    return [r for r in seen if r.namespace == STATE_NAMESPACE]


@functools.cache
def _role_rules() -> tuple[tuple[str, str, frozenset[str], frozenset[str]], ...]:
    """(apiGroup, resource, resourceNames, verbs) of the Role in the daemon's namespace."""
    role = only(render(IN_CLUSTER), "Role", "noderescue")
    return tuple(
        (group, resource, frozenset(rule.get("resourceNames", [])), frozenset(rule["verbs"]))
        for rule in rules_of(role)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    )


def _granted(request: KubeRequest) -> bool:
    return any(
        group == request.group
        and resource == request.resource
        and request.verb in verbs
        and (not names or request.name in names)
        for group, resource, names, verbs in _role_rules()
    )


def test_the_namespace_role_is_the_one_the_daemon_writes_in() -> None:
    role = only(render(IN_CLUSTER), "Role", "noderescue")
    assert role["metadata"]["namespace"] == STATE_NAMESPACE


def test_every_request_into_our_namespace_is_granted_by_the_role(
    namespace_requests: list[KubeRequest],
) -> None:
    missing = sorted({(r.verb, r.group, r.resource, r.name) for r in namespace_requests if not _granted(r)})
    assert not missing, f"sent but not granted (403 in production): {missing}"


def test_every_grant_of_the_role_is_used(namespace_requests: list[KubeRequest]) -> None:
    used = {(r.group, r.resource, r.verb) for r in namespace_requests}
    unused = sorted(
        (group, resource, verb)
        for group, resource, _, verbs in _role_rules()
        for verb in verbs
        if (group, resource, verb) not in used
    )
    assert not unused, f"granted but never requested: {unused}"


def test_the_request_recorder_sees_the_stores_and_the_lease(namespace_requests: list[KubeRequest]) -> None:
    """The comparison above is only as good as the exercise: it must reach what we know of."""
    used = {(r.verb, r.group, r.resource) for r in namespace_requests}
    assert {
        ("list", "", "configmaps"),
        ("create", "", "configmaps"),
        ("update", "", "configmaps"),
        ("delete", "", "configmaps"),
        ("get", "", "configmaps"),
        ("create", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
    } <= used
