"""YAML configuration -> validated, frozen settings (DESIGN §3), and their conversion to the
core's policy dataclasses.

Every problem of a file is reported at once, each with its YAML path and line:
pydantic collects the per-field errors, a second pass over the raw data adds the cross-field
checks (duplicate names, ladders vs. providers, notify placement), so one mistake never hides
another. No I/O beyond reading the one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from noderescue.config_checks import cross_checks
from noderescue.config_errors import ConfigError, ConfigIssue
from noderescue.config_messages import issue_from_pydantic
from noderescue.config_secrets import ENV_NAME, inline_secret_warnings, read_secret, redact_url, resolve_url
from noderescue.config_values import (
    describe,
    format_time,
    parse_action,
    parse_bind,
    parse_cloud_action,
    parse_condition_status,
    parse_dns_label,
    parse_duration,
    parse_duration_value,
    parse_http_url,
    parse_label_key,
    parse_label_value,
    parse_name,
    parse_quantity,
    parse_time_of_day,
    parse_timezone,
    parse_weekday,
    require_items,
    require_positive_duration,
    require_whole_seconds,
    resolve_path,
    value_error,
)
from noderescue.config_yaml import load_yaml
from noderescue.core import model as core
from noderescue.core.durations import format_duration
from noderescue.core.model import WEEKDAYS, Action, Quantity

__all__ = [
    "AwsSettings",
    "AzureSettings",
    "ClusterSettings",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "LeaderElectionSettings",
    "NotificationEvent",
    "WebhookSettings",
    "format_duration",
    "load_config",
    "load_config_report",
    "parse_config",
    "parse_config_report",
    "parse_duration",
]

# ------------------------------------------------------------------------------------------------
# Field types
# ------------------------------------------------------------------------------------------------

Duration = Annotated[float, BeforeValidator(parse_duration_value)]
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration_value), AfterValidator(require_positive_duration)
]
WholeSecondsDuration = Annotated[
    int, PlainValidator(lambda v: require_whole_seconds(parse_duration_value(v)))
]
Count = Annotated[Quantity, PlainValidator(parse_quantity)]
TimeOfDay = Annotated[int, PlainValidator(parse_time_of_day)]
Weekday = Annotated[int, PlainValidator(parse_weekday)]
TimeZoneName = Annotated[str, PlainValidator(parse_timezone)]
LabelKey = Annotated[str, PlainValidator(parse_label_key)]
LabelValue = Annotated[str, PlainValidator(parse_label_value)]
DnsLabel = Annotated[str, PlainValidator(parse_dns_label)]
Name = Annotated[str, PlainValidator(parse_name)]
HttpUrl = Annotated[str, PlainValidator(parse_http_url)]
BindAddress = Annotated[tuple[str, int], PlainValidator(parse_bind)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
NonEmpty = BeforeValidator(require_items)
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
ActionName = Annotated[Action, PlainValidator(parse_action)]
CloudActionName = Annotated[Action, PlainValidator(parse_cloud_action)]
FilePath = Annotated[Path, PlainValidator(resolve_path)]
ConditionStatus = Annotated[str, PlainValidator(parse_condition_status)]


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel)


# ------------------------------------------------------------------------------------------------
# Clusters
# ------------------------------------------------------------------------------------------------


class AwsSettings(_Settings):
    region: NonEmptyStr
    auto_scaling_groups: Annotated[tuple[NonEmptyStr, ...], NonEmpty]
    # Another endpoint for EC2/Auto Scaling/SSM (the emulator's moto server, a VPC endpoint).
    endpoint_url: HttpUrl | None = None
    # The SSM Command document a repair runs (deploy/aws/ssm-document.json, created under this
    # name); the IAM policy grants SendCommand with this document only.
    ssm_document: NonEmptyStr = "noderescue-repair"


class AzureSettings(_Settings):
    subscription_id: NonEmptyStr
    resource_group: NonEmptyStr
    scale_sets: Annotated[tuple[NonEmptyStr, ...], NonEmpty]
    arm_endpoint: HttpUrl | None = None  # default: the public Azure Resource Manager
    ca_bundle: FilePath | None = None  # extra CA for arm_endpoint (the emulator's self-signed cert)
    # How a replace is done: reimage in place (keeps the instance id) or delete and restore capacity.
    replace_mode: Literal["reimage", "delete"] = "reimage"


Provider = Literal["aws", "azure", "none"]


class ClusterSettings(_Settings):
    name: Name
    kubeconfig: FilePath | None = None  # None: in-cluster service account
    context: NonEmptyStr | None = None  # None: the kubeconfig's current context
    namespace: DnsLabel = "noderescue"  # holds the state ConfigMap and the leader Lease
    provider: Provider
    aws: AwsSettings | None = Field(default=None, validate_default=True)
    azure: AzureSettings | None = Field(default=None, validate_default=True)
    # Where a cloud node's zone comes from: the cloud (its instance's zone, which the node cannot
    # change) or the node's topology.kubernetes.io/zone label (which its kubelet may set).
    # Clusters with provider none always use the label.
    zone_from: Literal["cloud", "label"] = "cloud"

    @property
    def zone_from_cloud(self) -> bool:
        return self.zone_from == "cloud" and self.provider != "none"

    @field_validator("aws", "azure")
    @classmethod
    def _block_matches_provider(cls, value: BaseModel | None, info: ValidationInfo) -> BaseModel | None:
        provider = info.data.get("provider")
        if provider is None:  # the provider itself is invalid: reported there
            return value
        block = info.field_name
        if provider == block and value is None:
            keys = (
                "region, autoScalingGroups" if block == "aws" else "subscriptionId, resourceGroup, scaleSets"
            )
            raise value_error(
                "provider_block", f"provider is {block}: an {block} block is required ({{{keys}}})"
            )
        if provider != block and value is not None:
            raise value_error(
                "provider_block", f"an {block} block does not belong to a cluster with provider {provider}"
            )
        return value


# ------------------------------------------------------------------------------------------------
# Safety, notifications, HTTP
# ------------------------------------------------------------------------------------------------


class RateLimitSettings(_Settings):
    action: CloudActionName
    max: PositiveInt
    per: PositiveDuration

    def to_core(self) -> core.RateLimit:
        return core.RateLimit(action=self.action, max=self.max, per_s=self.per)


class AttemptsSettings(_Settings):
    count: PositiveInt
    per: PositiveDuration


def _default_rate_limits() -> tuple[RateLimitSettings, ...]:
    # Without an explicit `rateLimits`, a wave of false positives still cannot replace or reboot
    # more than a handful of machines an hour. An explicit `rateLimits: []` turns them off.
    return tuple(
        RateLimitSettings.model_validate(raw)
        for raw in (
            {"action": "replace", "max": 3, "per": "1h"},
            {"action": "reboot", "max": 5, "per": "1h"},
            {"action": "repair", "max": 10, "per": "1h"},
        )
    )


class SafetySettings(_Settings):
    max_unhealthy: Count = Quantity(40, percent=True)
    max_unhealthy_per_zone: Count = Quantity(50, percent=True)
    max_concurrent: PositiveInt = 2
    stale_after: PositiveDuration = 60.0
    rate_limits: tuple[RateLimitSettings, ...] = Field(default_factory=_default_rate_limits)
    max_attempts_per_node: AttemptsSettings = Field(
        default_factory=lambda: AttemptsSettings.model_validate({"count": 3, "per": "24h"})
    )

    def to_core(self) -> core.Safety:
        return core.Safety(
            max_unhealthy=self.max_unhealthy,
            max_unhealthy_per_zone=self.max_unhealthy_per_zone,
            max_concurrent=self.max_concurrent,
            stale_after_s=self.stale_after,
            rate_limits=tuple(limit.to_core() for limit in self.rate_limits),
            max_attempts=self.max_attempts_per_node.count,
            max_attempts_per_s=self.max_attempts_per_node.per,
        )


NotificationEvent = Literal["started", "succeeded", "failed", "shortCircuit", "needsHuman", "skipped"]
# `skipped` fires on every gate change of every node: opt-in only.
DEFAULT_NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "started",
    "succeeded",
    "failed",
    "shortCircuit",
    "needsHuman",
)


def _parse_secret_url(value: Any) -> str:
    # parse_http_url's message quotes the value; a webhook URL's path is its secret.
    if isinstance(value, str):
        scheme, sep, rest = value.strip().partition("://")
        if sep and scheme in ("http", "https") and rest and not rest.startswith("/"):
            return value.strip()
    raise value_error("url", f"invalid URL {redact_url(value)}: expected http://... or https://...")


def _parse_env_name(value: Any) -> str:
    if isinstance(value, str) and ENV_NAME.match(value):
        return value
    raise value_error(
        "env_name",
        f"expected an environment variable name (e.g. NODERESCUE_WEBHOOK_URL), got {describe(value)}",
    )


SecretUrl = Annotated[str, PlainValidator(_parse_secret_url)]
EnvName = Annotated[str, PlainValidator(_parse_env_name)]


class WebhookSettings(_Settings):
    """The URL (its path or query is the secret for Slack, Teams, Discord) comes from exactly one
    of ``url`` (inline: warned about), ``urlFile`` or ``urlEnv``; headers likewise from
    ``headers`` (inline), ``headersFile`` (header name -> file) or ``headersEnv`` (-> variable)."""

    type: Literal["webhook"]
    url: SecretUrl | None = None
    url_file: FilePath | None = None
    url_env: EnvName | None = None
    events: Annotated[tuple[NotificationEvent, ...], NonEmpty] = DEFAULT_NOTIFICATION_EVENTS
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization; never logged
    headers_file: dict[str, FilePath] = Field(default_factory=dict)
    headers_env: dict[str, EnvName] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_url_source(self) -> WebhookSettings:
        given = [
            key
            for key, value in (("url", self.url), ("urlFile", self.url_file), ("urlEnv", self.url_env))
            if value is not None
        ]
        if len(given) != 1:
            raise value_error(
                "secret_source",
                "give the webhook URL as exactly one of urlFile, urlEnv or url"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        names = [n.lower() for n in (*self.headers, *self.headers_file, *self.headers_env)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise value_error("secret_source", f"header {', '.join(twice)} is given more than once")
        return self

    def resolve_url(self, where: str = "webhook url") -> str:
        """The URL, read from its file or variable now (SecretError when it cannot be)."""
        value = read_secret(inline=self.url, file=self.url_file, env=self.url_env, where=where)
        return resolve_url(value, where)

    def resolve_headers(self, where: str = "webhook headers") -> dict[str, str]:
        """Every header, the secret ones read from their files or variables now."""
        headers = dict(self.headers)
        for name, file in self.headers_file.items():
            headers[name] = read_secret(inline=None, file=file, env=None, where=f"{where}.{name}")
        for name, env in self.headers_env.items():
            headers[name] = read_secret(inline=None, file=None, env=env, where=f"{where}.{name}")
        return headers


class HttpSettings(_Settings):
    bind: BindAddress = ("127.0.0.1", 9478)
    # Who may read /metrics and /status: `kubernetes` asks the API server (TokenReview +
    # SubjectAccessReview `get` on the path); `none` lets anyone who can connect; `auto` is
    # `kubernetes` in a pod and `none` elsewhere (where the default bind is loopback only).
    auth: Literal["auto", "none", "kubernetes"] = "auto"
    # The cluster that reviews the tokens when not the pod's own (off-cluster with auth kubernetes).
    auth_kubeconfig: FilePath | None = None


# The Lease says its duration in whole seconds (leaseDurationSeconds): a fraction would be
# rounded up there, and a standby would wait longer than this instance fences itself for.
LeaseSeconds = Annotated[
    int,
    PlainValidator(lambda v: require_whole_seconds(require_positive_duration(parse_duration_value(v)))),
]


class LeaderElectionSettings(_Settings):
    """One active instance per cluster through a Lease; client-go's defaults.

    A standby takes over ``leaseDuration`` after the leader's last renewal; the leader stops
    acting (fences itself) once its last renewal is older than ``renewDeadline``, which must
    therefore be shorter, and it retries every ``retryPeriod``, which must be shorter still.
    """

    lease_duration: LeaseSeconds = 15
    renew_deadline: PositiveDuration = 10.0
    retry_period: PositiveDuration = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        lease, renew = format_duration(self.lease_duration), format_duration(self.renew_deadline)
        if self.renew_deadline >= self.lease_duration:
            raise value_error(
                "leader_election",
                f"renewDeadline {renew} must be shorter than leaseDuration {lease}: the leader must "
                "stop acting before a standby may take over",
            )
        if self.retry_period >= self.renew_deadline:
            raise value_error(
                "leader_election",
                f"retryPeriod {format_duration(self.retry_period)} must be shorter than renewDeadline "
                f"{renew}: the leader would lose the lease between two renewals",
            )
        return self


# ------------------------------------------------------------------------------------------------
# Node classes
# ------------------------------------------------------------------------------------------------


class SelectorRequirementSettings(_Settings):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[LabelValue, ...] | None = Field(default=None, validate_default=True)

    @field_validator("values")
    @classmethod
    def _values_match_operator(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        # The same rule as Kubernetes' ValidateLabelSelectorRequirement.
        operator = info.data.get("operator")
        if operator in ("In", "NotIn") and not value:
            raise value_error("selector_values", f"values must be non-empty when operator is {operator}")
        if operator in ("Exists", "DoesNotExist") and value:
            raise value_error("selector_values", f"values may not be given when operator is {operator}")
        return value

    def to_core(self) -> core.SelectorRequirement:
        return core.SelectorRequirement(self.key, self.operator, frozenset(self.values or ()))

    def describe(self) -> str:
        values = ",".join(sorted(self.values or ()))
        return {
            "In": f"{self.key} in ({values})",
            "NotIn": f"{self.key} notin ({values})",
            "Exists": self.key,
            "DoesNotExist": f"!{self.key}",
        }[self.operator]


class SelectorSettings(_Settings):
    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    match_expressions: tuple[SelectorRequirementSettings, ...] = ()

    def to_core(self) -> core.Selector:
        return core.Selector(
            match_labels=tuple(sorted(self.match_labels.items())),
            match_expressions=tuple(req.to_core() for req in self.match_expressions),
        )

    def describe(self) -> str:
        """In kubectl's selector syntax; an empty selector selects every node."""
        parts = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        parts += [req.describe() for req in self.match_expressions]
        return ",".join(parts) or "(all nodes)"


