"""The seam between the runtime and the clouds: values, the ``CloudProvider`` protocol, errors.

Vendor errors never cross this seam: each provider classifies every one of them exactly once
(``classify_aws_error``, ``classify_azure_error``) as one of three kinds, and maps it at the edge
(``raise ... from e``) to the ``CloudError`` tree below, which is all the runtime needs to decide
(retry later, verify by state, give up, hand the node to a human).

Kinds (``retry.FailureKind``):

* **refused** -- nothing ran: throttling (AWS ``Throttling``, ``ThrottlingException``,
  ``RequestLimitExceeded``; HTTP 429), a 4xx that proves the request was turned away and may
  pass later (Auto Scaling ``ResourceContention``, ``ScalingActivityInProgress``), a connection
  that was never established (connect refused, connect timeout, DNS, TLS handshake), our own
  fence (the leader lease is not held: nothing was sent). Retried, reads and mutations alike,
  with backoff until the retry policy's deadline.
* **ambiguous** -- the request may have been applied: a 5xx, a read timeout, a connection reset
  or closed after the request went out, the deadline cutting an attempt in flight, an exception
  no one expected. Reads retry;
  a mutating call raises ``AmbiguousOutcome`` at once and is never sent again.
* **failed** -- a definite answer that retrying cannot change: not found, validation, permission,
  no credentials. Raised as is (for a mutating call: nothing ran).

The tree::

    CloudError
    ├── Throttled            refused: the cloud asked us to slow down (escapes as DeadlineExceeded)
    ├── Fenced               refused: the leader lease is not (or not long enough) held; not sent
    ├── CloudUnavailable     connection not established (refused) or 5xx/reset/read timeout
    │                        (ambiguous); escapes as DeadlineExceeded or AmbiguousOutcome
    ├── AmbiguousOutcome     a mutating call may have been applied: verify by state, never resend
    ├── DeadlineExceeded     out of time on refusals (mutating: nothing ran) or on any read failure
    ├── RequestRejected      failed: a 4xx that proves nothing ran and will not pass by retrying
    ├── InstanceNotFound     failed: the instance (or operation) does not exist
    ├── NotAllowed           failed before any request: not in an allowed group / scale set
    ├── IdentityMismatch     failed before any request: Node <-> providerID <-> instance changed
    └── UnsupportedProviderId  failed before any request: not this provider's providerID
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from typing import Protocol, TypedDict


class OperationKind(enum.StrEnum):
    REPAIR = "repair"
    REBOOT = "reboot"
    REPLACE = "replace"


class InstanceState(enum.StrEnum):
    """Provider-neutral machine state (EC2 instance state / Azure power + provisioning state)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"  # also: no longer exists
    UNKNOWN = "unknown"


class OperationState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Instance:
    """The machine behind a Node, as the cloud sees it right now."""

    id: str  # AWS: i-0123...; Azure: the VMSS VM name, <scaleSet>_<instanceId>
    group: str  # Auto Scaling group / VM scale set name
    zone: str | None
    state: InstanceState
    provider_id: str  # the Node's spec.providerID this instance was resolved from


class OperationDict(TypedDict):
    id: str
    kind: str
    instance_id: str
    started: float
    provider: str
    token: str


@dataclass(frozen=True, slots=True)
class Operation:
    """A mutating call the cloud accepted. Serializable, so a restarted daemon polls it again
    (``Record.operation_id`` holds ``to_str()``) instead of repeating the call."""

    id: str  # SSM CommandId, ASG ActivityId, or an Azure async-operation id
    kind: OperationKind
    instance_id: str
    started: float  # epoch seconds
    provider: str  # "aws" | "azure" | "dry-run"
    # Opaque provider data needed to poll the operation again (e.g. Azure's operation URLs).
    token: str = ""

    def to_dict(self) -> OperationDict:
        raw = asdict(self)
        return OperationDict(
            id=raw["id"],
            kind=str(self.kind),
            instance_id=raw["instance_id"],
            started=raw["started"],
            provider=raw["provider"],
            token=raw["token"],
        )

    def to_str(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: OperationDict) -> Operation:
        try:
            return cls(
                id=str(raw["id"]),
                kind=OperationKind(raw["kind"]),
                instance_id=str(raw["instance_id"]),
                started=float(raw["started"]),
                provider=str(raw["provider"]),
                token=str(raw.get("token", "")),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"not a stored cloud operation: {e}") from e

    @classmethod
    def from_str(cls, text: str) -> Operation:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a stored cloud operation: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError("not a stored cloud operation: not a JSON object")
        return cls.from_dict(raw)  # type: ignore[arg-type]  # checked field by field in from_dict


