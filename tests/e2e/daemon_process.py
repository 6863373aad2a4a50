"""The daemon as a real process (``python -m noderescue run``), its JSON logs and HTTP endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from noderescue.sim.world import World
from tests.runtime.world_runtime import world_raw_config

LogLine = dict[str, Any]


class DaemonProcess:
    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[LogLine] = []
        self.raw: list[bytes] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"daemon-log {name}")

    @classmethod
    async def start(
        cls, config: Path, env: Mapping[str, str], *args: str, name: str = "daemon"
    ) -> DaemonProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "noderescue",
            "run",
            "--config",
            str(config),
            *args,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, name)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while True:
            raw = await self.proc.stderr.readline()
            if not raw:
                self._new.set()
                return
            self.raw.append(raw)
            with contextlib.suppress(orjson.JSONDecodeError):
                line = orjson.loads(raw)
                if isinstance(line, dict):
                    self.lines.append(line)
            self._new.set()

    def logged(self, event: str, **fields: Any) -> list[LogLine]:
        return [
            line
            for line in self.lines
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    async def wait_log(self, event: str, *, timeout_s: float, **fields: Any) -> LogLine:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.logged(event, **fields)
            if found:
                return found[0]
            if self.proc.returncode is not None and self._reader.done():
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) before logging {event}:\n{self.tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name} did not log {event} {fields} in {timeout_s}s:\n{self.tail()}"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._new.wait()

    def tail(self, n: int = 30) -> str:
        # The watch re-opens are noise here.
        telling = [raw for raw in self.raw if b"watch_inactive_reopen" not in raw]
        text = b"".join(telling[-n:]).decode(errors="replace")
        return f"[{len(self.raw)} lines, returncode {self.proc.returncode}]\n{text}"

    async def port(self, timeout_s: float = 15.0) -> int:
        line = await self.wait_log("daemon_started", timeout_s=timeout_s)
        return int(line["http_port"])

    async def get(self, path: str) -> tuple[int, bytes]:
        port = await self.port()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.read()

    async def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        _, body = await self.get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    async def stop(self, timeout_s: float = 35.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._reader
        return code

    async def kill9(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        await self._reader


@contextlib.asynccontextmanager
async def daemon(
    config: Path, env: Mapping[str, str], *args: str, name: str = "daemon"
) -> AsyncIterator[DaemonProcess]:
    process = await DaemonProcess.start(config, env, *args, name=name)
    try:
        yield process
    finally:
        await process.stop()


def write_world_config(
    world: World, path: Path, tweak: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    path.write_text(yaml.safe_dump(world_raw_config(world, tweak), sort_keys=False))
    return path


async def eventually_async(
    probe: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """``probe`` is an async callable returning a truthy value when done."""
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