NODE_LEASE = "NodeLease"


def _status_list(value: Any) -> Any:
    # `status: False` (a single value) means [False].
    return value if isinstance(value, list | tuple) else [value]


class RuleSettings(_Settings):
    """``{type, status: [...], for}`` for a node condition, or ``{type: NodeLease, staleFor}``."""

    type: NonEmptyStr
    status: Annotated[tuple[ConditionStatus, ...], BeforeValidator(_status_list), NonEmpty] | None = None
    for_: Duration | None = Field(default=None, alias="for")
    stale_for: PositiveDuration | None = None

    @model_validator(mode="after")
    def _shape_matches_type(self) -> RuleSettings:
        if self.type == NODE_LEASE:
            if self.status is not None or self.for_ is not None:
                raise value_error(
                    "rule_shape",
                    "a NodeLease rule takes only staleFor (e.g. {type: NodeLease, staleFor: 2m})",
                )
            if self.stale_for is None:
                raise value_error("rule_shape", "a NodeLease rule needs staleFor (e.g. staleFor: 2m)")
        else:
            if self.stale_for is not None:
                raise value_error(
                    "rule_shape",
                    f"staleFor is only for NodeLease rules; a {self.type} rule takes status and for",
                )
            if self.status is None or self.for_ is None:
                raise value_error(
                    "rule_shape",
                    f"a {self.type} rule needs status and for "
                    f"(e.g. {{type: {self.type}, status: [True], for: 5m}})",
                )
        return self

    def to_core(self) -> core.Rule:
        if self.type == NODE_LEASE:
            assert self.stale_for is not None  # checked by _shape_matches_type
            return core.LeaseRule(stale_for_s=self.stale_for)
        assert self.status is not None and self.for_ is not None
        return core.ConditionRule(type=self.type, statuses=frozenset(self.status), for_s=self.for_)

    def describe(self) -> str:
        if self.type == NODE_LEASE:
            return f"NodeLease stale {format_duration(self.stale_for or 0)}"
        statuses = ",".join(sorted(self.status or ()))
        return f"{self.type} in [{statuses}] for {format_duration(self.for_ or 0)}"


