"""Named failpoints: inert in production, armed by an environment variable in tests.

Every mutating call (Kubernetes and cloud) and every durable record write has a failpoint right
before it (``<name>.before``) and right after its answer arrived (``<name>.after``), so the
crash-point suite can kill the daemon at each one and prove that nothing is sent twice and nothing
is forgotten (``docs/failpoints.md`` lists them).

Environment (read once, at import):

- ``NODERESCUE_FAILPOINTS="kube.record.write.after=exit;cloud.aws.terminate.before=raise"``:
  ``exit`` ends the process at once (``os._exit(137)``, like ``kill -9``: no cleanup, no flush);
  ``raise`` raises ``FailpointError`` (an unexpected exception at that instruction). ``NAME=exit@3``
  fires on the third time the point is reached (the first by default).
- ``NODERESCUE_FAILPOINTS_TRACE=/path/file``: every point reached is appended to the file, one
  name per line, flushed before the point acts, so a test learns which points a flow passes.

Unarmed, ``hit`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

ENV_ARM = "NODERESCUE_FAILPOINTS"
ENV_TRACE = "NODERESCUE_FAILPOINTS_TRACE"
EXIT_CODE = 137  # what a shell reports for SIGKILL

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-/]+)=(?P<mode>exit|raise)(?:@(?P<nth>[1-9][0-9]*))?$")


class FailpointError(RuntimeError):
    """Raised by a failpoint armed with ``raise``."""


@dataclass(slots=True)
class _Armed:
    mode: str
    nth: int
    seen: int = 0


def parse(spec: str) -> dict[str, _Armed]:
    """``name=mode[@n];...`` -> armed points. A malformed entry is an error, not ignored: a test
    that arms a typo must fail loudly rather than pass without its crash."""
    armed: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        match = _SPEC.match(item)
        if match is None:
            raise ValueError(f"{ENV_ARM}: cannot read {item!r} (expected NAME=exit|raise[@N])")
        armed[match["name"]] = _Armed(match["mode"], int(match["nth"] or 1))
    return armed


_armed: dict[str, _Armed] = parse(os.environ.get(ENV_ARM, ""))
_trace_path: str | None = os.environ.get(ENV_TRACE) or None
_lock = threading.Lock()  # cloud calls run in worker threads


def arm(spec: str, trace: str | None = None) -> None:
    """Arm points in this process (tests of the module itself)."""
    global _trace_path
    with _lock:
        _armed.clear()
        _armed.update(parse(spec))
        _trace_path = trace


def hit(name: str) -> None:
    """Reach failpoint ``name``: nothing happens unless a test armed it or traces."""
    if not _armed and _trace_path is None:
        return
    with _lock:
        if _trace_path is not None:
            with open(_trace_path, "a", encoding="utf-8") as trace:
                trace.write(name + "\n")
                trace.flush()
                os.fsync(trace.fileno())
        point = _armed.get(name)
        if point is None:
            return
        point.seen += 1
        if point.seen != point.nth:
            return
        mode = point.mode
    if mode == "exit":
        os._exit(EXIT_CODE)
    raise FailpointError(f"failpoint {name} armed to raise")
