"""Label and field selectors, parsed from the query string as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from noderescue.sim.kubeapi.status import bad_request

LabelOp = Literal["=", "!=", "in", "notin", "exists", "!", "gt", "lt"]


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    op: LabelOp
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.op:
            case "=" | "in":
                return value is not None and value in self.values
            case "!=" | "notin":
                # A missing key satisfies != and notin, as in Kubernetes.
                return value is None or value not in self.values
            case "exists":
                return value is not None
            case "!":
                return value is None
            case "gt" | "lt":
                if value is None:
                    return False
                try:
                    have, want = int(value), int(next(iter(self.values)))
                except ValueError:
                    return False
                return have > want if self.op == "gt" else have < want


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s!=<>(),]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=<>(),]+)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside an `in (...)` value list."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text:
        return LabelSelector()
    requirements: list[LabelRequirement] = []
    for part in _split_top_level(text):
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            op: LabelOp = "in" if m["op"] == "in" else "notin"
            requirements.append(LabelRequirement(m["key"], op, values))
        elif m := _CMP_RE.match(part):
            symbol = m["op"]
            ops: dict[str, LabelOp] = {"=": "=", "==": "=", "!=": "!=", ">": "gt", "<": "lt"}
            requirements.append(LabelRequirement(m["key"], ops[symbol], frozenset({m["value"]})))
        elif m := _EXISTS_RE.match(part):
            requirements.append(LabelRequirement(m["key"], "!" if m["neg"] else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return LabelSelector(tuple(requirements))


def selector_from_match_labels(labels: Mapping[str, str]) -> LabelSelector:
    return LabelSelector(tuple(LabelRequirement(k, "=", frozenset({v})) for k, v in labels.items()))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: str
    value: str
    negate: bool


# Fields the real API server allows per resource (plus metadata.name/namespace everywhere).
_FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset({"spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy"}),
    "nodes": frozenset({"spec.unschedulable"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
}
_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def wanted(self, path: str) -> str | None:
        """The value an equality requirement on `path` asks for (used as an index hint)."""
        for r in self.requirements:
            if r.path == path and not r.negate:
                return r.value
        return None

    def matches(self, get: Callable[[str], str]) -> bool:
        return all((get(r.path) == r.value) != r.negate for r in self.requirements)


def parse_field_selector(text: str | None, resource: str) -> FieldSelector:
    if not text:
        return FieldSelector()
    allowed = _COMMON_FIELDS | _FIELDS.get(resource, frozenset())
    requirements: list[FieldRequirement] = []
    for part in text.split(","):
        if not part.strip():
            continue
        if "!=" in part:
            path, value = part.split("!=", 1)
            negate = True
        elif "==" in part:
            path, value = part.split("==", 1)
            negate = False
        elif "=" in part:
            path, value = part.split("=", 1)
            negate = False
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path = path.strip()
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        requirements.append(FieldRequirement(path, value.strip(), negate))
    return FieldSelector(tuple(requirements))


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field of a parsed object ("" when absent), as fields.Set has it."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        # A nil bool field selects as "false" (spec.unschedulable=false matches schedulable nodes).
        return "false" if path == "spec.unschedulable" else ""
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, Mapping) and path == "source":
        return str(current.get("component", ""))
    return str(current)
