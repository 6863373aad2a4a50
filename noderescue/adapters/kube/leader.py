"""Leader election on a coordination.k8s.io/v1 Lease, client-go's algorithm plus fencing.

Acquire/renew is a read-modify-write of the Lease with its resourceVersion (PUT -> 409 when
someone else wrote first). Like client-go, another holder's lease counts as expired only after
``leaseDurationSeconds`` of *our own* observation of an unchanged record (no clock-skew trust).

Fencing: client-go gives none, so ``holds_lease()`` turns False as soon as the last successful
renewal is older than ``renew_deadline_s`` — which is shorter than the lease duration, so it is
False before any other instance can possibly take over. The renewal time we count from is when
the renewing request was *sent*, so a slow response can only shorten our claim, never extend it.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes_asyncio.client import ApiClient

from noderescue.adapters.kube.client import request_timeout_of
from noderescue.adapters.kube.errors import Conflict, KubeError, NotFound
from noderescue.adapters.kube.nodeview import format_micro_time
from noderescue.adapters.kube.transport import JsonObject, request_json

log = structlog.get_logger(__name__)

LEADER_LEASE = "noderescue-leader"


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}"


class LeaderElector:
    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        name: str = LEADER_LEASE,
        identity: str | None = None,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not retry_period_s < renew_deadline_s < lease_duration_s:
            raise ValueError("need retry period < renew deadline < lease duration")
        self.identity = identity or default_identity()
        self._api = api
        self._namespace = namespace
        self._name = name
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._path = f"{self._collection}/{name}"
        self._lease_duration_s = lease_duration_s
        self._renew_deadline_s = renew_deadline_s
        self._retry_period_s = retry_period_s
        self._on_change = on_change
        self._clock = clock
        self._wall_clock = wall_clock
        self._leader = False
        self._renewed_at = -math.inf  # monotonic time the last successful renewal was sent
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = -math.inf
        self.leading = asyncio.Event()  # set while we hold the lease

    def holds_lease(self) -> bool:
        """True only while the lease is surely ours: call right before every mutating step."""
        return self._leader and self._clock() < self._renewed_at + self._renew_deadline_s

    def remaining_s(self) -> float:
        """How much longer the lease is surely ours (<= 0: not held). The cloud layer bounds each
        attempt of a mutating call by it, so no attempt can land after a standby took over."""
        if not self._leader:
            return 0.0
        return self._renewed_at + self._renew_deadline_s - self._clock()

    async def run(self) -> None:
        """Acquire, then keep renewing; after losing it, try to acquire again. Until cancelled."""
        while True:
            renewed = await self._try_acquire_or_renew()
            if renewed:
                if not self._leader:
                    self._set_leader(True)
            elif self._leader and not self.holds_lease():
                log.warning("leader_lost", lease=self._name, identity=self.identity)
                self._set_leader(False)
            if self._leader:
                await asyncio.sleep(self._retry_period_s)
            else:  # jittered like client-go's acquire loop (JitterFactor 1.2)
                await asyncio.sleep(self._retry_period_s * (1.0 + random.uniform(0.0, 1.2)))

    async def release(self) -> None:
        """Give the lease up (on shutdown) so that a standby takes over at once.

        Cancel ``run()`` first, or it may take the lease right back.
        """
        if not self._leader:
            return
        self._set_leader(False)  # fenced from now on, whatever the release request does
        try:
            lease = await request_json(self._api, "GET", self._path, timeout_s=self._request_timeout())
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = format_micro_time(self._wall_clock())
            body = self._lease_body(
                lease,
                {
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": spec.get("leaseTransitions") or 0,
                },
            )
            await request_json(self._api, "PUT", self._path, body=body, timeout_s=self._request_timeout())
            log.info("leader_released", lease=self._name, identity=self.identity)
        except KubeError as exc:
            log.warning("leader_release_failed", lease=self._name, error=str(exc))

    # ----------------------------------------------------------------------------------------

    def _set_leader(self, leader: bool) -> None:
        self._leader = leader
        if leader:
            self.leading.set()
            log.info("leader_acquired", lease=self._name, identity=self.identity)
        else:
            self.leading.clear()
        if self._on_change is not None:
            self._on_change(leader)

    def _request_timeout(self) -> float:
        return min(request_timeout_of(self._api), self._renew_deadline_s)

    def _lease_body(self, lease: JsonObject | None, spec: dict[str, Any]) -> JsonObject:
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        if lease is not None:
            metadata["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _try_acquire_or_renew(self) -> bool:
        sent_at = self._clock()
        now = format_micro_time(self._wall_clock())
        duration = math.ceil(self._lease_duration_s)
        ours = {"holderIdentity": self.identity, "leaseDurationSeconds": duration, "renewTime": now}
        timeout = self._request_timeout()
        try:
            try:
                lease = await request_json(self._api, "GET", self._path, timeout_s=timeout)
            except NotFound:
                body = self._lease_body(None, {**ours, "acquireTime": now, "leaseTransitions": 0})
                await request_json(self._api, "POST", self._collection, body=body, timeout_s=timeout)
                self._renewed_at = sent_at
                return True
            # When we *saw* the record, not when we asked: the GET may have been on its way
            # for seconds and show a renewal sent long after ``sent_at``. Counting the other
            # holder's lease from our request's send time could end it before the holder's
            # own fence (its renewal's send time + renew deadline) does: two leaders.
            observed_at = self._clock()
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            record = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, observed_at
            held_by_other = bool(holder) and holder != self.identity
            if held_by_other and self._leader:
                log.warning("leader_lost", lease=self._name, identity=self.identity, holder=holder)
                self._set_leader(False)
            if held_by_other:
                other_duration = float(spec.get("leaseDurationSeconds") or self._lease_duration_s)
                if sent_at < self._observed_at + other_duration:
                    return False
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder == self.identity:
                ours["acquireTime"] = spec.get("acquireTime") or now
                ours["leaseTransitions"] = transitions
            else:
                ours["acquireTime"] = now
                ours["leaseTransitions"] = transitions + 1
            await request_json(
                self._api, "PUT", self._path, body=self._lease_body(lease, ours), timeout_s=timeout
            )
        except Conflict:
            return False  # someone else wrote the lease between our read and write
        except KubeError as exc:
            log.warning("leader_lease_request_failed", lease=self._name, error=str(exc))
            return False
        self._renewed_at = sent_at
        return True
