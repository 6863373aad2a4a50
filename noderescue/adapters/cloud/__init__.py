"""Everything noderescue does to clouds.

Entry point: ``build_provider`` (in ``factory``) gives a cluster's ``ClusterCloud``: a
``GuardedProvider`` whose repair/reboot/replace take the recorded ``Target`` and re-check the
Node <-> providerID <-> instance identity right before the call, with the ``DryRunProvider``
recorder inside it in dry-run. Values and errors live in ``base``. The SDK-specific modules
(``aws``, ``azure``) are imported by the factory only, so importing this package stays cheap.
"""

from noderescue.adapters.cloud.base import (
    AmbiguousOutcome,
    CloudError,
    CloudProvider,
    CloudUnavailable,
    DeadlineExceeded,
    Fenced,
    IdentityMismatch,
    Instance,
    InstanceNotFound,
    InstanceState,
    LeaseFence,
    NotAllowed,
    Operation,
    OperationKind,
    OperationState,
    OperationStatus,
    RequestRejected,
    Throttled,
    UnsupportedProviderId,
)
from noderescue.adapters.cloud.dryrun import DryRunProvider, Intent
from noderescue.adapters.cloud.guard import GuardedProvider, NodeIdentity, NodeReader, Target
from noderescue.adapters.cloud.retry import FailureKind, RetryPolicy

__all__ = [
    "AmbiguousOutcome",
    "CloudError",
    "CloudProvider",
    "CloudUnavailable",
    "DeadlineExceeded",
    "DryRunProvider",
    "FailureKind",
    "Fenced",
    "GuardedProvider",
    "IdentityMismatch",
    "Instance",
    "InstanceNotFound",
    "InstanceState",
    "Intent",
    "LeaseFence",
    "NodeIdentity",
    "NodeReader",
    "NotAllowed",
    "Operation",
    "OperationKind",
    "OperationState",
    "OperationStatus",
    "RequestRejected",
    "RetryPolicy",
    "Target",
    "Throttled",
    "UnsupportedProviderId",
]
