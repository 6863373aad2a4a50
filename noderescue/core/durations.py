"""Human-readable durations for reasons, logs and config messages (``1h30m``, ``500ms``)."""

from __future__ import annotations


def trim_number(number: float) -> str:
    """``1.500`` -> ``1.5``, ``2.000`` -> ``2`` (millisecond precision)."""
    return f"{number:.3f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; the inverse of config's parse_duration (what it prints, it parses)."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    # Millisecond precision, rounded first so that 3599.9996 prints as 1h, not 59m60s.
    seconds = round(seconds, 3)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{trim_number(seconds * 1000)}ms"
    whole = int(seconds)
    fraction = seconds - whole
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if secs or fraction:
        text += f"{trim_number(secs + fraction)}s"
    return text