def _default_rules() -> tuple[RuleSettings, ...]:
    # Cluster API's MachineHealthCheck example and medik8s NHC: Ready False/Unknown for 5 minutes.
    return (RuleSettings.model_validate({"type": "Ready", "status": ["False", "Unknown"], "for": "5m"}),)


class WindowSettings(_Settings):
    days: Annotated[tuple[Weekday, ...], NonEmpty] = tuple(range(7))
    start: TimeOfDay
    end: TimeOfDay
    timezone: TimeZoneName = "UTC"
    overnight: bool = False  # the window crosses midnight (22:00-04:00); days name the opening day
    strict: bool = False  # also hold back a replace of a node that is already down

    @model_validator(mode="after")
    def _start_before_end(self) -> WindowSettings:
        start, end = format_time(self.start), format_time(self.end)
        if self.start == self.end:
            raise value_error("window", f"start and end are both {start}: the window would be empty")
        if self.start == 24 * 60:
            raise value_error("window", "start 24:00 is the end of the day; use 00:00")
        if self.end < self.start and not self.overnight:
            raise value_error(
                "window",
                f"end {end} is before start {start}: set overnight: true for a window that crosses midnight",
            )
        if self.end > self.start and self.overnight:
            raise value_error(
                "window",
                f"overnight is true but end {end} is after start {start}: an overnight window ends "
                "the next day before it starts (e.g. 22:00-04:00)",
            )
        return self

    def to_core(self) -> core.Window:
        return core.Window(
            days=frozenset(self.days),
            start=self.start,
            end=self.end,
            timezone=self.timezone,
            overnight=self.overnight,
            strict=self.strict,
        )

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(set(self.days)))
        return f"window {days} {format_time(self.start)}-{format_time(self.end)} {self.timezone}"


