"""Leader election: two electors on one Lease, over real HTTP, with short timings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.leader import LeaderElector
from tests.adapters.kube.conftest import eventually, new_client

LEASE_S, RENEW_DEADLINE_S, RETRY_S = 2.0, 1.0, 0.1


def elector(api: KubeClient, identity: str, on_change: Callable[[bool], None] | None = None) -> LeaderElector:
    return LeaderElector(
        api,
        namespace="default",
        identity=identity,
        lease_duration_s=LEASE_S,
        renew_deadline_s=RENEW_DEADLINE_S,
        retry_period_s=RETRY_S,
        on_change=on_change,
    )


@pytest.fixture
async def second_api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await new_client(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.slow
async def test_exactly_one_holds_and_a_silent_holder_is_fenced_before_takeover(
    api: KubeClient, second_api: KubeClient
) -> None:
    first = elector(api, "first")
    second = elector(second_api, "second")
    tasks = {first: asyncio.create_task(first.run()), second: asyncio.create_task(second.run())}
    try:
        await eventually(lambda: first.holds_lease() or second.holds_lease(), what="a leader")
        for _ in range(30):  # 1.5 s: never two holders
            assert first.holds_lease() + second.holds_lease() == 1
            await asyncio.sleep(0.05)
        holder, standby = (first, second) if first.holds_lease() else (second, first)

        # The holder hangs: it stops renewing without releasing.
        await stop(tasks.pop(holder))
        stopped = time.monotonic()
        while holder.holds_lease():
            assert not standby.holds_lease()
            await asyncio.sleep(0.01)
        fenced = time.monotonic()
        await eventually(standby.holds_lease, timeout_s=5.0, what="the standby to take over")
        took_over = time.monotonic()

        assert fenced - stopped <= RENEW_DEADLINE_S + 0.1
        assert took_over - stopped >= LEASE_S - RENEW_DEADLINE_S
        assert fenced < took_over
    finally:
        for task in tasks.values():
            await stop(task)


@pytest.mark.slow
async def test_release_hands_over_at_once(api: KubeClient, second_api: KubeClient) -> None:
    changes: list[bool] = []
    first = elector(api, "first", changes.append)
    first_task = asyncio.create_task(first.run())
    await eventually(first.holds_lease, what="the first elector to lead")
    second = elector(second_api, "second")
    second_task = asyncio.create_task(second.run())
    try:
        await asyncio.sleep(0.3)
        assert not second.holds_lease()
        await stop(first_task)
        await first.release()
        assert not first.holds_lease()
        released = time.monotonic()
        await eventually(second.holds_lease, timeout_s=2.0, what="the standby to take over")
        # Well before the 2 s lease would have expired by itself.
        assert time.monotonic() - released < LEASE_S - 0.5
        assert changes == [True, False]
    finally:
        await stop(second_task)


async def test_timings_must_be_ordered(api: KubeClient) -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(api, namespace="default", lease_duration_s=5, renew_deadline_s=6, retry_period_s=1)
