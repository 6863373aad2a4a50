"""The resource types the emulated API server serves, with what discovery says about them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    storage: str = ""  # the store bucket; core/v1 and events.k8s.io/v1 Events share one
    # Whether the main resource ignores status changes (status goes through the /status subresource).
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def bucket(self) -> str:
        return self.storage or self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_READ = ("get", "list", "watch")

NODES = ResourceType(
    "",
    "v1",
    "nodes",
    "node",
    "Node",
    False,
    _ALL,
    ("no",),
    (Subresource("status", "Node", ("get", "patch", "update")),),
    status_subresource=True,
)
PODS = ResourceType(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    True,
    _ALL,
    ("po",),
    (
        Subresource("eviction", "Eviction", ("create",), "policy", "v1"),
        Subresource("status", "Pod", ("get", "patch", "update")),
    ),
    status_subresource=True,
)
NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "namespace",
    "Namespace",
    False,
    ("create", "delete", "get", "list", "patch", "update", "watch"),
    ("ns",),
)
CONFIGMAPS = ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, _ALL, ("cm",))
CORE_EVENTS = ResourceType("", "v1", "events", "event", "Event", True, _ALL, ("ev",), storage="events")
EVENTS_V1 = ResourceType(
    "events.k8s.io", "v1", "events", "event", "Event", True, _ALL, ("ev",), storage="events"
)
DAEMONSETS = ResourceType(
    "apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, _READ, ("ds",), status_subresource=True
)
REPLICASETS = ResourceType(
    "apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, _READ, ("rs",), status_subresource=True
)
PDBS = ResourceType(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "poddisruptionbudget",
    "PodDisruptionBudget",
    True,
    _ALL,
    ("pdb",),
    (Subresource("status", "PodDisruptionBudget", ("get", "patch", "update")),),
    status_subresource=True,
)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, _ALL)

RESOURCES: tuple[ResourceType, ...] = (
    NODES,
    PODS,
    NAMESPACES,
    CONFIGMAPS,
    CORE_EVENTS,
    EVENTS_V1,
    DAEMONSETS,
    REPLICASETS,
    PDBS,
    LEASES,
)
GROUP_VERSIONS: dict[str, tuple[str, ...]] = {
    "apps": ("v1",),
    "policy": ("v1",),
    "coordination.k8s.io": ("v1",),
    "events.k8s.io": ("v1",),
}
_BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def in_group_version(group: str, version: str) -> list[ResourceType]:
    return [r for r in RESOURCES if r.group == group and r.version == version]
