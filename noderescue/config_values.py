"""The configuration's value types: durations, counts-or-percentages, times of day, timezones,
Kubernetes label keys and values, bind addresses.

Each ``parse_*`` function turns a YAML value into a Python value or raises ``PydanticCustomError``
with an operator-facing message; ``config.py`` wraps them into pydantic field types.

Durations are ``<number><unit>`` groups, largest unit first: ``500ms``, ``90s``, ``5m``, ``1h30m``,
``2h``, ``1d``, ``1.5h``. Milliseconds are accepted because tests and the emulator run on small time
scales; units must not repeat or go up (``5m1h`` is refused as a likely typo). A bare number is
refused: ``300`` could mean seconds or minutes, and the mistake is expensive either way.
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo
from pydantic_core import PydanticCustomError

from noderescue.core.durations import format_duration
from noderescue.core.durations import trim_number as _trim
from noderescue.core.model import CLOUD_ACTIONS, WEEKDAYS, Action, Quantity

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("d", "h", "m", "s", "ms")
_DURATION_GROUP = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
DURATION_HINT = "use a number with a unit, e.g. 90s, 5m, 1h30m, 2h or 1d"


def value_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message is shown to the operator as is."""
    # The message travels in the context so that braces in user input are never interpreted.
    return PydanticCustomError(kind, "{message}", {"message": message})


def describe(value: Any) -> str:
    """How a YAML value reads in a message: 'a list', 'the number 5', "'abc'"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


# ------------------------------------------------------------------------------------------------
# Durations
# ------------------------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """``"1h30m"`` -> ``5400.0``. Raises ValueError for anything else (bare numbers included)."""
    stripped = text.strip()
    position = 0
    total = 0.0
    last_unit = -1
    for match in _DURATION_GROUP.finditer(stripped):
        if match.start() != position:
            break
        unit_rank = _UNIT_ORDER.index(match.group(2))
        if unit_rank <= last_unit:
            raise ValueError(f"invalid duration {text!r}: units must go from largest to smallest")
        last_unit = unit_rank
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise ValueError(f"invalid duration {text!r}")
    return total


def parse_duration_value(value: Any) -> float:
    """A YAML value as a duration in seconds (>= 0)."""
    if isinstance(value, bool):
        raise value_error("duration", f"invalid duration {describe(value)}: {DURATION_HINT}")
    if isinstance(value, int | float):
        number = _trim(float(value))
        raise value_error(
            "duration_unit",
            f"invalid duration {number}: a bare number has no unit; write e.g. {number}s or {number}m",
        )
    if not isinstance(value, str):
        raise value_error("duration", f"invalid duration: expected text like 5m, got {describe(value)}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise value_error("duration", f"{exc} ({DURATION_HINT})") from None


def require_positive_duration(seconds: float) -> float:
    if seconds <= 0:
        raise value_error("duration_zero", "must be longer than 0s")
    return seconds


def require_whole_seconds(seconds: float) -> int:
    if seconds != int(seconds):
        raise value_error("duration_whole", f"must be whole seconds, got {format_duration(seconds)}")
    return int(seconds)


# ------------------------------------------------------------------------------------------------
# Counts and percentages
# ------------------------------------------------------------------------------------------------

_PERCENT = re.compile(r"(\d+)\s*%")


def parse_quantity(value: Any) -> Quantity:
    """``3`` or ``"40%"`` (0..100%)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise value_error(
            "quantity", f"expected a whole number or a percentage like 40%, got {describe(value)}"
        )
    if isinstance(value, int):
        if value < 0:
            raise value_error("quantity", f"must not be negative, got {value}")
        return Quantity(value)
    text = value.strip()
    if text.isdigit():
        return Quantity(int(text))
    match = _PERCENT.fullmatch(text)
    if match is None:
        raise value_error(
            "quantity", f"invalid count {value!r}: expected a whole number or a percentage like 40%"
        )
    percent = int(match.group(1))
    if percent > 100:
        raise value_error("quantity", f"percentage {percent}% is over 100%")
    return Quantity(percent, percent=True)


# ------------------------------------------------------------------------------------------------
# Times of day, weekdays, timezones
# ------------------------------------------------------------------------------------------------

_TIME = re.compile(r"(\d{1,2}):(\d{2})")
MINUTES_PER_DAY = 24 * 60


def format_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time_of_day(value: Any) -> int:
    """``"02:00"`` -> 120 (minutes after midnight); ``"24:00"`` is the end of the day."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MINUTES_PER_DAY:
        # YAML 1.1 reads an unquoted 2:00 or 22:30 as a base-60 number (120, 1350).
        as_time = f"{value // 60}:{value % 60:02d}"
        raise value_error(
            "time_unquoted",
            f"got the number {value}: YAML reads an unquoted time like {as_time} as a number; "
            f'quote times: "{format_time(value)}"',
        )
    if not isinstance(value, str):
        raise value_error("time", f'expected a quoted time of day like "02:00", got {describe(value)}')
    match = _TIME.fullmatch(value.strip())
    if match is None:
        raise value_error("time", f'invalid time {value!r}: expected HH:MM like "02:00"')
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise value_error("time", f"invalid time {value!r}: hours go from 00 to 23 (24:00 ends the day)")
    return hours * 60 + minutes


_DAY_NAMES = {name: index for index, name in enumerate(WEEKDAYS)} | {
    full: index
    for index, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}


def parse_weekday(value: Any) -> int:
    """``"mon"`` (or ``"Monday"``) -> 0, as datetime.weekday()."""
    if isinstance(value, str) and value.strip().lower() in _DAY_NAMES:
        return _DAY_NAMES[value.strip().lower()]
    raise value_error("weekday", f"invalid day {describe(value)}: expected one of {', '.join(WEEKDAYS)}")


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(value: Any) -> str:
    """An IANA timezone name that this machine's tz database knows."""
    if not isinstance(value, str) or not value.strip():
        raise value_error("timezone", f"expected an IANA timezone like Europe/Berlin, got {describe(value)}")
    name = value.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, _known_timezones(), n=1)
        hint = (
            f" (did you mean {close[0]}?)" if close else " (expected an IANA name like Europe/Berlin or UTC)"
        )
        raise value_error("timezone", f"unknown timezone {name!r}{hint}") from None
    return name


