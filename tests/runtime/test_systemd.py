"""sd_notify over a real AF_UNIX datagram socket (path and abstract namespace), and the watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from noderescue.runtime.systemd import WATCHDOG_TASK_NAME, SystemdNotifier


@contextlib.contextmanager
def path_receiver() -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer than that.
    path = Path("/tmp") / f"nr-notify-{uuid.uuid4().hex[:12]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    name = f"noderescue-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    make = path_receiver if request.param == "path" else abstract_receiver
    with make() as pair:
        yield pair


def received(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


@pytest.mark.parametrize(
    ("send", "datagram"),
    [
        pytest.param(lambda n: n.ready(), "READY=1", id="ready"),
        pytest.param(lambda n: n.watchdog(), "WATCHDOG=1", id="watchdog"),
        pytest.param(lambda n: n.stopping(), "STOPPING=1", id="stopping"),
        pytest.param(
            lambda n: n.status("2 clusters, 1 remediating"), "STATUS=2 clusters, 1 remediating", id="status"
        ),
        pytest.param(
            lambda n: n.status("line one\nline two"), "STATUS=line one line two", id="status-stays-one-line"
        ),
        pytest.param(lambda n: n.notify("READY=1", "STATUS=up"), "READY=1\nSTATUS=up", id="several-in-one"),
    ],
)
def test_messages_arrive_as_datagrams(
    receiver: tuple[socket.socket, str], send: object, datagram: str
) -> None:
    sock, name = receiver
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    try:
        send(notifier)  # type: ignore[operator]
    finally:
        notifier.close()
    assert received(sock) == [datagram]


def test_no_notify_socket_means_no_op() -> None:
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval_s is None


def test_receiver_gone_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    try:
        assert notifier.notify("READY=1") is False
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        pytest.param({"WATCHDOG_USEC": "10000000"}, 5.0, id="half-of-usec"),
        pytest.param({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4242"}, 5.0, id="pid-is-ours"),
        pytest.param({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None, id="pid-is-someone-else"),
        pytest.param({}, None, id="no-watchdog"),
        pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero"),
        pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage"),
    ],
)
def test_watchdog_interval_from_env(env: dict[str, str], interval: float | None) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@x", **env}, pid=4242)
    assert notifier.watchdog_interval_s == interval


def test_watchdog_interval_uses_real_pid_by_default() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_env(env).watchdog_interval_s == 1.0


@pytest.mark.looptime
async def test_watchdog_pings_every_half_watchdog_sec() -> None:
    loop = asyncio.get_running_loop()
    with path_receiver() as (sock, name):
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "10000000"})
        stamps: list[float] = []

        async def listen(sock: socket.socket = sock) -> None:
            sock.setblocking(False)
            while True:
                data = await loop.sock_recv(sock, 4096)
                assert data == b"WATCHDOG=1"
                stamps.append(loop.time())

        listener = asyncio.create_task(listen(), name="test-listener")
        start = loop.time()
        task = notifier.start_watchdog()
        assert task is not None
        assert task.get_name() == WATCHDOG_TASK_NAME
        await asyncio.sleep(22)
        task.cancel()
        listener.cancel()
        await asyncio.gather(task, listener, return_exceptions=True)
        notifier.close()

        assert [round(t - start, 1) for t in stamps] == [0.0, 5.0, 10.0, 15.0, 20.0]


async def test_no_watchdog_task_without_watchdog_usec() -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@x"})
    assert notifier.start_watchdog() is None
    await notifier.run_watchdog()  # returns at once instead of looping


async def test_a_blocked_loop_stops_the_pings() -> None:
    """The point of pinging from the loop: while the loop is wedged, systemd hears nothing."""
    with path_receiver() as (sock, name):
        stamps: list[float] = []
        stop = threading.Event()

        def listen(sock: socket.socket = sock) -> None:
            sock.settimeout(0.02)
            while not stop.is_set():
                try:
                    sock.recv(64)
                except TimeoutError:
                    continue
                stamps.append(time.monotonic())

        thread = threading.Thread(target=listen, name="test-notify-listener")
        thread.start()
        # WatchdogSec=100ms -> a ping every 50 ms.
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"})
        task = notifier.start_watchdog()
        assert task is not None
        try:
            await asyncio.sleep(0.3)
            blocked_from = time.monotonic()
            time.sleep(0.5)  # wedge the loop  # noqa: ASYNC251
            blocked_until = time.monotonic()
            await asyncio.sleep(0.3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stop.set()
            thread.join()
            notifier.close()

        during = [t for t in stamps if blocked_from + 0.01 < t < blocked_until - 0.01]
        assert during == []
        assert sum(t < blocked_from for t in stamps) >= 2
        assert sum(t > blocked_until for t in stamps) >= 2


def test_unchanged_status_is_sent_once() -> None:
    with abstract_receiver() as (sock, name):
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": name})
        try:
            notifier.status("1 cluster, all healthy")
            notifier.status("1 cluster, all healthy")
            notifier.status("1 cluster, 1 remediating")
        finally:
            notifier.close()
        assert received(sock) == ["STATUS=1 cluster, all healthy", "STATUS=1 cluster, 1 remediating"]