# A step's timeout runs from the step's start until health is verified (drain included).
DEFAULT_STEP_TIMEOUTS = {Action.REPAIR: 600.0, Action.REBOOT: 1200.0, Action.REPLACE: 1800.0}


class StepSettings(_Settings):
    action: ActionName
    timeout: PositiveDuration | None = Field(default=None, validate_default=True)
    command: NonEmptyStr | None = Field(default=None, validate_default=True)
    window: WindowSettings | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout_for_action(cls, value: float | None, info: ValidationInfo) -> float | None:
        action = info.data.get("action")
        if action is Action.NOTIFY:
            if value is not None:
                raise value_error("step", "notify has no timeout (it does not wait for anything)")
            return None
        if value is None and action is not None:
            return DEFAULT_STEP_TIMEOUTS[action]
        return value

    @field_validator("command")
    @classmethod
    def _command_only_on_repair(cls, value: str | None, info: ValidationInfo) -> str | None:
        action = info.data.get("action")
        # Whitespace only: the cloud would "succeed" at running nothing.
        if action is Action.REPAIR and (value is None or not value.strip()):
            raise value_error(
                "step", 'repair needs a command to run on the node (e.g. "systemctl restart kubelet")'
            )
        if action is not None and action is not Action.REPAIR and value is not None:
            raise value_error("step", f"command is only for repair steps, not {action.value}")
        return value

    @field_validator("window")
    @classmethod
    def _no_window_on_notify(
        cls, value: WindowSettings | None, info: ValidationInfo
    ) -> WindowSettings | None:
        if value is not None and info.data.get("action") is Action.NOTIFY:
            raise value_error("step", "notify does not wait for a window")
        return value

    def to_core(self) -> core.Step:
        return core.Step(
            action=self.action,
            timeout_s=self.timeout,
            command=self.command,
            window=self.window.to_core() if self.window else None,
        )

    def describe(self) -> str:
        details = [format_duration(self.timeout)] if self.timeout is not None else []
        if self.window is not None:
            details.append(self.window.describe())
        return f"{self.action.value}({', '.join(details)})" if details else self.action.value


