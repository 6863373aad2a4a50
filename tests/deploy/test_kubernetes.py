"""The kustomize overlays render, and the rendered objects say what DESIGN §1, §5 and §6 promise:
a hardened two-replica Deployment with leader election, least-privilege RBAC, probes, alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    ALL_OVERLAYS,
    DAEMON_OVERLAYS,
    IN_CLUSTER,
    KUSTOMIZE_ROOT,
    MANAGEMENT_CLUSTER,
    TARGET_CLUSTER,
    Manifest,
    PolicyRule,
    config_map_data,
    only,
    render,
    rules_of,
)
from tests.deploy.promql import exported_metric_names, metric_names

HTTP_PORT = 9478
CONFIG_PATH = "/etc/noderescue/config.yaml"


def _container(deployment: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["noderescue"]
    return containers[0]


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port}"
    return int(numbers[0])


# ---------------------------------------------------------------------------------------------
# What each overlay renders
# ---------------------------------------------------------------------------------------------

DAEMON_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
    "NetworkPolicy",
}
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.mark.parametrize(
    ("overlay", "kinds"),
    [
        pytest.param(IN_CLUSTER, DAEMON_KINDS | RBAC_KINDS, id="in-cluster"),
        # The pods never call the management cluster's API server: no RBAC there.
        pytest.param(MANAGEMENT_CLUSTER, DAEMON_KINDS, id="management-cluster"),
        pytest.param(TARGET_CLUSTER, {"Namespace", "ServiceAccount"} | RBAC_KINDS, id="target-cluster"),
    ],
)
def test_overlay_renders_the_expected_kinds(overlay: str, kinds: set[str]) -> None:
    objects = render(overlay)
    assert {o["kind"] for o in objects} == kinds
    for obj in objects:
        if obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"].get("namespace"), (
                f"{obj['kind']} {obj['metadata']['name']} has no namespace"
            )


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in ALL_OVERLAYS])
def test_rendered_objects_validate_against_the_kubernetes_schema(overlay: str) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    unvalidated = []
    for obj in render(overlay):
        try:
            validate.validate(obj, "1.37.0", strict=True)
        except validate.SchemaNotFoundError:
            unvalidated.append(obj["kind"])
    # Only the Prometheus Operator CRDs have no schema in kubernetes-validate; they are checked
    # by hand below.
    assert set(unvalidated) <= {"ServiceMonitor", "PrometheusRule"}


def test_schema_validation_rejects_a_misspelt_field() -> None:
    """The check above must be able to fail: strict mode rejects unknown fields."""
    validate = pytest.importorskip("kubernetes_validate")
    deployment = only(render(IN_CLUSTER), "Deployment")
    _container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(validate.ValidationError):
        validate.validate(deployment, "1.37.0", strict=True)


# ---------------------------------------------------------------------------------------------
# The Deployment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in DAEMON_OVERLAYS])
def test_deployment_is_hardened(overlay: str) -> None:
    pod = only(render(overlay), "Deployment")["spec"]["template"]["spec"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert isinstance(pod_security["runAsUser"], int) and pod_security["runAsUser"] >= 10000
    assert isinstance(pod_security["runAsGroup"], int) and pod_security["runAsGroup"] >= 10000
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostNetwork", False) is False
    assert pod.get("hostPID", False) is False

    container = _container(only(render(overlay), "Deployment"))
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("runAsUser", pod_security["runAsUser"]) == pod_security["runAsUser"]

    image: str = container["image"]
    assert "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"))
    assert container["imagePullPolicy"] == "Always"

    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound

    # The only writable place: an emptyDir at /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for path, mount in mounts.items():
        if path != "/tmp":
            assert mount.get("readOnly") is True, path


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in DAEMON_OVERLAYS])
def test_probes_hit_healthz_and_readyz_on_the_http_port(overlay: str) -> None:
    container = _container(only(render(overlay), "Deployment"))
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert _port_number(container, probe["port"]) == HTTP_PORT


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in DAEMON_OVERLAYS])
def test_two_replicas_on_different_nodes_with_a_budget(overlay: str) -> None:
    objects = render(overlay)
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod_labels: dict[str, str] = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()

    # Required anti-affinity per node: the standby must survive the loss (or the drain) of
    # the node the leader runs on.
    terms = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and t["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for t in terms
    )

    pdb = only(objects, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in DAEMON_OVERLAYS])
def test_leader_election_identity_and_namespace_come_from_the_pod(overlay: str) -> None:
    deployment = only(render(overlay), "Deployment")
    env = {e["name"]: e for e in _container(deployment)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # A stopping leader releases its Lease after the running step's safe point (<= 30 s).
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


@pytest.mark.parametrize(
    ("overlay", "mounted"),
    [
        pytest.param(IN_CLUSTER, True, id="in-cluster-needs-its-token"),
        pytest.param(MANAGEMENT_CLUSTER, False, id="management-cluster-needs-no-token"),
    ],
)
def test_service_account_token_is_mounted_only_where_used(overlay: str, mounted: bool) -> None:
    objects = render(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is mounted
    assert only(objects, "ServiceAccount")["automountServiceAccountToken"] is False


# ---------------------------------------------------------------------------------------------
# The configuration in the ConfigMap
# ---------------------------------------------------------------------------------------------


def _parse_config(text: str, source: str) -> Any:
    try:
        from noderescue.config import parse_config
    except ImportError as exc:  # the config module is written in parallel
        pytest.skip(f"noderescue.config.parse_config does not import yet: {exc}")
    return parse_config(text, source)


@pytest.mark.parametrize(
    ("overlay", "in_cluster"),
    [
        pytest.param(IN_CLUSTER, True, id="in-cluster"),
        pytest.param(MANAGEMENT_CLUSTER, False, id="management-cluster"),
    ],
)
def test_configmap_holds_a_valid_config_bound_for_probes(overlay: str, in_cluster: bool) -> None:
    objects = render(overlay)
    name, data = config_map_data(objects, "noderescue-config")
    config = _parse_config(data["config.yaml"], f"{overlay}/config.yaml")
    # Probes and Prometheus come from outside the pod: bind all addresses on the probed port.
    assert config.http_bind == ("0.0.0.0", HTTP_PORT)

    deployment = only(objects, "Deployment")
    container = _container(deployment)
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[str(Path(CONFIG_PATH).parent)]]["configMap"]["name"] == name

    # The Lease and the state ConfigMap live where the Role lets noderescue write them.
    role_namespace = only(render(IN_CLUSTER), "Role", "noderescue")["metadata"]["namespace"]
    assert {c.namespace for c in config.clusters} == {role_namespace}

    kubeconfigs = [c.kubeconfig for c in config.clusters]
    if in_cluster:
        assert kubeconfigs == [None]
    else:
        # Every target kubeconfig comes from the mounted Secret.
        secret_mounts = [path for path, volume in mounts.items() if "secret" in volumes[volume]]
        assert len(secret_mounts) == 1
        assert kubeconfigs and all(
            k is not None and Path(secret_mounts[0]) in Path(k).parents for k in kubeconfigs
        )


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(KUSTOMIZE_ROOT / "base" / "config.yaml", id="base"),
        pytest.param(
            KUSTOMIZE_ROOT / "overlays" / "management-cluster" / "config.yaml", id="management-cluster"
        ),
    ],
)
def test_config_copy_still_validates_with_noderescue(path: Path) -> None:
    """The copies under deploy/ (kustomize cannot read ../../config.example.yaml) stay valid
    when the configuration schema changes."""
    config = _parse_config(path.read_text(), str(path))
    assert config.clusters


# ---------------------------------------------------------------------------------------------
# RBAC
# ---------------------------------------------------------------------------------------------

# The whole grant, exactly (DESIGN §1, §5, §6): a new rule must be added here on purpose.
CLUSTER_RULES = {
    ("", "nodes"): {"get", "list", "watch", "patch", "delete"},
    ("", "pods"): {"get", "list"},
    ("", "pods/eviction"): {"create"},
    ("apps", "daemonsets"): {"get"},
    ("policy", "poddisruptionbudgets"): {"get", "list"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
NAMESPACE_RULES: Grants = {
    ("coordination.k8s.io", "leases", ()): {"get", "create", "update"},
    ("", "configmaps", ()): {"get", "list", "create", "update", "delete"},
}
NODE_LEASE_RULES: Grants = {("coordination.k8s.io", "leases", ()): {"get", "list", "watch"}}


Grants = dict[tuple[str, str, tuple[str, ...]], set[str]]


def _grants(rules: list[PolicyRule]) -> Grants:
    """(apiGroup, resource, resourceNames) -> verbs, flattened from a role's rules."""
    grants: Grants = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource, tuple(rule.get("resourceNames", [])))
                grants.setdefault(key, set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize(
    "overlay", [pytest.param(IN_CLUSTER, id="in-cluster"), pytest.param(TARGET_CLUSTER, id="target-cluster")]
)
def test_rbac_is_exactly_the_least_privilege_grant(overlay: str) -> None:
    objects = render(overlay)
    cluster_grants = _grants(rules_of(only(objects, "ClusterRole", "noderescue")))
    assert cluster_grants == {(g, r, ()): verbs for (g, r), verbs in CLUSTER_RULES.items()}
    assert _grants(rules_of(only(objects, "Role", "noderescue"))) == NAMESPACE_RULES
    heartbeats = only(objects, "Role", "noderescue-node-heartbeats")
    assert heartbeats["metadata"]["namespace"] == "kube-node-lease"
    assert _grants(rules_of(heartbeats)) == NODE_LEASE_RULES

    # Every binding gives its role to the ServiceAccount noderescue runs as, and to nobody else.
    service_account = only(objects, "ServiceAccount")["metadata"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in (o for o in objects if o["kind"] == kind):
            assert binding["subjects"] == [
                {
                    "kind": "ServiceAccount",
                    "name": service_account["name"],
                    "namespace": service_account["namespace"],
                }
            ]


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.rsplit("/", 1)[-1]) for o in ALL_OVERLAYS])
def test_rbac_grants_nothing_on_secrets_and_no_wildcards(overlay: str) -> None:
    for role in (o for o in render(overlay) if o["kind"] in {"ClusterRole", "Role"}):
        for rule in rules_of(role):
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            for values in (rule["apiGroups"], rule["resources"], rule["verbs"]):
                assert "*" not in values, (role["metadata"]["name"], values)


