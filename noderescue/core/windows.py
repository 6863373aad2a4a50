"""Maintenance windows: is one open at ``now``, and when does it open next.

Timezones are IANA names resolved with ``zoneinfo`` (validated, and so cached, when the
configuration was loaded). Local wall-clock times that do not exist (a DST gap) resolve as
``datetime`` does with ``fold=0``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from noderescue.core.model import Window


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _at(day: date, minutes: int, tz: ZoneInfo) -> float:
    day, minutes = day + timedelta(days=minutes // 1440), minutes % 1440  # "24:00" is next midnight
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=tz).timestamp()


def is_open(window: Window, now: float) -> bool:
    tz = _zone(window.timezone)
    local = datetime.fromtimestamp(now, tz)
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    if not window.overnight:
        return weekday in window.days and window.start <= minute < window.end
    # Overnight (22:00-04:00): open from start on a listed day until end the next morning.
    if weekday in window.days and minute >= window.start:
        return True
    return (weekday - 1) % 7 in window.days and minute < window.end


def next_opening(window: Window, now: float) -> float | None:
    """The first opening strictly after ``now`` (None: the window lists no day)."""
    if not window.days:
        return None
    tz = _zone(window.timezone)
    today = datetime.fromtimestamp(now, tz).date()
    for offset in range(8):
        day = today + timedelta(days=offset)
        if day.weekday() in window.days:
            opening = _at(day, window.start, tz)
            if opening > now:
                return opening
    return None  # unreachable with a non-empty day set; kept for the type checker
