"""One task drives every timer of the emulated cluster (a heap, not a task per node), so a
100k-node cluster costs heap entries, not tasks. Delays are emulated seconds, divided by the
time scale."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("noderescue.sim.timers")


@dataclass(order=True, slots=True)
class Timer:
    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Must be used from the event loop's thread (callbacks run there too)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.time_scale = time_scale
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def real_s(self, emulated_s: float) -> float:
        return max(0.0, emulated_s) / self.time_scale

    def call_after(self, emulated_s: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + self.real_s(emulated_s), next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        if self._heap[0] is timer:
            self._wake.set()
        return timer

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        heap = self._heap
        while True:
            self._wake.clear()
            now = time.monotonic()
            fired = 0
            while heap and heap[0].due <= now:
                timer = heapq.heappop(heap)
                if timer.cancelled:
                    continue
                try:
                    timer.callback()
                except Exception:
                    log.exception("sim_timer_failed")
                fired += 1
                if fired % 500 == 0:
                    await asyncio.sleep(0)  # let the API server answer during a burst
                    now = time.monotonic()
            delay = heap[0].due - time.monotonic() if heap else None
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
