"""systemd ``Type=notify`` support (DESIGN §6) without python-systemd.

The protocol (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments in one datagram sent to
the ``AF_UNIX``/``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET``; a name starting with ``@`` is
in the abstract namespace (a leading NUL byte). With ``WatchdogSec=`` set, systemd exports
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and kills the service when ``WATCHDOG=1`` does not
arrive within that time; the recommended ping period is half of it.

The watchdog pings come from a task on the daemon's event loop, on purpose: if the loop wedges
(a blocking call, a busy loop), the pings stop and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)

WATCHDOG_TASK_NAME = "systemd-watchdog"


def _socket_address(name: str) -> str | None:
    """``$NOTIFY_SOCKET`` -> an ``AF_UNIX`` address, or None for kinds we do not speak."""
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # systemd >= 254 also allows "vsock:CID:PORT" (VMs); a management host does not need it.
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    usec_text = env.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    # WATCHDOG_PID names the process systemd expects pings from; a child we spawned that inherited
    # the variable must not ping on the parent's behalf.
    pid_text = env.get("WATCHDOG_PID")
    if pid_text and pid_text.strip() != str(pid):
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("systemd_watchdog_usec_invalid", value=usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Sends sd_notify messages; every method is a no-op when not started by systemd.

    Build it with :meth:`from_env` in the daemon. ``ready()`` after the first sync of every
    cluster, ``status(text)`` with a one-line summary when it changes, ``stopping()`` on SIGTERM,
    and run :meth:`run_watchdog` as a task for the daemon's lifetime.
    """

    def __init__(self, notify_socket: str | None, *, watchdog_interval_s: float | None = None) -> None:
        self._address = _socket_address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning("systemd_notify_socket_unsupported", notify_socket=notify_socket)
        self.watchdog_interval_s = watchdog_interval_s if self._address is not None else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None) -> SystemdNotifier:
        environ = os.environ if env is None else env
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            watchdog_interval_s=_watchdog_interval(environ, os.getpid() if pid is None else pid),
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> None:
        self.notify("READY=1")

    def status(self, text: str) -> None:
        """Set the one-line status ``systemctl status`` shows; repeats of the same text are not sent
        (the reconciler may call this on every pass)."""
        # One datagram line per assignment: a newline inside STATUS would start a new assignment.
        line = " ".join(text.splitlines())
        if line == self._last_status:
            return
        if self.notify("STATUS=" + line):
            self._last_status = line

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when it was handed to the kernel."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop on a full receive queue: a lost ping is better than a
            # stalled daemon (and systemd drains the queue quickly).
            self._sock.setblocking(False)
        payload = "\n".join(assignments).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            # systemd gone or restarting: keep running, the daemon's work does not depend on it.
            log.warning("systemd_notify_failed", error=type(exc).__name__, errno=exc.errno)
            return False
        return True

    async def run_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` every half ``WatchdogSec`` from the loop; returns at once if unset."""
        interval = self.watchdog_interval_s
        if interval is None:
            return
        log.info("systemd_watchdog_started", interval_s=interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Start :meth:`run_watchdog` as a named task; None when there is no watchdog to feed."""
        if self.watchdog_interval_s is None:
            return None
        return asyncio.get_running_loop().create_task(self.run_watchdog(), name=WATCHDOG_TASK_NAME)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