# ------------------------------------------------------------------------------------------------
# Kubernetes names and labels (the rules of k8s.io/apimachinery/pkg/util/validation)
# ------------------------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def parse_label_key(value: Any) -> str:
    """A qualified name: optional DNS-subdomain prefix and '/', then a name of at most 63 chars."""
    if not isinstance(value, str):
        raise value_error("label_key", f"invalid label key {describe(value)}: expected text")
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise value_error(
            "label_key",
            f"invalid label key {value!r}: the prefix before '/' must be a lowercase DNS subdomain",
        )
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise value_error(
            "label_key",
            f"invalid label key {value!r}: the name must be 1-63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit",
        )
    return value


def parse_label_value(value: Any) -> str:
    """A label value; YAML booleans and integers are taken as the text a label would hold."""
    if isinstance(value, bool):
        # `gpu: true` in YAML is a boolean; the label the operator means is the string "true".
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise value_error("label_value", f"invalid label value {describe(value)}: expected text")
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise value_error(
            "label_value",
            f"invalid label value {value!r}: at most 63 characters of letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit",
        )
    return value


def parse_dns_label(value: Any) -> str:
    """A Kubernetes namespace-style name: lowercase letters, digits and '-', at most 63 chars."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise value_error(
            "dns_label",
            f"invalid name {describe(value)}: expected lowercase letters, digits and '-' "
            "(at most 63, starting and ending with a letter or digit)",
        )
    return value


_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def parse_name(value: Any) -> str:
    """A cluster or class name: it becomes a metric label value and a CLI argument."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise value_error(
            "name",
            f"invalid name {describe(value)}: expected 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )
    return value


# ------------------------------------------------------------------------------------------------
# Network addresses
# ------------------------------------------------------------------------------------------------


def parse_bind(value: Any) -> tuple[str, int]:
    """``"127.0.0.1:9478"``, ``"[::1]:9478"`` or ``":9478"`` (all interfaces) -> (host, port)."""
    if not isinstance(value, str):
        raise value_error("bind", f'expected "host:port" like "127.0.0.1:9478", got {describe(value)}')
    host, colon, port_text = value.strip().rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise value_error(
            "bind", f'invalid bind address {value!r}: expected "host:port" like "127.0.0.1:9478"'
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise value_error(
            "bind", f"invalid bind address {value!r}: put IPv6 addresses in brackets, e.g. [::1]:9478"
        )
    # Bandit B104 is silenced below: an empty host (":9478") is the operator asking for every
    # interface in the configuration; the default bind stays loopback.
    return (host or "0.0.0.0", int(port_text))  # nosec B104


def parse_http_url(value: Any) -> str:
    """An http(s) URL with a host (webhooks, emulator endpoints)."""
    if isinstance(value, str):
        scheme, sep, rest = value.strip().partition("://")
        if sep and scheme in ("http", "https") and rest and not rest.startswith("/"):
            return value.strip()
    raise value_error("url", f"invalid URL {describe(value)}: expected http://... or https://...")


# ------------------------------------------------------------------------------------------------
# Lists, actions, condition statuses, file paths
# ------------------------------------------------------------------------------------------------


def require_items(value: Any) -> Any:
    """Refuse an empty list, judged on the input.

    pydantic's min_length counts only the items that validated, so a list of two broken items
    would also be reported as "empty"."""
    if isinstance(value, list | tuple) and not value:
        raise value_error("empty", "must not be empty")
    return value


def parse_action(value: Any) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise value_error(
            "action",
            f"unknown action {describe(value)} (expected one of {', '.join(a.value for a in Action)})",
        ) from None


def parse_cloud_action(value: Any) -> Action:
    action = parse_action(value)
    if action not in CLOUD_ACTIONS:
        raise value_error(
            "action", f"{action.value} cannot be rate limited (only repair, reboot and replace)"
        )
    return action


# Kubernetes condition statuses; YAML turns a bare True/False into booleans.
_STATUSES = {"true": "True", "false": "False", "unknown": "Unknown"}


def parse_condition_status(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str) and value.strip().lower() in _STATUSES:
        return _STATUSES[value.strip().lower()]
    raise value_error(
        "status", f"invalid condition status {describe(value)}: expected True, False or Unknown"
    )


def resolve_path(value: Any, info: ValidationInfo) -> Path:
    """A file path; relative ones are relative to the configuration file (context ``base_dir``),
    not to wherever the daemon happens to start."""
    if not isinstance(value, str) or not value.strip():
        raise value_error("path", f"expected a file path, got {describe(value)}")
    path = Path(value.strip()).expanduser()
    base = info.context.get("base_dir") if isinstance(info.context, Mapping) else None
    if not path.is_absolute() and isinstance(base, Path):
        path = base / path
    return path
