"""Switchable faults, read by the Kubernetes API emulator and the cloud emulators.

Times here are real seconds (this object has no clock scale); scenario runners convert emulated
times before calling. A full outage closes the API server's listening socket and aborts open
connections, because that is what clients of a dead API server see: refused connections, not
tidy 503s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal

ApiErrorCode = int | Literal["timeout"]
FaultSignal = Literal["changed", "watch_disconnect", "force_410", "outage", "watch_fault"]
# Watch-only faults. hang: the watch is accepted (200, headers sent) and then nothing is delivered,
# not even bookmarks, the connection held open; open watches freeze too. eof: a new watch is
# answered with an empty 200 at once (a watch ended before it began).
WatchFault = Literal["hang", "eof"]


class Faults:
    def __init__(self, *, seed: int | None = None) -> None:
        self.api_error_rate: float = 0.0
        # 500 -> InternalError, 429 -> TooManyRequests with Retry-After, 503/504 likewise,
        # "timeout" -> the request is never answered (the client's own timeout fires).
        self.api_error_codes: tuple[ApiErrorCode, ...] = (500,)
        self.latency_s: float = 0.0
        self.outage_until: float | None = None  # time.monotonic() deadline
        self.cloud_throttle_rate: float = 0.0
        self.retry_after_s: int = 1
        self.watch_fault_mode: WatchFault | None = None
        self.watch_fault_until: float | None = None  # time.monotonic() deadline; None: until cleared
        self._random = random.Random(seed)
        self._listeners: list[Callable[[FaultSignal], None]] = []

    # ---- switches ----------------------------------------------------------------------------

    def api_outage(self, for_s: float) -> None:
        self.outage_until = time.monotonic() + for_s
        self._signal("outage")

    def end_outage(self) -> None:
        self.outage_until = None
        self._signal("outage")

    def watch_disconnect_now(self) -> None:
        self._signal("watch_disconnect")

    def force_410_now(self) -> None:
        self._signal("force_410")

    def set_api_errors(self, rate: float, codes: tuple[ApiErrorCode, ...] = (500,)) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"api_error_rate must be within [0, 1], got {rate}")
        self.api_error_rate = rate
        self.api_error_codes = codes or (500,)
        self._signal("changed")

    def clear(self) -> None:
        self.api_error_rate = 0.0
        self.api_error_codes = (500,)
        self.latency_s = 0.0
        self.cloud_throttle_rate = 0.0
        if self.watch_fault_mode is not None:
            self.set_watch_fault(None)
        if self.outage_until is not None:
            self.end_outage()

    # ---- watch faults (watch requests only; lists and writes are served normally) -------------

    def set_watch_fault(self, mode: WatchFault | None, for_s: float | None = None) -> None:
        """Switch a watch fault on (for ``for_s`` real seconds, or until cleared) or off (None)."""
        if mode is not None and mode not in ("hang", "eof"):
            raise ValueError(f"watch fault must be hang or eof, got {mode!r}")
        self.watch_fault_mode = mode
        self.watch_fault_until = None if mode is None or for_s is None else time.monotonic() + for_s
        self._signal("watch_fault")

    def watch_fault(self) -> WatchFault | None:
        """The watch fault in force now (a timed one ends by itself)."""
        if self.watch_fault_mode is None:
            return None
        if self.watch_fault_until is not None and time.monotonic() >= self.watch_fault_until:
            return None
        return self.watch_fault_mode

    def watch_fault_remaining_s(self) -> float | None:
        """Seconds left of the watch fault; None when none is on or it has no end."""
        if self.watch_fault() is None or self.watch_fault_until is None:
            return None
        return max(0.0, self.watch_fault_until - time.monotonic())

    # ---- what consumers ask --------------------------------------------------------------------

    def in_outage(self) -> bool:
        return self.outage_until is not None and time.monotonic() < self.outage_until

    def outage_remaining_s(self) -> float:
        return 0.0 if self.outage_until is None else max(0.0, self.outage_until - time.monotonic())

    def draw_api_error(self) -> ApiErrorCode | None:
        """The error to inject into this request, or None to serve it normally."""
        if self.api_error_rate <= 0.0 or self._random.random() >= self.api_error_rate:
            return None
        return self._random.choice(self.api_error_codes)

    def draw_cloud_throttle(self) -> bool:
        return self.cloud_throttle_rate > 0.0 and self._random.random() < self.cloud_throttle_rate

    # ---- listeners (the API server reacts to signals at once) ---------------------------------

    def subscribe(self, listener: Callable[[FaultSignal], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[FaultSignal], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _signal(self, signal: FaultSignal) -> None:
        for listener in list(self._listeners):
            listener(signal)
