"""The emulator's admin endpoint body for faults (`POST /_sim/faults`)."""

from __future__ import annotations

from typing import Any

from noderescue.sim.faults import Faults, FaultSpec


def apply_fault_request(faults: Faults, body: dict[str, Any]) -> list[int]:
    """Any of: clear, api_error_rate, api_error_codes (ints or "timeout"), latency_s,
    cloud_throttle_rate, outage_for_s (real seconds), watch_disconnect, force_410; ``fault`` (one
    ``FaultSpec``, its ``for`` in real seconds) or ``faults`` (a list of them) to arm targeted
    faults, ``remove_fault`` (an id) to disarm one. Returns the ids of the faults armed.

    Raises ``ValueError`` (before changing anything) when a fault does not validate."""
    specs = [FaultSpec.model_validate(raw) for raw in _fault_list(body)]
    if body.get("clear"):
        faults.clear()
    if "api_error_rate" in body or "api_error_codes" in body:
        codes = tuple(body.get("api_error_codes") or faults.api_error_codes)
        faults.set_api_errors(float(body.get("api_error_rate", faults.api_error_rate)), codes)
    if "latency_s" in body:
        faults.latency_s = float(body["latency_s"])
    if "cloud_throttle_rate" in body:
        faults.cloud_throttle_rate = float(body["cloud_throttle_rate"])
    if body.get("watch_disconnect"):
        faults.watch_disconnect_now()
    if body.get("force_410"):
        faults.force_410_now()
    if body.get("outage_for_s"):
        faults.api_outage(float(body["outage_for_s"]))
    if "remove_fault" in body:
        faults.remove_fault(int(body["remove_fault"]))
    return [faults.add_fault(spec) for spec in specs]


def _fault_list(body: dict[str, Any]) -> list[Any]:
    listed = body.get("faults", [])
    if not isinstance(listed, list):
        raise ValueError("'faults' must be a list of faults")
    return ([body["fault"]] if "fault" in body else []) + listed


def describe_faults(faults: Faults) -> dict[str, Any]:
    return {
        "api_error_rate": faults.api_error_rate,
        "api_error_codes": list(faults.api_error_codes),
        "latency_s": faults.latency_s,
        "cloud_throttle_rate": faults.cloud_throttle_rate,
        "outage_remaining_s": faults.outage_remaining_s(),
        "faults": [fault.describe() for fault in faults.targeted()],
    }
