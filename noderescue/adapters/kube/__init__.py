"""Everything noderescue reads from and does to Kubernetes.

Entry points: ``make_api_client`` (one client per cluster), ``NodeCache`` (the watch cache),
``KubeAdapter`` / ``DryRunKubeActions`` (the ``KubeActions`` the runtime mutates through),
``LeaderElector``, ``StateStore`` (history and pause), ``RecordStore`` (remediation records and
replacement claims in noderescue's own namespace), ``record_from_json``.
"""

from noderescue.adapters.kube.actions import DryRunKubeActions, KubeActions, KubeAdapter
from noderescue.adapters.kube.cache import NodeCache
from noderescue.adapters.kube.client import make_api_client
from noderescue.adapters.kube.drain import DrainOutcome, DrainProgress, apply_on_timeout, drain_node
from noderescue.adapters.kube.errors import (
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from noderescue.adapters.kube.events import EventRecorder
from noderescue.adapters.kube.leader import LeaderElector
from noderescue.adapters.kube.record_store import (
    Claim,
    LoadedRecords,
    MalformedClaim,
    RecordStore,
    claim_object_name,
    record_object_name,
)
from noderescue.adapters.kube.records import (
    MalformedRecord,
    NodeIdentityChanged,
    StaleRecord,
    record_from_json,
    record_to_json,
    write_record,
)
from noderescue.adapters.kube.state import StateStore

__all__ = [
    "Claim",
    "Conflict",
    "DrainOutcome",
    "DrainProgress",
    "DryRunKubeActions",
    "EventRecorder",
    "Expired",
    "Forbidden",
    "Invalid",
    "KubeActions",
    "KubeAdapter",
    "KubeError",
    "LeaderElector",
    "LoadedRecords",
    "MalformedClaim",
    "MalformedRecord",
    "NodeCache",
    "NodeIdentityChanged",
    "NotFound",
    "RecordStore",
    "StaleRecord",
    "StateStore",
    "TooManyRequests",
    "Unavailable",
    "apply_on_timeout",
    "claim_object_name",
    "drain_node",
    "make_api_client",
    "record_from_json",
    "record_object_name",
    "record_to_json",
    "write_record",
]