class DrainSettings(_Settings):
    timeout: PositiveDuration = 600.0
    on_timeout: Literal["abort", "proceed"] = "abort"
    # kubectl drain's defaults: refuse to lose emptyDir data or pods no controller recreates.
    delete_empty_dir_data: bool = False
    force_bare_pods: bool = False
    grace_period: WholeSecondsDuration | None = None  # None: each pod's own grace period
    skip: bool = False  # no drain: pods are freed only after the instance is stopped
    # Stop waiting for a pod this long past its deletionTimestamp (its kubelet is down and will
    # never confirm); null: wait until the drain timeout.
    skip_wait_for_delete_timeout: PositiveDuration | None = 60.0

    def to_core(self) -> core.DrainPolicy:
        return core.DrainPolicy(
            timeout_s=self.timeout,
            on_timeout=self.on_timeout,
            delete_emptydir_data=self.delete_empty_dir_data,
            force_bare_pods=self.force_bare_pods,
            grace_period_s=self.grace_period,
            skip=self.skip,
            skip_wait_for_delete_s=self.skip_wait_for_delete_timeout,
        )


def _expand_step_shorthand(value: Any) -> Any:
    # `ladder: [notify]` is shorthand for `ladder: [{action: notify}]`.
    if isinstance(value, list):
        return [{"action": item} if isinstance(item, str) else item for item in value]
    return value


