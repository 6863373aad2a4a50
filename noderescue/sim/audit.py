"""The emulated cluster's audit log: one JSON line per mutating request, Kubernetes and cloud."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

import orjson

from noderescue.sim.kubeapi.timestamps import rfc3339_micro


class AuditLog:
    """Appends `{ts, api, verb, resource, namespace, name, subresource, code, userAgent}` lines,
    flushed per line so a crash or a reader tailing the file never misses one.

    Thread-safe: the cloud emulators may write from their server threads."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")

    def write(
        self,
        *,
        api: str,
        verb: str,
        resource: str,
        name: str,
        namespace: str | None = None,
        subresource: str | None = None,
        code: int,
        user_agent: str,
    ) -> None:
        line: dict[str, Any] = {
            "ts": rfc3339_micro(),
            "api": api,
            "verb": verb,
            "resource": resource,
            "namespace": namespace,
            "name": name,
            "subresource": subresource,
            "code": code,
            "userAgent": user_agent,
        }
        with self._lock:
            self.lines.append(line)
            if self._file is not None:
                self._file.write(orjson.dumps(line) + b"\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
