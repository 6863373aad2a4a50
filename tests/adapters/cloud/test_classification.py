"""Each provider classifies every vendor error once: refused (nothing ran), ambiguous (may have
been applied) or failed (definite). A table per provider, from the exceptions the SDKs raise."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from noderescue.adapters.cloud.aws import classify_aws_error
from noderescue.adapters.cloud.azure import classify_azure_error
from noderescue.adapters.cloud.base import (
    CloudError,
    CloudUnavailable,
    InstanceNotFound,
    RequestRejected,
    Throttled,
)
from noderescue.adapters.cloud.retry import FailureKind

REFUSED, AMBIGUOUS, FAILED = FailureKind.REFUSED, FailureKind.AMBIGUOUS, FailureKind.FAILED
URL = "https://ec2.eu-west-1.amazonaws.com/"


def client_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "RebootInstances")


@pytest.mark.parametrize(
    ("exc", "kind", "error"),
    [
        pytest.param(client_error(400, "Throttling"), REFUSED, Throttled, id="asg-throttling"),
        pytest.param(client_error(400, "ThrottlingException"), REFUSED, Throttled, id="ssm-throttling"),
        pytest.param(client_error(503, "RequestLimitExceeded"), REFUSED, Throttled, id="ec2-throttling-503"),
        pytest.param(client_error(429, "TooManyRequestsException"), REFUSED, Throttled, id="429"),
        pytest.param(client_error(500, "ResourceContention"), REFUSED, Throttled, id="asg-contention-500"),
        pytest.param(client_error(400, "ScalingActivityInProgress"), REFUSED, Throttled, id="activity"),
        pytest.param(
            EndpointConnectionError(endpoint_url=URL), REFUSED, CloudUnavailable, id="connect-refused"
        ),
        pytest.param(ConnectTimeoutError(endpoint_url=URL), REFUSED, CloudUnavailable, id="connect-timeout"),
        pytest.param(
            ProxyConnectionError(proxy_url="http://proxy", error="x"), REFUSED, CloudUnavailable, id="proxy"
        ),
        pytest.param(client_error(500, "InternalError"), AMBIGUOUS, CloudUnavailable, id="500"),
        pytest.param(client_error(503, "Unavailable"), AMBIGUOUS, CloudUnavailable, id="503"),
        pytest.param(client_error(500, "InternalFailure"), AMBIGUOUS, CloudUnavailable, id="asg-500"),
        pytest.param(ReadTimeoutError(endpoint_url=URL), AMBIGUOUS, CloudUnavailable, id="read-timeout"),
        pytest.param(
            ConnectionClosedError(endpoint_url=URL), AMBIGUOUS, CloudUnavailable, id="reset-or-closed"
        ),
        pytest.param(SSLError(endpoint_url=URL, error=OSError("x")), AMBIGUOUS, CloudUnavailable, id="tls"),
        pytest.param(
            client_error(400, "InvalidInstanceID.NotFound"), FAILED, InstanceNotFound, id="not-found"
        ),
        pytest.param(client_error(400, "ValidationError"), FAILED, RequestRejected, id="validation"),
        pytest.param(client_error(403, "UnauthorizedOperation"), FAILED, RequestRejected, id="forbidden"),
        pytest.param(NoCredentialsError(), FAILED, CloudUnavailable, id="no-credentials"),
        pytest.param(ParamValidationError(report="bad"), FAILED, RequestRejected, id="param-validation"),
        pytest.param(RuntimeError("StopIteration"), AMBIGUOUS, CloudError, id="unexpected"),
    ],
)
def test_aws_classification(exc: Exception, kind: FailureKind, error: type[CloudError]) -> None:
    failure = classify_aws_error(exc)
    assert (failure.kind, type(failure.error)) == (kind, error)


class FakeResponse:
    """What HttpResponseError reads of a response."""

    def __init__(self, status: int, code: str) -> None:
        self.request = HttpRequest("POST", "https://management.azure.com/x")
        self.status_code = status
        self.reason = "reason"
        self.headers = {"Content-Type": "application/json"}
        self.content_type = "application/json"
        self._body = f'{{"error": {{"code": "{code}", "message": "m"}}}}'

    def text(self, encoding: str | None = None) -> str:
        return self._body


def http_error(status: int, code: str) -> HttpResponseError:
    return HttpResponseError(response=FakeResponse(status, code))


def wrapped(azure_type: type[ServiceRequestError | ServiceResponseError], inner: Exception) -> Exception:
    return azure_type(inner, error=inner)


CONNECTOR = aiohttp.ClientConnectorError(
    aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
    OSError(111, "Connection refused"),
)


@pytest.mark.parametrize(
    ("exc", "kind", "error"),
    [
        pytest.param(http_error(429, "TooManyRequests"), REFUSED, Throttled, id="429"),
        pytest.param(
            wrapped(ServiceRequestError, CONNECTOR), REFUSED, CloudUnavailable, id="connect-refused"
        ),
        pytest.param(
            wrapped(ServiceRequestTimeoutError, aiohttp.ConnectionTimeoutError()),
            REFUSED,
            CloudUnavailable,
            id="connect-timeout",
        ),
        pytest.param(ServiceRequestError("bearer token over http"), REFUSED, CloudUnavailable, id="policy"),
        pytest.param(http_error(500, "InternalServerError"), AMBIGUOUS, CloudUnavailable, id="500"),
        pytest.param(http_error(503, "ServiceUnavailable"), AMBIGUOUS, CloudUnavailable, id="503"),
        pytest.param(
            wrapped(ServiceRequestError, aiohttp.ServerDisconnectedError()),
            AMBIGUOUS,
            CloudUnavailable,
            id="disconnected-after-sending",
        ),
        pytest.param(
            wrapped(ServiceRequestError, aiohttp.ClientOSError(104, "Connection reset by peer")),
            AMBIGUOUS,
            CloudUnavailable,
            id="reset",
        ),
        pytest.param(
            wrapped(ServiceResponseTimeoutError, TimeoutError()),
            AMBIGUOUS,
            CloudUnavailable,
            id="read-timeout",
        ),
        pytest.param(ServiceResponseError("bad answer"), AMBIGUOUS, CloudUnavailable, id="bad-response"),
        pytest.param(http_error(404, "NotFound"), FAILED, InstanceNotFound, id="not-found"),
        pytest.param(http_error(400, "InvalidParameter"), FAILED, RequestRejected, id="validation"),
        pytest.param(http_error(409, "OperationNotAllowed"), FAILED, RequestRejected, id="conflict"),
        pytest.param(ClientAuthenticationError("no identity"), FAILED, CloudUnavailable, id="no-credential"),
        pytest.param(ValueError("x"), AMBIGUOUS, CloudError, id="unexpected"),
    ],
)
def test_azure_classification(exc: Exception, kind: FailureKind, error: type[CloudError]) -> None:
    failure = classify_azure_error(exc)
    assert (failure.kind, type(failure.error)) == (kind, error)


def test_a_mutating_call_retries_refusals_only() -> None:
    refused, ambiguous, failed = (
        classify_aws_error(client_error(400, "Throttling")),
        classify_aws_error(client_error(500, "InternalError")),
        classify_aws_error(client_error(400, "ValidationError")),
    )
    assert [f.retryable(mutating=True) for f in (refused, ambiguous, failed)] == [True, False, False]
    assert [f.retryable(mutating=False) for f in (refused, ambiguous, failed)] == [True, True, False]
