"""What a probe is, and the values it hands to the agent.

A probe reads one source (the host, NVML, neuron-monitor, a simulator ...). The agent's runner
owns timing, timeouts and health; a probe only starts, describes its inventory, samples, and
reports discrete events through the sink it was given at start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import msgspec

from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    DataValue,
    HostRasReadings,
    HostReadings,
    Nic,
    NicReadings,
)

__all__ = [
    "EventDraft",
    "EventSink",
    "NicInventory",
    "Probe",
    "Sample",
    "Unsupported",
    "stable_event_id",
]

Severity = Literal["info", "warning", "critical", "fatal"]


class Unsupported(Exception):
    """The hardware or library this probe reads is absent on this node: no data, not a fault."""


class EventDraft(msgspec.Struct, frozen=True, kw_only=True):
    """An event as a probe reports it; the agent adds node, session and sequence.

    ``id`` is the event's identity when the probe can derive it from its source record (see
    ``stable_event_id``), so that reading the same record again after a crash gives the same id and
    the collector drops the copy; the agent scopes it to the node (site and name) to make the wire
    id. Empty: the agent gives the event a fresh random id.
    """

    kind: str
    severity: Severity
    message: str = ""
    accelerator_index: int | None = None
    accelerator_id: str = ""
    pci_bus_id: str = ""
    count: int = 1
    first_ts: float | None = None
    ts: float | None = None
    source: str = ""
    data: dict[str, DataValue] = {}
    id: str = ""


def stable_event_id(tag: str, record_key: str, index: int = 0) -> str:
    """The id of the ``index``-th event a handler (``tag``) derived from one source record.

    ``record_key`` names the record where it was read (``/dev/kmsg``: boot id and sequence number;
    a file: its identity and the record's byte offset). 32 hex digits, like a random event id.
    """
    digest = hashlib.sha256(f"{tag}\x1f{record_key}\x1f{index}".encode()).hexdigest()
    return digest[:32]


#: Receives events as they happen. Safe to call from any thread. The agent's sink queues each draft
#: on its event loop, where it is written to the durable spool in order: a callback that a probe
#: schedules on that loop (``call_soon_threadsafe``) after ``emit`` returned runs once the draft
#: is durable. Sources that keep a read position use this to save it only then.
EventSink = Callable[[EventDraft], None]


class Sample(msgspec.Struct, kw_only=True):
    """What one probe read in one cycle."""

    host: HostReadings | None = None
    #: host RAS readings (sysfs, /proc), attached to the frame's host reading
    host_ras: HostRasReadings | None = None
    accelerators: list[AcceleratorReadings] = []
    nics: list[NicReadings] = []


class Probe(Protocol):
    """A source of readings and events. Implementations live one per module."""

    name: str

    async def start(self, emit: EventSink) -> None:
        """Open the source. Raise ``Unsupported`` when it does not exist on this node."""

    def inventory(self) -> list[Accelerator]:
        """The accelerators this probe found, for the birth message (valid after ``start``)."""

    async def sample(self) -> Sample:
        """Read current values. Must not block the event loop (use threads for blocking calls)."""

    async def stop(self) -> None:
        """Release the source; called once at shutdown for every probe whose ``start`` was tried,
        including one that failed or timed out (it may hold a thread or a child process)."""


@runtime_checkable
class NicInventory(Protocol):
    """A probe that also inventories network ports for the birth message (``agent.probes.nic``)."""

    def nic_inventory(self) -> list[Nic]:
        """The ports this probe found (valid after ``start``)."""
