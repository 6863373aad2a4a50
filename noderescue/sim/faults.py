"""Switchable faults, read by the Kubernetes API emulator and the cloud emulators.

Times here are real seconds (this object has no clock scale); scenario runners convert emulated
times before calling. A full outage closes the API server's listening socket and aborts open
connections, because that is what clients of a dead API server see: refused connections, not
tidy 503s.

Besides the cluster-wide switches (error rate, latency, outage, cloud throttling) there is one
schema for targeted faults, ``FaultSpec`` (``docs/emulator-faults.md``): a target (an API, one
call of it, optionally a node or an instance), a mode (``before``: fail without applying;
``after``: apply, then fail), an error (``500``, ``503``, ``429``, ``timeout``: hold the answer
until the client gives up, ``reset``: abort the connection), how many calls (``count``) or which
share of them (``rate``), and an optional duration. Emulators ask ``Faults.take_fault`` for each
request; the first live fault that matches is the one applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from noderescue import config_values

if TYPE_CHECKING:
    from aiohttp import web

ApiErrorCode = int | Literal["timeout"]
FaultSignal = Literal["changed", "watch_disconnect", "force_410", "outage"]


FaultApi = Literal["kubernetes", "aws", "azure"]
FaultMode = Literal["before", "after"]
FaultError = Literal[500, 503, 429, "timeout", "reset"]

# The Azure emulator's call names (ARM has no action names of its own): ``delete`` is both a VM's
# DELETE and the scale set's deleteInstances, ``capacity`` a PUT/PATCH of ``sku.capacity``.
AZURE_CALLS = frozenset({"restart", "reimage", "delete", "capacity", "runCommand"})
_AWS_CALL = re.compile(r"^[A-Z][A-Za-z0-9]+$")  # an AWS API action: RebootInstances
_KUBE_CALL = re.compile(r"^[a-z]+ [a-z0-9.]+(/[a-z]+)?$")  # "<verb> <resource>[/<subresource>]"
# Audit codes of requests failed before applying with no HTTP answer (nginx's conventions).
AUDIT_NO_ANSWER = 499  # held until the client gave up
AUDIT_RESET = 444  # connection reset, no answer
# How long a "timeout" fault holds a request at most when the client never gives up.
HOLD_CAP_S = 120.0


def _duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    if isinstance(value, str):
        return config_values.parse_duration(value)
    raise ValueError(f"invalid duration {value!r}")


class FaultSpec(BaseModel):
    """One targeted fault, as scenario events and ``POST /_sim/faults`` give it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api: FaultApi
    # AWS: the API action (TerminateInstanceInAutoScalingGroup, RebootInstances, SendCommand...);
    # Azure: one of AZURE_CALLS; Kubernetes: "<verb> <resource>" ("create pods/eviction").
    call: str
    node: str | None = None  # only calls about this node's instance (or this Node)
    instance: str | None = None  # only calls about this instance (EC2 id, VMSS instance id or VM name)
    mode: FaultMode = "before"
    error: FaultError
    count: Annotated[int, Field(ge=1)] | None = None  # the next N matching calls
    rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # or this share of them
    for_: Annotated[float, BeforeValidator(_duration)] | None = Field(default=None, alias="for")
    retry_after: Annotated[int, Field(ge=0, alias="retryAfter")] = 1  # 429 only

    @model_validator(mode="after")
    def _shape(self) -> FaultSpec:
        if self.count is not None and self.rate is not None:
            raise ValueError("a fault takes 'count' or 'rate', not both")
        if self.api == "azure" and self.call not in AZURE_CALLS:
            raise ValueError(f"azure calls are {', '.join(sorted(AZURE_CALLS))}; got {self.call!r}")
        if self.api == "aws" and not _AWS_CALL.match(self.call):
            raise ValueError(f"an aws call is an API action name like RebootInstances; got {self.call!r}")
        if self.api == "kubernetes" and not _KUBE_CALL.match(self.call):
            raise ValueError(
                f"a kubernetes call is '<verb> <resource>' like 'create pods/eviction'; got {self.call!r}"
            )
        if "retry_after" in self.model_fields_set and self.error != 429:
            raise ValueError("'retryAfter' goes with error 429")
        return self

    def describe(self) -> dict[str, Any]:
        raw = self.model_dump(by_alias=True, exclude_none=True)
        if self.error != 429:
            raw.pop("retryAfter")
        return raw