class NodeClassSettings(_Settings):
    name: Name
    selector: SelectorSettings | None = None
    # Auto Scaling groups / scale sets whose instances' nodes the class may select: the cloud
    # says which group a node's instance is in, so a node cannot move itself between classes.
    groups: tuple[NonEmptyStr, ...] = ()
    rules: Annotated[tuple[RuleSettings, ...], NonEmpty] = Field(default_factory=_default_rules)
    ladder: Annotated[tuple[StepSettings, ...], BeforeValidator(_expand_step_shorthand), NonEmpty]
    drain: DrainSettings = DrainSettings()
    max_unavailable: Count = Quantity(1)
    node_startup_timeout: PositiveDuration | None = None  # None: never-Ready nodes are not acted on

    @model_validator(mode="after")
    def _selects_something(self) -> NodeClassSettings:
        if self.selector is None and not self.groups:
            raise value_error(
                "class_selection",
                "a class needs a selector, groups, or both (selector: {} selects every node)",
            )
        return self

    def to_core(self) -> core.NodeClass:
        return core.NodeClass(
            name=self.name,
            selector=self.selector.to_core() if self.selector is not None else core.Selector(),
            groups=frozenset(self.groups),
            rules=tuple(rule.to_core() for rule in self.rules),
            ladder=tuple(step.to_core() for step in self.ladder),
            drain=self.drain.to_core(),
            max_unavailable=self.max_unavailable,
            node_startup_timeout_s=self.node_startup_timeout,
        )

    def summary(self) -> str:
        rules = ", ".join(rule.describe() for rule in self.rules)
        if self.node_startup_timeout is not None:
            rules += f", startup {format_duration(self.node_startup_timeout)}"
        ladder = ", ".join(step.describe() for step in self.ladder)
        selection = f"selector {self.selector.describe()}" if self.selector is not None else ""
        if self.groups:
            selection += ("; " if selection else "") + f"groups {', '.join(self.groups)}"
        return (
            f"{self.name}: {selection}; rules {rules}; ladder {ladder}; maxUnavailable {self.max_unavailable}"
        )


# ------------------------------------------------------------------------------------------------
# The root
# ------------------------------------------------------------------------------------------------


