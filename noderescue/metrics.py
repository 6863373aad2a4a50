"""The Prometheus metrics of DESIGN §6, defined once for the adapters and the runtime.

Each process has one registry (``REGISTRY``); tests that need isolation build their own with
``Metrics(CollectorRegistry())``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.nodes = Gauge(
            "noderescue_nodes", "Nodes by class and health.", ["cluster", "class", "health"],
            registry=registry,
        )
        self.remediations = Counter(
            "noderescue_remediations_total", "Finished remediation steps by result.",
            ["cluster", "class", "action", "result"], registry=registry,
        )
        self.remediation_duration = Histogram(
            "noderescue_remediation_duration_seconds", "Time from start to result of a remediation.",
            ["cluster", "class", "action"], buckets=DURATION_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge(
            "noderescue_in_flight", "Remediations in flight.", ["cluster", "class"], registry=registry
        )
        self.gate_blocked = Gauge(
            "noderescue_gate_blocked", "Unhealthy nodes held back, by gate.",
            ["cluster", "class", "gate"], registry=registry,
        )
        self.short_circuit = Gauge(
            "noderescue_short_circuit", "1 while the class's short-circuit is active.",
            ["cluster", "class"], registry=registry,
        )
        self.rate_limited = Counter(
            "noderescue_rate_limited_total", "Actions held back by a rate limit.",
            ["cluster", "action"], registry=registry,
        )
        self.watch_last_sync = Gauge(
            "noderescue_watch_last_sync_timestamp_seconds",
            "Last time the cluster's watch was confirmed current.", ["cluster"], registry=registry,
        )
        self.leader = Gauge(
            "noderescue_leader", "1 while this process holds the cluster's leader Lease.",
            ["cluster"], registry=registry,
        )
        self.cloud_api_calls = Counter(
            "noderescue_cloud_api_calls_total", "Cloud API calls by operation and result.",
            ["provider", "operation", "result"], registry=registry,
        )
        self.dry_run = Gauge("noderescue_dry_run", "1 in dry-run mode.", registry=registry)
        self.node_fields_truncated = Counter(
            "noderescue_node_fields_truncated_total",
            "Node-written fields cut to their cap on the way into the watch cache (a node "
            "writing oversized or too many values), by field.",
            ["cluster", "field"], registry=registry,
        )


REGISTRY = CollectorRegistry()
METRICS = Metrics(REGISTRY)