def test_leases_and_state_configmap_are_writable_in_the_daemons_namespace_only() -> None:
    objects = render(IN_CLUSTER)
    namespace = only(objects, "Deployment")["metadata"]["namespace"]
    role = only(objects, "Role", "noderescue")
    assert role["metadata"]["namespace"] == namespace
    binding = only(objects, "RoleBinding", "noderescue")
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "noderescue",
    }
    cluster_resources = {r for rule in rules_of(only(objects, "ClusterRole")) for r in rule["resources"]}
    assert not cluster_resources & {"leases", "configmaps"}


# ---------------------------------------------------------------------------------------------
# Network, scraping, alerts
# ---------------------------------------------------------------------------------------------


def test_network_policy_admits_only_the_http_port() -> None:
    objects = render(IN_CLUSTER)
    container = _container(only(objects, "Deployment"))
    policy = only(objects, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = [p for rule in policy["ingress"] for p in rule["ports"]]
    assert [_port_number(container, p["port"]) for p in ports] == [HTTP_PORT]
    assert all("ports" in rule for rule in policy["egress"]), "an egress rule without ports allows everything"


def test_service_and_service_monitor_scrape_the_http_port() -> None:
    objects = render(IN_CLUSTER)
    container = _container(only(objects, "Deployment"))
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert _port_number(container, port["targetPort"]) == HTTP_PORT

    monitor = only(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"


REQUIRED_ALERTS = [
    pytest.param("NoderescueShortCircuit", {"noderescue_short_circuit"}, id="short-circuit"),
    pytest.param(
        "NoderescueNeedsHuman", {"noderescue_nodes", "noderescue_remediations_total"}, id="needs-human"
    ),
    pytest.param("NoderescueRemediationFailed", {"noderescue_remediations_total"}, id="failed-remediations"),
    pytest.param("NoderescueWatchStale", {"noderescue_watch_last_sync_timestamp_seconds"}, id="watch-stale"),
    pytest.param("NoderescueNoLeader", {"noderescue_leader"}, id="no-leader"),
]


def _alerts() -> dict[str, dict[str, Any]]:
    rule = only(render(IN_CLUSTER), "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


@pytest.mark.parametrize(("alert", "metrics"), REQUIRED_ALERTS)
def test_required_alert_watches_its_metric(alert: str, metrics: set[str]) -> None:
    rule = _alerts()[alert]
    assert metric_names(rule["expr"]) == metrics
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]


def test_every_alert_parses_and_names_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for name, rule in _alerts().items():
        assert metric_names(rule["expr"]) <= exported, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        yaml.safe_dump(rule)  # plain data, no YAML-only constructs
