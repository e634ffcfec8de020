"""NVIDIA driver lines that mean a fault without an XID (pure parsers and one handler).

* "GPU has fallen off the bus", in the shapes the driver prints it (``NVRM: GPU 0000:3b:00.0: GPU
  has fallen off the bus.``, ``NVRM: GPU at PCI:0000:3b:00: GPU-<uuid>: GPU has fallen off the
  bus.``, older ``NVRM: GPU at 0000:01:00.0 has fallen off the bus.``, and ``NVRM: The NVIDIA GPU
  0000:b3:00.0 (PCI ID: 10de:26b5) installed in this system has fallen off the bus ...``, which
  ``dmesg`` may show over three records) is XID 79, as peers treat it: it goes to the shared
  ``XidReporter`` as a corroborating sighting (source ``kmsg_bus``), so with the driver's own
  ``Xid ... 79`` line and NVML's event it is one occurrence, and alone it is still XID 79.
* ``NV_ERR_GPU_IS_LOST`` (RM calls failing because the GPU is gone, ``GPU lost from the bus``) is
  the same fault: when the line names the GPU's bus id it is another XID 79 sighting (same
  dedup); most such lines name none (``NVRM: nvCheckOkFailedNoLog: GPU lost from the bus
  [NV_ERR_GPU_IS_LOST]``): they cannot be pinned to a GPU, come by the hundred after the fault,
  and NVML reports the lost GPU by itself, so they are only counted (``unattributed_total``).
* ``RmInitAdapter failed! (0x26:0x56:1474)`` (optionally ``NVRM: GPU 0000:3b:00.0: ...``): the
  driver could not initialise a GPU: a ``gpu_init_failed`` event with the codes, folded per GPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from agent.probes.base import EventDraft, EventSink
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.burst import BurstFolder
from agent.probes.nvidia.xid import GpuDirectory, XidOccurrence, XidReporter
from agent.probes.nvidia.xid_line import XidLine, normalize_pci_id

__all__ = [
    "BUS_SOURCE",
    "NvidiaDriverLineHandler",
    "parse_fell_off_bus",
    "parse_gpu_is_lost",
    "parse_init_failed",
]

#: The source of XID 79 sightings from lines that are not XID lines.
BUS_SOURCE: Final = "kmsg_bus"
_BUS_ID: Final = r"(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?"
_BUS_ID_RE: Final = re.compile(rf"(?<![0-9a-fA-F:])(?:PCI:)?({_BUS_ID})(?![0-9a-fA-F])")
_FELL_OFF: Final = "fallen off the bus"
#: ``NVRM: The NVIDIA GPU 0000:b3:00.0`` opening the three-record form of the message.
_THE_GPU_RE: Final = re.compile(rf"NVRM: The NVIDIA GPU ({_BUS_ID})")
_INIT_RE: Final = re.compile(
    rf"NVRM: (?:GPU ({_BUS_ID}): )?RmInitAdapter failed! \((0x[0-9a-fA-F]+):(0x[0-9a-fA-F]+):(\d+)\)"
)
#: How long the bus id of ``The NVIDIA GPU <id>`` waits for the record that says it fell off.
_CONTINUATION_S: Final = 2.0


def _bus_id(message: str) -> str | None:
    match = _BUS_ID_RE.search(message)
    return match.group(1) if match else None


def parse_fell_off_bus(message: str) -> str | None:
    """The bus id a "fallen off the bus" line names (``""``: it names none); ``None``: not one.

    The driver's ``Xid (...): 79`` line is the XID handler's, not this one's."""
    if _FELL_OFF not in message or "NVRM:" not in message or "Xid" in message:
        return None
    return _bus_id(message) or ""


def parse_gpu_is_lost(message: str) -> str | None:
    """The bus id an ``NV_ERR_GPU_IS_LOST`` line names (``""``: none); ``None``: not one."""
    if "NV_ERR_GPU_IS_LOST" not in message or "Xid" in message or _FELL_OFF in message:
        return None
    return _bus_id(message) or ""


def parse_init_failed(message: str) -> tuple[str, str] | None:
    """``(bus id or "", "0x26:0x56:1474")`` for an ``RmInitAdapter failed!`` line; else ``None``."""
    match = _INIT_RE.search(message)
    if match is None:
        return None
    return match.group(1) or "", f"{match.group(2)}:{match.group(3)}:{match.group(4)}"


class NvidiaDriverLineHandler:
    """A kernel-log handler for the lines above: XID 79 sightings to the reporter, and
    ``gpu_init_failed`` events (folded per GPU within ``fold_window_s``)."""

    def __init__(
        self,
        reporter: XidReporter,
        emit: EventSink,
        clock: Callable[[], float],
        *,
        fold_window_s: float = 30.0,
        use_record_time: bool = False,
    ) -> None:
        self.reporter = reporter
        self.directory: GpuDirectory = reporter.directory
        self._folder = BurstFolder(emit, window_s=fold_window_s, tag="gpu_init")
        self._clock = clock
        self._use_record_time = use_record_time
        self._opening: tuple[str, float] | None = None  # "The NVIDIA GPU <id>" awaiting its end
        self.bus_lost_total = 0
        self.init_failed_total = 0
        self.unattributed_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        message = record.message
        if "NVRM:" not in message:
            return
        ts = self._time(record)
        opening = _THE_GPU_RE.search(message)
        if opening is not None:
            self._opening = (opening.group(1), ts)
        pci = parse_fell_off_bus(message)
        if pci is not None:
            if not pci and self._opening is not None and ts - self._opening[1] <= _CONTINUATION_S:
                pci = self._opening[0]
            self._opening = None
            self._lost(pci, ts, record.key, "GPU has fallen off the bus.")
            return
        pci = parse_gpu_is_lost(message)
        if pci is not None:
            self._lost(pci, ts, record.key, "NV_ERR_GPU_IS_LOST")
            return
        init = parse_init_failed(message)
        if init is not None:
            self._init_failed(init[0], init[1], ts, record.key)

    def tick(self, now: float) -> None:
        self._folder.flush(now)

    def close(self) -> None:
        self._folder.close()

    def _time(self, record: KmsgRecord) -> float:
        own = record.record_time() if self._use_record_time else None
        return own if own is not None else self._clock()

    def _lost(self, pci: str, ts: float, key: str, text: str) -> None:
        if not pci:
            self.unattributed_total += 1
            return
        self.bus_lost_total += 1
        line = XidLine(pci_id=pci, xid=79, text=text)
        self.reporter.report(
            XidOccurrence(xid=79, ts=ts, source=BUS_SOURCE, pci_id=pci, line=line, record_key=key)
        )

    def _init_failed(self, pci: str, code: str, ts: float, key: str) -> None:
        self.init_failed_total += 1
        gpu = self.directory.by_pci(pci) if pci else None
        on = f"GPU {gpu.index}" if gpu is not None else (f"GPU at {pci}" if pci else "a GPU")
        data: dict[str, str | int | bool | float | None] = {"code": code}
        if pci:
            data["pci"] = pci
        if gpu is None:
            data["unmapped"] = True
        draft = EventDraft(
            kind="gpu_init_failed",
            severity="critical",
            message=f"{on} failed to initialise (RmInitAdapter {code})",
            accelerator_index=gpu.index if gpu else None,
            accelerator_id=gpu.uuid if gpu else "",
            pci_bus_id=gpu.pci_bus_id if gpu else pci,
            source="kmsg",
            data=data,
        )
        self._folder.report(normalize_pci_id(pci) if pci else "unknown", draft, ts, key)
