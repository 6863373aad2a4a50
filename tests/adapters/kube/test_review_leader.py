"""Leader fencing when the observer's view of the Lease arrives late (review finding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from noderescue.adapters.kube import leader as leader_module
from noderescue.adapters.kube.client import KubeClient
from noderescue.adapters.kube.leader import LeaderElector
from noderescue.adapters.kube.transport import request_json
from tests.adapters.kube.conftest import new_client


async def test_a_slow_read_of_the_lease_never_lets_a_standby_take_it_while_the_holder_is_fenced_in(
    api: KubeClient, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby's GET is sent at t=1 and answered at t=8, showing a renewal the holder sent
    at t=7. The holder's claim runs to 7 + renew deadline (17); the standby must count the lease
    duration from when it *saw* that renewal (8 -> 23), not from when it asked (1 -> 16)."""
    now = [0.0]
    standby_api = await new_client(kubeconfig)
    timings: dict[str, Any] = {
        "namespace": "default",
        "lease_duration_s": 15.0,
        "renew_deadline_s": 10.0,
        "retry_period_s": 2.0,
        "clock": lambda: now[0],
    }
    holder = LeaderElector(api, identity="holder", **timings)
    standby = LeaderElector(standby_api, identity="standby", **timings)
    real_request = request_json
    slow_get = [False]

    async def network(api_: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if api_ is standby_api and method == "GET" and slow_get[0]:
            slow_get[0] = False
            now[0] = 7.0  # while the standby's request is on its way, the holder renews...
            assert await holder._try_acquire_or_renew()
            now[0] = 8.0  # ...and the server answers the standby afterwards
        return await real_request(api_, method, path, **kwargs)

    monkeypatch.setattr(leader_module, "request_json", network)
    try:
        assert await holder._try_acquire_or_renew()  # t=0: the holder takes the lease
        holder._set_leader(True)
        assert not await standby._try_acquire_or_renew()  # t=0: the standby sees it held

        now[0] = 1.0
        slow_get[0] = True
        assert not await standby._try_acquire_or_renew()  # sent at 1, answered at 8
        assert holder.holds_lease()

        # The holder goes silent after its renewal at t=7. At t=16.5 it still believes it holds
        # the lease (7 + 10 = 17); the standby must not be able to take it yet.
        now[0] = 16.5
        assert holder.holds_lease()
        took = await standby._try_acquire_or_renew()
        assert not took, "two instances hold the lease at once"

        now[0] = 23.5  # the holder's claim is long over; the standby may take it now
        assert not holder.holds_lease()
        assert await standby._try_acquire_or_renew()
    finally:
        await standby_api.close()
