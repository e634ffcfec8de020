"""The NVML recording format: how ``agent.probes.nvidia.record`` writes what a real driver
answered, and how the simulated NVML reads it back. One recorded answer per call key."""

from __future__ import annotations

import functools
from typing import Final

__all__ = ["RECORDING_FORMAT", "call_key", "field_key"]

RECORDING_FORMAT: Final = "fleetops-nvml-recording/1"


def call_key(method: str, *args: int) -> str:
    """The key of one NVML call in a recording: ``nvmlDeviceGetTemperature:0:0``."""
    if not args:
        return method
    return _call_key(method, tuple(int(a) for a in args))


@functools.lru_cache(maxsize=1024)
def _call_key(method: str, args: tuple[int, ...]) -> str:
    # The probe asks the same few hundred (method, arguments) pairs every cycle.
    return ":".join([method, *(str(a) for a in args)])


def field_key(field_id: int, scope_id: int = 0) -> str:
    """The key of one field value in a recording: ``field:230`` or ``field:230:1``."""
    return f"field:{field_id}" if scope_id == 0 else f"field:{field_id}:{scope_id}"
