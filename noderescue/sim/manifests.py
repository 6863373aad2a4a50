"""Realistic object bodies for the emulated cluster: what a kubelet, a scheduler and the
controllers would have written."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from noderescue.sim.kubeapi.timestamps import rfc3339, rfc3339_micro

KUBELET_VERSION = "v1.36.0"
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

# Kubelet-owned conditions, healthy state: (type, status, reason, message).
BASE_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)
KUBELET_CONDITION_TYPES = frozenset({"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"})
# The EKS node monitoring agent's conditions are healthy when True (NPD's are healthy when False).
HEALTHY_WHEN_TRUE = frozenset(
    {
        "Ready",
        "AcceleratedHardwareReady",
        "StorageReady",
        "NetworkingReady",
        "KernelReady",
        "ContainerRuntimeReady",
    }
)


def condition(ctype: str, status: str, reason: str, message: str, at: float | None = None) -> dict[str, Any]:
    stamp = rfc3339(at)
    return {
        "type": ctype,
        "status": status,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def internal_ip(index: int) -> str:
    """The node's InternalIP: made-up data in the objects, never an address anything connects to."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255 or 1}"


def region_of(zone: str) -> str:
    return zone[:-1] if zone and zone[-1].isalpha() and zone[-2:-1].isdigit() else zone


def node(
    name: str, *, labels: Mapping[str, str], zone: str, provider_id: str, index: int, ready: bool = True
) -> dict[str, Any]:
    all_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": "m5.xlarge",
        "topology.kubernetes.io/region": region_of(zone),
        "topology.kubernetes.io/zone": zone,
        **labels,
    }
    ready_condition = (
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if ready
        else condition(
            "Ready", "False", "KubeletNotReady", "container runtime status check may not have completed yet"
        )
    )
    machine = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
    resources = {
        "cpu": "4",
        "ephemeral-storage": "104845292Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "16097236Ki",
        "pods": "110",
    }
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"providerID": provider_id},
        "status": {
            "capacity": resources,
            "allocatable": {**resources, "cpu": "3920m", "memory": "15080404Ki"},
            "conditions": [condition(*c) for c in BASE_CONDITIONS] + [ready_condition],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip(index)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": str(uuid.UUID(machine)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": "6.1.0-28-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def lease(node_name: str, node_uid: str, renew_at: float) -> dict[str, Any]:
    return {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": node_name,
            "namespace": NODE_LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": rfc3339_micro(renew_at),
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def owner_ref(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def replicaset(name: str, namespace_: str, replicas: int, selector: Mapping[str, str]) -> dict[str, Any]:
    return {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace_, "labels": dict(selector), "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": dict(selector)},
                "spec": {"containers": [{"name": "app", "image": PAUSE_IMAGE}]},
            },
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "observedGeneration": 1,
        },
    }


def daemonset(name: str, namespace_: str) -> dict[str, Any]:
    selector = {"app.kubernetes.io/name": name}
    return {
        "kind": "DaemonSet",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace_, "labels": selector, "generation": 1},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": name, "image": PAUSE_IMAGE}]},
            },
        },
        "status": {
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
        },
    }


def pdb(
    name: str,
    namespace_: str,
    selector: Mapping[str, str],
    *,
    max_unavailable: int | str | None,
    min_available: int | str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(selector)}}
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    if min_available is not None:
        spec["minAvailable"] = min_available
    return {
        "kind": "PodDisruptionBudget",
        "apiVersion": "policy/v1",
        "metadata": {"name": name, "namespace": namespace_, "generation": 1},
        "spec": spec,
        "status": {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0},
    }


def pod(
    name: str,
    namespace_: str,
    *,
    labels: Mapping[str, str],
    node_name: str | None,
    owner: dict[str, Any] | None,
    ready: bool,
    empty_dir: bool = False,
    annotations: Mapping[str, str] | None = None,
    host_ip: str = "",
    pod_ip: str = "",
) -> dict[str, Any]:
    now = rfc3339()
    containers: list[dict[str, Any]] = [{"name": "app", "image": PAUSE_IMAGE, "resources": {}}]
    spec: dict[str, Any] = {
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        containers[0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace_, "labels": dict(labels)}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    if annotations:
        metadata["annotations"] = dict(annotations)
    status: dict[str, Any]
    if node_name is None:
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/0 nodes are available: no schedulable Ready node.",
                    "lastTransitionTime": now,
                }
            ],
            "qosClass": "BestEffort",
        }
    else:
        spec["nodeName"] = node_name
        status = {
            "phase": "Running",
            "conditions": pod_conditions(ready, now),
            "hostIP": host_ip,
            "podIP": pod_ip,
            "startTime": now,
            "containerStatuses": [container_status(ready, now)],
            "qosClass": "BestEffort",
        }
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}


def pod_conditions(ready: bool, at: str) -> list[dict[str, Any]]:
    flag = "True" if ready else "False"
    out = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": at},
        {"type": "Ready", "status": flag, "lastTransitionTime": at},
    ]
    if not ready:
        for c in out[2:]:
            c["reason"] = "ContainersNotReady"
    return out


def container_status(ready: bool, at: str) -> dict[str, Any]:
    return {
        "name": "app",
        "ready": ready,
        "started": ready,
        "restartCount": 0,
        "image": PAUSE_IMAGE,
        "imageID": "",
        "containerID": f"containerd://{uuid.uuid4().hex}",
        "state": {"running": {"startedAt": at}},
    }


def node_event(
    node_name: str, node_uid: str, *, reason: str, message: str, type_: str, component: str
) -> dict[str, Any]:
    now = rfc3339()
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": f"{node_name}.{uuid.uuid4().hex[:16]}", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": node_name, "uid": node_uid, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "source": {"component": component, "host": node_name}
        if component == "kubelet"
        else {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": node_name if component == "kubelet" else "",
    }
