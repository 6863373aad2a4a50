"""Object validation the real API server applies to ConfigMaps, with its error shapes.

noderescue keeps its durable records in ConfigMaps named after nodes, so the rules a name, a
label or the data must follow (and what the server answers when they are broken) must hold here
as they do against a real cluster: an emulator that accepted a 300-character name would let a
store pass its tests and fail in production.
"""

from __future__ import annotations

import re
from typing import Any

from noderescue.sim.kubeapi.status import ApiError, bad_request, invalid

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MAX = 253
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_VALUE_MAX = 63
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MAX = 253
# The API server's limit on a ConfigMap's data (the same as a Secret's): 1 MiB.
MAX_CONFIGMAP_BYTES = 1024 * 1024


def _invalid_value(kind: str, name: str, field: str, value: str, why: str) -> ApiError:
    return invalid(kind, name, f'{field}: Invalid value: "{value}": {why}')


def validate_name(kind: str, name: str) -> None:
    if len(name) > _SUBDOMAIN_MAX:
        raise _invalid_value(kind, name, "metadata.name", name, "must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(name):
        raise _invalid_value(
            kind,
            name,
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
            "regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )


def validate_label_values(kind: str, name: str, labels: object) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise bad_request("metadata.labels must be an object of strings")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise bad_request(f"json: cannot unmarshal label {key!r} into a string")
        if len(value) > _LABEL_VALUE_MAX:
            raise _invalid_value(kind, name, "metadata.labels", value, "must be no more than 63 characters")
        if not _LABEL_VALUE.match(value):
            raise _invalid_value(
                kind,
                name,
                "metadata.labels",
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character",
            )


def validate_configmap(obj: dict[str, Any]) -> None:
    """Raise the ``ApiError`` the real server would answer for this ConfigMap, if any."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if name:  # a missing name is refused by the store (or generated from generateName)
        validate_name("ConfigMap", name)
    validate_label_values("ConfigMap", name, meta.get("labels"))
    total = 0
    for field in ("data", "binaryData"):
        section = obj.get(field)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise bad_request(f"json: cannot unmarshal into Go struct field ConfigMap.{field} of type map")
        for key, value in section.items():
            if not isinstance(value, str):
                raise bad_request(
                    f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                    f"ConfigMap.{field} of type string"
                )
            if len(key) > _CONFIG_KEY_MAX or not _CONFIG_KEY.match(key):
                raise _invalid_value(
                    "ConfigMap",
                    name,
                    f"{field}[{key}]",
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                    "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', "
                    "regex used for validation is '[-._a-zA-Z0-9]+')",
                )
            total += len(value.encode()) if field == "data" else len(value) * 3 // 4
    if total > MAX_CONFIGMAP_BYTES:
        raise invalid("ConfigMap", name, f"[]: Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes")
