"""NVSwitch SXids on HGX boards: parse the NVSwitch driver's kernel-log lines, fold bursts.

The driver prints ``nvidia-nvswitch<n>: SXid (PCI:<bus id>): <sxid>, <Fatal|Non-fatal>, Link <l>
<what> [(First)]``; a few codes print other words after the code (``10002, Severity 5 Engine
instance 00 ...``). Whether it is fatal comes from the line when it says, else from NVIDIA's SXid
table (``fleetops.sxid_catalog``, from the Fabric Manager guide). Each becomes an
``nvswitch_sxid`` event; repeats of one SXid on one switch link fold like XIDs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import msgspec

from agent.probes.base import EventDraft, EventSink, Severity
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.burst import BurstFolder
from agent.probes.nvidia.xid_line import valid_pci_id
from fleetops.sxid_catalog import SxidCatalog, load_sxid_catalog
from fleetops.wire import DataValue

__all__ = ["SxidKmsgHandler", "SxidLine", "parse_sxid_line", "sxid_event"]

_SXID_RE: Final = re.compile(
    r"(?:nvidia-nvswitch(?P<switch>\d+): )?SXid \((?:PCI:)?(?P<pci>[^)\s]*)\): "
    r"(?P<sxid>\d+),?\s*(?P<rest>.*)$"
)
_SEVERITY_RE: Final = re.compile(r"^(?P<sev>Fatal|Non-fatal|Nonfatal|NonFatal)\b,?\s*", re.IGNORECASE)
_LINK_RE: Final = re.compile(r"\bLink (\d+)\b")


class SxidLine(msgspec.Struct, frozen=True, kw_only=True):
    """What one NVSwitch ``SXid`` line says."""

    sxid: int
    switch: int | None = None  # the N of nvidia-nvswitchN
    pci_id: str = ""  # as printed; empty when redacted
    link: int | None = None
    fatal: bool | None = None  # as the line says it; None: the line does not say
    first: bool = False  # "(First)": the first of its kind since the driver loaded
    text: str = ""


def parse_sxid_line(message: str) -> SxidLine | None:
    """Parse an NVSwitch ``SXid`` kernel-log message; ``None`` when the line is not one."""
    match = _SXID_RE.search(message)
    if match is None:
        return None
    sxid = int(match.group("sxid"))
    if not 0 < sxid < 100_000:
        return None
    pci = match.group("pci")
    if not valid_pci_id(pci):
        pci = ""
    rest = match.group("rest").strip()
    severity = _SEVERITY_RE.match(rest)
    fatal = severity.group("sev").lower() == "fatal" if severity is not None else None
    link = _LINK_RE.search(rest)
    switch = match.group("switch")
    return SxidLine(
        sxid=sxid,
        switch=int(switch) if switch is not None else None,
        pci_id=pci,
        link=int(link.group(1)) if link else None,
        fatal=fatal,
        first=rest.endswith("(First)"),
        text=rest[:512],
    )


def sxid_event(line: SxidLine, catalog: SxidCatalog) -> EventDraft:
    """The ``nvswitch_sxid`` event for a line (its time and id are set by the handler)."""
    entry = catalog.get(line.sxid)
    fatal = line.fatal if line.fatal is not None else (entry.fatal if entry is not None else None)
    data: dict[str, DataValue] = {"sxid": line.sxid, "known": entry is not None, "first": line.first}
    if entry is not None:
        data.update(name=entry.name, section=entry.section)
    if line.switch is not None:
        data["switch"] = line.switch
    if line.pci_id:
        data["pci"] = line.pci_id
    if line.link is not None:
        data["link"] = line.link
    if fatal is not None:
        data["fatal"] = fatal
    if line.text:
        data["text"] = line.text
    severity: Severity = "critical" if fatal else "warning"
    where = f"NVSwitch {line.switch}" if line.switch is not None else f"NVSwitch at {line.pci_id or '?'}"
    kind = "fatal" if fatal else ("non-fatal" if fatal is False else "unclassified")
    name = f" ({entry.name})" if entry is not None else ""
    on_link = f", link {line.link}" if line.link is not None else ""
    return EventDraft(
        kind="nvswitch_sxid",
        severity=severity,
        message=f"{where} SXid {line.sxid}{name}, {kind}{on_link}",
        pci_bus_id=line.pci_id,
        source="kmsg",
        data=data,
    )


class SxidKmsgHandler:
    """A kernel-log handler: NVSwitch ``SXid`` records become ``nvswitch_sxid`` events.

    Repeats of one SXid on one switch link within ``fold_window_s`` fold into one follow-up.
    The record's own time is used when ``use_record_time`` (replays); otherwise ``clock()``.
    """

    def __init__(
        self,
        emit: EventSink,
        clock: Callable[[], float],
        *,
        fold_window_s: float = 30.0,
        use_record_time: bool = False,
        catalog: SxidCatalog | None = None,
    ) -> None:
        self._folder = BurstFolder(emit, window_s=fold_window_s, tag="sxid")
        self._clock = clock
        self._use_record_time = use_record_time
        self.catalog = catalog if catalog is not None else load_sxid_catalog()
        self.lines_total = 0
        self.unparsed_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        if "SXid" not in record.message:
            return
        line = parse_sxid_line(record.message)
        if line is None:
            self.unparsed_total += 1
            return
        self.lines_total += 1
        own = record.record_time() if self._use_record_time else None
        ts = own if own is not None else self._clock()
        key = (line.switch, line.pci_id, line.sxid, line.link)
        self._folder.report(key, sxid_event(line, self.catalog), ts, record.key)

    def tick(self, now: float) -> None:
        self._folder.flush(now)

    def close(self) -> None:
        self._folder.close()
