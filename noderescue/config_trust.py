"""What a node can forge: the labels a kubelet may set on its own Node, and the configuration's
classes that trust them alone (``check-config`` warns about those).

A kubelet may create and update its own Node, labels included. The NodeRestriction admission
plugin (on in every production cluster) keeps it from setting two kinds of labels:

- anything under ``node-restriction.kubernetes.io/`` (and its subdomains): set by whoever
  provisions the node (a provisioner, cloud-init with admin credentials, a controller), never by
  the kubelet itself; the label prefix Kubernetes reserves for exactly this;
- labels under ``kubernetes.io/`` and ``k8s.io/`` (and their subdomains, e.g.
  ``node-role.kubernetes.io/``), except the ones kubelets set themselves: host name, zone and
  region, instance type, OS, architecture, and ``kubelet.kubernetes.io/`` / ``node.kubernetes.io/``.

Everything else (``noderescue.io/class``, ``topology.kubernetes.io/zone``, team labels) a
compromised node can set on itself, and so move itself into or out of a class.
"""

from __future__ import annotations

from noderescue.config import Config

NODE_RESTRICTION_NAMESPACE = "node-restriction.kubernetes.io"
# The kubernetes.io labels a kubelet may set on its own Node.
_KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
    }
)
_KUBELET_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _in(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def node_settable(key: str) -> bool:
    """May a kubelet set (or change, or remove) the label ``key`` on its own Node?"""
    namespace, slash, _ = key.partition("/")
    if not slash:
        return True
    if _in(namespace, NODE_RESTRICTION_NAMESPACE):
        return False
    if _in(namespace, "kubernetes.io") or _in(namespace, "k8s.io"):
        return key in _KUBELET_LABELS or any(_in(namespace, ns) for ns in _KUBELET_NAMESPACES)
    return True


def trust_warnings(config: Config) -> list[str]:
    """Classes that select nodes by labels their own kubelets may set, and nothing else; groups
    that no cluster manages."""
    warnings: list[str] = []
    managed: set[str] = set()
    for cluster in config.clusters:
        if cluster.aws is not None:
            managed.update(cluster.aws.auto_scaling_groups)
        if cluster.azure is not None:
            managed.update(cluster.azure.scale_sets)
    for index, cls in enumerate(config.node_classes):
        where = f"nodeClasses[{index}] ({cls.name})"
        unknown = [group for group in cls.groups if group not in managed]
        if unknown:
            warnings.append(
                f"{where}: groups {', '.join(unknown)} are not configured for any cluster "
                "(autoScalingGroups / scaleSets): the class selects no node there"
            )
        if cls.groups or cls.selector is None:
            continue
        keys = [k for k, _ in cls.selector.match_labels.items()]
        keys += [req.key for req in cls.selector.match_expressions]
        if keys and all(node_settable(key) for key in keys):
            warnings.append(
                f"{where}: selects nodes only by labels a kubelet may set on its own Node "
                f"({', '.join(sorted(set(keys)))}), so a compromised node can move itself into or "
                "out of the class; select by groups, or by a node-restriction.kubernetes.io/ label "
                "set by the provisioner"
            )
    return warnings