@dataclass(slots=True)
class ActiveFault:
    id: int
    spec: FaultSpec
    remaining: int | None  # None: rate-based, no budget of calls
    until: float | None  # time.monotonic() deadline, None: until used up or cleared

    def describe(self) -> dict[str, Any]:
        raw = self.spec.describe() | {"id": self.id}
        if self.remaining is not None:
            raw["remaining"] = self.remaining
        if self.until is not None:
            raw["remaining_s"] = round(max(0.0, self.until - time.monotonic()), 3)
        raw.pop("for", None)
        return raw


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
        self._random = random.Random(seed)
        self._listeners: list[Callable[[FaultSignal], None]] = []
        self._targeted: list[ActiveFault] = []
        self._ids = itertools.count(1)

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

    def add_fault(self, spec: FaultSpec, *, for_s: float | None = None) -> int:
        """Arm a targeted fault; ``for_s`` (real seconds) overrides the spec's own duration (a
        scenario's durations are emulated seconds). Returns its id (for ``remove_fault``)."""
        duration = spec.for_ if for_s is None else for_s
        remaining = spec.count if spec.count is not None else (None if spec.rate is not None else 1)
        fault = ActiveFault(
            id=next(self._ids),
            spec=spec,
            remaining=remaining,
            until=None if duration is None else time.monotonic() + duration,
        )
        self._targeted.append(fault)
        return fault.id

    def remove_fault(self, fault_id: int) -> None:
        self._targeted = [f for f in self._targeted if f.id != fault_id]

    def targeted(self) -> list[ActiveFault]:
        self._expire()
        return list(self._targeted)

    def clear(self) -> None:
        self._targeted.clear()
        self.api_error_rate = 0.0
        self.api_error_codes = (500,)
        self.latency_s = 0.0
        self.cloud_throttle_rate = 0.0
        if self.outage_until is not None:
            self.end_outage()

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

    def take_fault(
        self,
        api: FaultApi,
        call: str,
        *,
        instances: Collection[str] = (),
        nodes: Collection[str] = (),
    ) -> FaultSpec | None:
        """The fault to apply to this request, if a live one matches it (a count-limited fault
        is used up by the match, whether it then fails before or after applying)."""
        self._expire()
        for fault in self._targeted:
            spec = fault.spec
            if spec.api != api or spec.call != call:
                continue
            if spec.instance is not None and spec.instance not in instances:
                continue
            if spec.node is not None and spec.node not in nodes:
                continue
            if fault.remaining is None:
                assert spec.rate is not None
                if self._random.random() >= spec.rate:
                    continue
            else:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._targeted.remove(fault)
            return spec
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        if any(f.until is not None and now >= f.until for f in self._targeted):
            self._targeted = [f for f in self._targeted if f.until is None or now < f.until]

    # ---- listeners (the API server reacts to signals at once) ---------------------------------

    def subscribe(self, listener: Callable[[FaultSignal], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[FaultSignal], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _signal(self, signal: FaultSignal) -> None:
        for listener in list(self._listeners):
            listener(signal)


# ---- helpers for emulators that serve a fault ---------------------------------------------------


async def hold_until_client_gives_up(request: web.Request, cap_s: float = HOLD_CAP_S) -> None:
    """A ``timeout`` fault: answer nothing until the client closes the connection (its read
    timeout fired), then drop it; after ``cap_s`` the connection is dropped anyway."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + cap_s
    while loop.time() < give_up:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(0.02)
    reset_connection(request)


def reset_connection(request: web.Request) -> None:
    """A ``reset`` fault: abort the connection with a TCP RST (linger 0), no answer at all. The
    handler must then raise ``asyncio.CancelledError`` as aiohttp does for a lost client."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
