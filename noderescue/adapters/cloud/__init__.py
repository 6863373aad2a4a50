"""Everything noderescue does to clouds (issue 5, DESIGN §1, §4).

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
    IdentityMismatch,
    Instance,
    InstanceNotFound,
    InstanceState,
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
from noderescue.adapters.cloud.retry import RetryPolicy

__all__ = [
    "AmbiguousOutcome",
    "CloudError",
    "CloudProvider",
    "CloudUnavailable",
    "DeadlineExceeded",
    "DryRunProvider",
    "GuardedProvider",
    "IdentityMismatch",
    "Instance",
    "InstanceNotFound",
    "InstanceState",
    "Intent",
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
