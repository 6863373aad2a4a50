"""Maintenance windows: open/closed by weekday and time, overnight wrap, next opening, DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from noderescue.core.model import Window
from noderescue.core.windows import is_open, next_opening

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = UTC) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


NIGHTLY = Window(days=frozenset({MON, TUE, WED, THU}), start=120, end=300, timezone="UTC")
OVERNIGHT = Window(days=frozenset({FRI}), start=22 * 60, end=4 * 60, timezone="UTC", overnight=True)


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        pytest.param(NIGHTLY, at(2026, 11, 25, 3), True, id="wed-0300-inside"),
        pytest.param(NIGHTLY, at(2026, 11, 25, 2), True, id="start-inclusive"),
        pytest.param(NIGHTLY, at(2026, 11, 25, 5), False, id="end-exclusive"),
        pytest.param(NIGHTLY, at(2026, 11, 27, 3), False, id="friday-not-listed"),
        pytest.param(OVERNIGHT, at(2026, 11, 27, 23), True, id="overnight-friday-evening"),
        pytest.param(OVERNIGHT, at(2026, 11, 28, 3, 59), True, id="overnight-saturday-morning"),
        pytest.param(OVERNIGHT, at(2026, 11, 28, 4), False, id="overnight-ended"),
        pytest.param(
            OVERNIGHT, at(2026, 11, 27, 3), False, id="overnight-friday-morning-belongs-to-thursday"
        ),
        pytest.param(
            Window(frozenset({WED}), 120, 300, "Europe/Berlin"),
            at(2026, 11, 25, 1, 30),
            True,
            id="berlin-0230-is-0130-utc",
        ),
    ],
)
def test_is_open(window: Window, now: float, expected: bool) -> None:
    assert is_open(window, now) is expected


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        pytest.param(NIGHTLY, at(2026, 11, 25, 6), at(2026, 11, 26, 2), id="tomorrow"),
        pytest.param(NIGHTLY, at(2026, 11, 26, 6), at(2026, 11, 30, 2), id="over-the-weekend"),
        pytest.param(NIGHTLY, at(2026, 11, 25, 1), at(2026, 11, 25, 2), id="later-today"),
        pytest.param(NIGHTLY, at(2026, 11, 25, 2), at(2026, 11, 26, 2), id="open-now-next-is-tomorrow"),
        pytest.param(
            Window(frozenset({SUN}), 150, 200, "Europe/Berlin"),
            at(2027, 3, 27, 12),
            # 02:30 does not exist on 2027-03-28 in Berlin (DST gap): fold=0 resolves it to 01:30 UTC.
            at(2027, 3, 28, 1, 30),
            id="dst-gap",
        ),
    ],
)
def test_next_opening(window: Window, now: float, expected: float) -> None:
    assert next_opening(window, now) == expected


def test_no_days_never_opens() -> None:
    win = Window(frozenset(), 0, 60, "UTC")
    assert not is_open(win, at(2026, 11, 25, 0, 30))
    assert next_opening(win, at(2026, 11, 25, 0, 30)) is None
