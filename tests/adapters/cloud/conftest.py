"""Fixtures for the cloud adapters: an in-process moto AWS with Auto Scaling groups, and a call log.

boto3 talks to moto through botocore's real request path (moto answers at ``before-send``), so
parameters are serialized and responses parsed as against AWS. Calls are counted with a
``before-call`` hook on the session the provider builds its clients from.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from moto import mock_aws
from prometheus_client import CollectorRegistry

from noderescue.metrics import Metrics

REGION = "eu-west-1"
ALLOWED_GROUP = "workers"
OTHER_GROUP = "someone-elses"

# Every AWS API operation that changes something (what the audit log would record).
MUTATING_OPERATIONS = frozenset(
    {
        "SendCommand",
        "RebootInstances",
        "TerminateInstances",
        "TerminateInstanceInAutoScalingGroup",
        "SetDesiredCapacity",
        "UpdateAutoScalingGroup",
    }
)


# Service models and endpoint rules parsed once per test session: a fresh botocore session
# would re-read them (~0.3 s per client on a busy machine).
_SHARED_LOADER = botocore.loaders.create_loader()


def fresh_session() -> boto3.session.Session:
    """A new boto3 session (its own event hooks) that shares the parsed service models."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _SHARED_LOADER)
    return boto3.session.Session(botocore_session=core, region_name=REGION)


@functools.cache
def setup_client(service: str) -> Any:
    """Clients for arranging and inspecting moto's state, outside the provider's call log.
    Created once (client classes cost ~0.1 s each); moto intercepts them whenever a mock is on."""
    session: Any = fresh_session()  # Any: boto3-stubs type client() per literal service name
    return session.client(service, aws_access_key_id="testing", aws_secret_access_key="testing")


@dataclass
class CallLog:
    """Every AWS API call the provider's clients made, and faults to inject into them."""

    calls: list[str] = field(default_factory=list)
    # operation name -> list of (status, code) to answer with, consumed one per call
    faults: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    # operation name -> seconds each call blocks before it is sent
    hangs: dict[str, float] = field(default_factory=dict)
    # operation names whose response is lost after the call took effect
    lose_response: set[str] = field(default_factory=set)

    @property
    def mutating(self) -> list[str]:
        return [name for name in self.calls if name in MUTATING_OPERATIONS]

    def after_call(self, model: Any, **_: Any) -> None:
        if model.name in self.lose_response:
            self.lose_response.discard(model.name)
            # The call reached AWS and took effect; the client sees a 5xx (a dropped connection
            # or a gateway error on the way back).
            error: Any = {
                "Error": {"Code": "InternalFailure", "Message": "injected after the call"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            }
            raise ClientError(error, model.name)

    def fail(self, operation: str, status: int, code: str, times: int) -> None:
        self.faults.setdefault(operation, []).extend([(status, code)] * times)

    def before_call(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        self.calls.append(model.name)
        hang = self.hangs.get(model.name)
        if hang:
            time.sleep(hang)  # runs in the provider's worker thread: an endpoint that does not answer
        queued = self.faults.get(model.name)
        if not queued:
            return None
        status, code = queued.pop(0)
        # Returning (http, parsed) from before-call short-circuits the request: botocore raises
        # the ClientError it would raise for this response from AWS.
        parsed = {
            "Error": {"Code": code, "Message": "injected by the test"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse("https://injected.invalid/", status, HTTPHeaders(), None), parsed


@dataclass
class AwsWorld:
    session: boto3.session.Session
    log: CallLog
    metrics: Metrics
    allowed_instances: list[str]
    other_instances: list[str]

    def provider_id(self, instance_id: str) -> str:
        zone = self.describe(instance_id)["Placement"]["AvailabilityZone"]
        return f"aws:///{zone}/{instance_id}"

    def describe(self, instance_id: str) -> Any:
        ec2 = setup_client("ec2")
        return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    def group(self, name: str) -> Any:
        asg = setup_client("autoscaling")
        return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def calls_counted(self, operation: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "noderescue_cloud_api_calls_total", {"provider": "aws", "operation": operation, "result": result}
        )
        return value or 0.0


def _create_group(name: str, size: int) -> list[str]:
    ec2 = setup_client("ec2")
    asg = setup_client("autoscaling")
    template = f"{name}-lt"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "t3.small"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=size,
        MaxSize=size + 2,
        DesiredCapacity=size,
        AvailabilityZones=[f"{REGION}a", f"{REGION}b"],
    )
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return [i["InstanceId"] for i in group["Instances"]]


@pytest.fixture
def aws_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsWorld]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        allowed = _create_group(ALLOWED_GROUP, 3)
        other = _create_group(OTHER_GROUP, 1)
        session = fresh_session()
        log = CallLog()
        # The stubs type handlers as returning None; before-call handlers may return a response.
        session.events.register_first("before-call.*.*", log.before_call)  # type: ignore[arg-type]
        session.events.register("after-call.*.*", log.after_call)
        yield AwsWorld(session, log, Metrics(CollectorRegistry()), allowed, other)