class Config(_Settings):
    dry_run: bool = False
    clusters: Annotated[tuple[ClusterSettings, ...], NonEmpty]
    safety: SafetySettings = Field(default_factory=SafetySettings)
    notifications: tuple[WebhookSettings, ...] = ()
    http: HttpSettings = HttpSettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    node_classes: Annotated[tuple[NodeClassSettings, ...], NonEmpty]

    @property
    def http_bind(self) -> tuple[str, int]:
        return self.http.bind

    def cluster(self, name: str) -> ClusterSettings:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(f"no cluster named {name!r} in the configuration")

    def policy(self, cluster_name: str) -> core.Policy:
        """The core's view of one cluster's configuration (KeyError for an unknown cluster)."""
        cluster = self.cluster(cluster_name)
        return core.Policy(
            cluster=cluster.name,
            provider=cluster.provider,
            safety=self.safety.to_core(),
            classes=tuple(cls.to_core() for cls in self.node_classes),
        )

    def summary_lines(self) -> list[str]:
        """One line per cluster, then one per class (first match wins, in this order)."""
        lines = [_cluster_summary(cluster, self.dry_run) for cluster in self.clusters]
        lines += [cls.summary() for cls in self.node_classes]
        return lines


def _cluster_summary(cluster: ClusterSettings, dry_run: bool) -> str:
    where = f"kubeconfig {cluster.kubeconfig}" if cluster.kubeconfig else "in-cluster config"
    if cluster.context:
        where += f" (context {cluster.context})"
    provider: str = cluster.provider
    if cluster.aws is not None:
        provider += f" {cluster.aws.region}, ASGs {', '.join(cluster.aws.auto_scaling_groups)}"
    if cluster.azure is not None:
        provider += (
            f" {cluster.azure.resource_group}, scale sets {', '.join(cluster.azure.scale_sets)}, "
            f"replace by {cluster.azure.replace_mode}"
        )
    mode = "; dry-run" if dry_run else ""
    return f"cluster {cluster.name}: provider {provider}; {where}; namespace {cluster.namespace}{mode}"


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def load_config(path: Path, *, dry_run_override: bool = False) -> Config:
    """Read and validate a configuration file; ``dry_run_override`` forces dry-run on."""
    return load_config_report(path, dry_run_override=dry_run_override)[0]


def load_config_report(path: Path, *, dry_run_override: bool = False) -> tuple[Config, list[ConfigIssue]]:
    """:func:`load_config`, plus the warnings: usable settings that should be changed (a
    secret written inline). ``check-config --strict`` turns them into errors."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError.file_problem(source, "no such file") from None
    except IsADirectoryError:
        raise ConfigError.file_problem(source, "is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError.file_problem(source, "permission denied") from None
    except OSError as exc:
        raise ConfigError.file_problem(source, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError.file_problem(
            source, f"not UTF-8 text (undecodable byte at offset {exc.start}); is this a configuration file?"
        ) from None
    config, warnings = parse_config_report(text, source, base_dir=path.absolute().parent)
    if dry_run_override and not config.dry_run:
        config = config.model_copy(update={"dry_run": True})
    return config, warnings


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None) -> Config:
    """Validate configuration text; relative file paths in it are taken relative to ``base_dir``."""
    return parse_config_report(text, source, base_dir=base_dir)[0]


def parse_config_report(
    text: str, source: str = "<string>", *, base_dir: Path | None = None
) -> tuple[Config, list[ConfigIssue]]:
    """:func:`parse_config` and the warnings (sorted by line)."""
    loaded = load_yaml(text, source)
    data = loaded.data
    if not isinstance(data, dict):
        raise ConfigError.file_problem(
            source,
            f"the top level must be a mapping (dryRun, clusters, nodeClasses, ...), got {describe(data)}",
        )
    issues = list(loaded.issues)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        issues += [issue_from_pydantic(error, loaded.lines, Config) for error in exc.errors()]
    issues += cross_checks(data, loaded.lines)
    if issues:
        issues.sort(key=lambda issue: (issue.line is None, issue.line or 0))
        raise ConfigError(issues, source)
    assert config is not None
    warnings = inline_secret_warnings(data, loaded.lines)
    warnings.sort(key=lambda issue: (issue.line is None, issue.line or 0))
    return config, warnings