@dataclass(frozen=True, slots=True)
class OperationStatus:
    state: OperationState
    detail: str = ""  # the cloud's status word or error message
    output: str = ""  # run-command output (repair)
    # While pending: when the cloud asked to be polled again (Azure's Retry-After), if it did.
    retry_after_s: float | None = None
    # Once done: a destructive call the operation still needs, made by ``follow_up(op, call)``
    # after the runtime recorded its intent. "capacity": a replace-by-delete is done and the
    # scale set's capacity must be restored.
    follow_up: str | None = None

    @property
    def done(self) -> bool:
        return self.state is not OperationState.PENDING


class CloudProvider(Protocol):
    """What the runtime may ask of a cloud. Mutating calls must go through ``GuardedProvider``."""

    @property
    def name(self) -> str:
        """``aws`` | ``azure``: the metric label and what ``Operation.provider`` says."""
        ...

    async def resolve(self, provider_id: str) -> Instance:
        """The instance behind a Node's providerID; ``NotAllowed`` outside the allowed groups."""
        ...

    async def repair(self, instance: Instance, command: str) -> Operation: ...

    async def reboot(self, instance: Instance) -> Operation: ...

    async def replace(self, instance: Instance) -> Operation: ...

    async def operation_status(self, op: Operation) -> OperationStatus:
        """One non-blocking look at an operation; the caller decides when to look again."""
        ...

    async def follow_up(self, op: Operation, call: str) -> Operation | None:
        """Make the destructive call ``OperationStatus.follow_up`` named for ``op`` (the caller
        recorded its intent first). ``None`` when nothing is needed (anymore). Follow the
        returned operation with ``operation_status``."""
        ...

    async def instance_state(self, instance: Instance) -> InstanceState: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class LeaseFence(Protocol):
    """The leader election, as a mutating call sees it right before each attempt."""

    def remaining_s(self) -> float | None:
        """Seconds the leader lease is still certainly held; ``<= 0``: not held; ``None``: this
        process takes no part in leader election (nothing to fence)."""
        ...


class CloudError(Exception):
    """Base of every error a provider raises."""


class Throttled(CloudError):
    """The cloud asked us to slow down. Retried inside the provider; escapes only as
    ``DeadlineExceeded``."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CloudUnavailable(CloudError):
    """5xx or connection failure (retried until the deadline), or no usable credentials."""


class RequestRejected(CloudError):
    """The cloud refused the request (4xx other than throttling/not-found: validation, permission).
    Not retried."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class AmbiguousOutcome(CloudError):
    """A mutating call may have been applied: the request went out and the answer was a 5xx, a
    read timeout or a reset connection. Never retried; the caller verifies by state (instance
    state, bootID, the operation) and escalates at the step deadline.

    ``operation``, when the provider can give one, is followed by state rather than by the
    cloud's own operation id (which was lost with the answer): poll it with ``operation_status``
    as if the call had succeeded (e.g. a terminate: done once the instance is gone; a
    replace-by-delete: done once the VM is gone, then ``follow_up`` "capacity")."""

    def __init__(self, message: str, operation: Operation | None = None) -> None:
        super().__init__(message)
        self.operation = operation


class Fenced(CloudError):
    """A mutating call was not sent: right before the attempt the leader lease was not held, or
    not for long enough to bound the attempt's timeouts. A refusal: nothing went out."""


class DeadlineExceeded(CloudError):
    """The call (with its retries) did not succeed within the provider's deadline."""


class InstanceNotFound(CloudError):
    """The instance no longer exists (or never did)."""


class NotAllowed(CloudError):
    """The instance is not in an allowed Auto Scaling group / scale set of the configuration."""


class IdentityMismatch(CloudError):
    """The Node, its providerID and the instance are no longer the ones recorded (§4 guard)."""


class UnsupportedProviderId(CloudError):
    """The providerID is not one this provider can act on (other cloud, malformed)."""
