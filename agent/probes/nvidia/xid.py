"""NVIDIA XIDs: parse kernel-log lines, classify with the catalog, dedup and fold bursts.

``parse_xid_line`` is pure. ``XidReporter`` is the one place where XIDs from both sources (the
kernel log and NVML events) meet: the same XID on the same GPU seen by both sources within
``dedup_window_s`` is one occurrence, and repeats of one XID on one GPU within
``fold_window_s`` are folded: the first is published at once, later ones are counted and
published as one follow-up event (``count`` > 1) when the window closes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import structlog

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.xid_line import XidLine, normalize_pci_id, parse_xid_line
from fleetops.wire import Accelerator, DataValue
from fleetops.xid_catalog import XidCatalog, load_catalog, xid74_register_classes

__all__ = [
    "CORROBORATING_SOURCES",
    "RECOVERY_ACTION_NAMES",
    "GpuDirectory",
    "XidKmsgHandler",
    "XidLine",
    "XidOccurrence",
    "XidReporter",
    "classify",
    "normalize_pci_id",
    "parse_xid_line",
]

_log = structlog.get_logger(__name__)

#: Sources of lines that corroborate an XID without being one ("GPU has fallen off the bus",
#: ``NV_ERR_GPU_IS_LOST``): a sighting from one of them is held like an NVML event's, gives way
#: to the XID line if it comes, and never uses up the match another source's sighting waits for.
CORROBORATING_SOURCES: Final = frozenset({"kmsg_bus"})

#: NVML_GPU_RECOVERY_ACTION_* (field 230) and XID 154's names for them.
RECOVERY_ACTION_NAMES: Final[dict[int, str]] = {
    0: "None",
    1: "GPU Reset Required",
    2: "Node Reboot Required",
    3: "Drain P2P",
    4: "Drain and Reset",
    5: "Recover IMEX Domain",
    6: "Bus Reset Required",
    7: "System Reboot Required",
}

_SEVERITY_BY_BUCKET: Final[dict[str, Severity]] = {
    "IGNORE": "info",
    "RESTART_APP": "warning",
    "RESTART_VM": "warning",
    "CHECK_UVM": "warning",
    "UPDATE_SWFW": "warning",
    "XID_154": "warning",
    "WORKFLOW_XID_45": "warning",
    "CONTACT_SUPPORT": "warning",
    "RESET_GPU": "critical",
    "WORKFLOW_XID_48": "critical",
    "WORKFLOW_NVLINK_ERR": "critical",
    "WORKFLOW_NVLINK5_ERR": "critical",
    "CHECK_MECHANICALS": "critical",
    "RESTART_BM": "fatal",
}


def classify(line: XidLine, catalog: XidCatalog) -> tuple[Severity, dict[str, DataValue]]:
    """The event severity and the catalog data for an XID (unknown XIDs classify as warning)."""
    entry = catalog.get(line.xid)
    data: dict[str, DataValue] = {"catalog_edition": catalog.edition}
    if entry is None:
        data.update(mnemonic="UNKNOWN", known=False)
        return "warning", data
    data.update(
        mnemonic=entry.mnemonic,
        description=entry.description,
        immediate=entry.immediate,
        investigatory=entry.investigatory,
        known=True,
    )
    severity = _SEVERITY_BY_BUCKET.get(entry.immediate, "warning")
    if line.xid == 154 and line.recovery_to is not None:
        severity = "info" if line.recovery_to == 0 else "critical"
    if line.xid == 74 and line.registers:
        by_register = xid74_register_classes(line.registers)
        data["nvlink_reg0_classes"] = ",".join(by_register.get(0, ()))
        for position in (2, 3, 4):
            if position in by_register:
                data[f"nvlink_reg{position}_classes"] = ",".join(by_register[position])
        union = dict.fromkeys(c for classes in by_register.values() for c in classes)
        data["nvlink_classes"] = ",".join(union)
    if 144 <= line.xid <= 150 and len(line.registers) >= 2:
        data.update(_decode_nvlink5(line, catalog))
        if data.get("nvlink_immediate") == "IGNORE":
            severity = "info"
    return severity, data


def _mask_matches(mask: str, value: int) -> bool:
    bits = mask.strip()
    if not bits or any(c not in "01-" for c in bits):
        return False
    width = len(bits)
    for i, c in enumerate(bits):
        if c == "-":
            continue
        if (value >> (width - 1 - i) & 1) != int(c):
            return False
    return True


def _decode_nvlink5(line: XidLine, catalog: XidCatalog) -> dict[str, DataValue]:
    intr, status = line.registers[0], line.registers[1]
    for row in catalog.nvlink_decode:
        if row.xid != line.xid:
            continue
        if not (_mask_matches(row.intr_mask_v2, intr) or _mask_matches(row.intr_mask_v1, intr)):
            continue
        if row.error_status and status not in row.error_status:
            continue
        return {
            "nvlink_decode": "matched",
            "nvlink_subcode_decoded": row.subcode,
            "nvlink_immediate": row.immediate,
            "nvlink_investigatory": row.investigatory,
            "nvlink_severity": row.severity,
        }
    return {"nvlink_decode": "unmatched"}


#: The optional details of an ``XidLine`` carried into the event data under their own names.
_DETAIL_FIELDS: Final = (
    "gpu_instance",
    "compute_instance",
    "gpc",
    "tpc",
    "sm",
    "exception",
    "contained",
    "containment",
    "rst",
    "d_rst",
)


def _line_details(line: XidLine) -> dict[str, DataValue]:
    out: dict[str, DataValue] = {
        name: getattr(line, name) for name in _DETAIL_FIELDS if getattr(line, name) is not None
    }
    if line.pci_redacted:
        out["pci_redacted"] = True
    return out


class GpuIdentity(msgspec.Struct, frozen=True):
    index: int
    uuid: str
    pci_bus_id: str


class GpuDirectory:
    """PCI id and UUID → GPU, from the NVML inventory (thread-safe, replaced as a whole)."""

    def __init__(self, accelerators: Sequence[Accelerator] = ()) -> None:
        self._by_pci: dict[str, GpuIdentity] = {}
        self._by_uuid: dict[str, GpuIdentity] = {}
        self.update(accelerators)

    def update(self, accelerators: Sequence[Accelerator]) -> None:
        gpus = [GpuIdentity(a.index, a.id, a.pci_bus_id) for a in accelerators if a.vendor == "nvidia"]
        self._by_pci = {normalize_pci_id(g.pci_bus_id): g for g in gpus if g.pci_bus_id}
        self._by_uuid = {g.uuid: g for g in gpus}

    def by_pci(self, pci: str) -> GpuIdentity | None:
        return self._by_pci.get(normalize_pci_id(pci))

    def by_uuid(self, uuid: str) -> GpuIdentity | None:
        return self._by_uuid.get(uuid)


class XidOccurrence(msgspec.Struct, frozen=True, kw_only=True):
    """One sighting of an XID from one source (``kmsg`` or ``nvml_events``)."""

    xid: int
    ts: float
    source: str
    pci_id: str = ""
    uuid: str = ""
    line: XidLine | None = None
    #: The kernel-log record it came from (``KmsgRecord.key``); empty for NVML events.
    record_key: str = ""


class _Burst:
    __slots__ = ("draft", "first_key", "first_ts", "folded", "last_ts", "window_end")

    def __init__(self, draft: EventDraft, window_end: float) -> None:
        self.draft = draft
        self.window_end = window_end
        self.folded = 0
        self.first_ts: float | None = None
        self.first_key = ""  # record key of the first repeat folded into this window
        self.last_ts = 0.0


class XidReporter:
    """Turns XID occurrences into events: cross-source dedup, burst folding, classification.

    ``report`` and ``flush`` are thread-safe. Events go to the sink given to ``bind``; those
    reported before ``bind`` are kept (up to 1000) and sent when it is called.
    """

    def __init__(
        self,
        *,
        directory: GpuDirectory | None = None,
        catalog: XidCatalog | None = None,
        fold_window_s: float = 30.0,
        dedup_window_s: float = 10.0,
        nvml_hold_s: float = 0.5,
    ) -> None:
        self.directory = directory if directory is not None else GpuDirectory()
        self.catalog = catalog if catalog is not None else load_catalog()
        self.fold_window_s = fold_window_s
        self.dedup_window_s = dedup_window_s
        #: An NVML-event sighting waits this long for the kernel log's copy of the same XID, which
        #: carries the text, the process and the registers (XID 74, 144-150, 154).
        self.nvml_hold_s = nvml_hold_s
        self._held: dict[tuple[str, int], list[XidOccurrence]] = {}
        self._lock = threading.Lock()
        self._emit: EventSink | None = None
        self._early: deque[EventDraft] = deque(maxlen=1000)
        self._bursts: dict[tuple[str, int], _Burst] = {}
        self._seen: dict[tuple[str, int], dict[str, deque[float]]] = {}
        self.occurrences_total = 0
        self.duplicates_total = 0
        self.events_total = 0

    def bind(self, emit: EventSink) -> None:
        """Set the sink (the first call wins) and send what was reported before."""
        with self._lock:
            if self._emit is not None:
                return
            self._emit = emit
            early = list(self._early)
            self._early.clear()
        for draft in early:
            emit(draft)

    def report(self, occ: XidOccurrence) -> None:
        out: list[EventDraft] = []
        with self._lock:
            self.occurrences_total += 1
            out.extend(self._flush_locked(occ.ts))
            key = (self._gpu_key(occ), occ.xid)
            if occ.source != "kmsg" and self.nvml_hold_s > 0:
                self._held.setdefault(key, []).append(occ)  # released by flush() after the hold
            else:
                if self._held.get(key):
                    self._held[key].pop(0)  # the kernel log's copy replaces the held NVML one
                    self.duplicates_total += 1
                    if not self._held[key]:
                        del self._held[key]
                out.extend(self._accept_locked(key, occ))
        self._send(out)

    def _accept_locked(self, key: tuple[str, int], occ: XidOccurrence) -> list[EventDraft]:
        """Dedup across sources, then fold into the running burst or start one (event out at once)."""
        if self._is_duplicate(key, occ):
            self.duplicates_total += 1
            return []
        burst = self._bursts.get(key)
        if burst is not None and occ.ts < burst.window_end:
            burst.folded += 1
            if burst.first_ts is None:
                burst.first_ts, burst.first_key = occ.ts, occ.record_key
            burst.last_ts = occ.ts
            return []
        draft = self._draft(occ)
        self._bursts[key] = _Burst(draft, occ.ts + self.fold_window_s)
        return [draft]

    def flush(self, now: float) -> None:
        """Publish folded follow-ups whose window has closed (call periodically)."""
        with self._lock:
            out = self._flush_locked(now)
        self._send(out)

    def close(self) -> None:
        """Publish every pending follow-up now (at shutdown, or at the end of a replay)."""
        with self._lock:
            out = self._flush_locked(float("inf"))
        self._send(out)

    def _flush_locked(self, now: float) -> list[EventDraft]:
        out: list[EventDraft] = []
        for key in [k for k, held in self._held.items() if held and now >= held[0].ts + self.nvml_hold_s]:
            waiting = self._held.pop(key)
            ready = [o for o in waiting if now >= o.ts + self.nvml_hold_s]
            if len(ready) < len(waiting):
                self._held[key] = waiting[len(ready) :]
            for occ in ready:
                out.extend(self._accept_locked(key, occ))
        for key in [k for k, b in self._bursts.items() if now >= b.window_end]:
            burst = self._bursts[key]
            if burst.folded == 0:
                del self._bursts[key]
                continue
            out.append(
                msgspec.structs.replace(
                    burst.draft,
                    count=burst.folded,
                    first_ts=burst.first_ts,
                    ts=burst.last_ts,
                    message=f"{burst.draft.message} (repeated {burst.folded} times)",
                    data={**burst.draft.data, "folded": True},
                    # stable when the first folded repeat has a source record: a re-read that folds
                    # the same repeats gives the follow-up the same id
                    id=stable_event_id("xid_fold", burst.first_key) if burst.first_key else "",
                )
            )
            # the burst goes on: keep folding into a fresh window instead of re-raising at once
            if now == float("inf"):
                del self._bursts[key]
            else:
                self._bursts[key] = _Burst(burst.draft, burst.window_end + self.fold_window_s)
        return out

    def _is_duplicate(self, key: tuple[str, int], occ: XidOccurrence) -> bool:
        by_source = self._seen.setdefault(key, {})
        horizon = occ.ts - self.dedup_window_s
        corroborating = occ.source in CORROBORATING_SOURCES
        for source, stamps in by_source.items():
            while stamps and stamps[0] < horizon:
                stamps.popleft()
            if source != occ.source and stamps:
                if not corroborating:
                    stamps.popleft()  # matched: the other source already reported this one
                # a corroborating line leaves the sighting for the next source to match
                return True
        by_source.setdefault(occ.source, deque()).append(occ.ts)
        return False

    def _gpu_key(self, occ: XidOccurrence) -> str:
        if occ.pci_id:
            return normalize_pci_id(occ.pci_id)
        if not occ.uuid:
            return "unknown"  # a line whose bus id was redacted: one GPU we cannot name
        gpu = self.directory.by_uuid(occ.uuid)
        return normalize_pci_id(gpu.pci_bus_id) if gpu is not None else f"uuid:{occ.uuid}"

    def _draft(self, occ: XidOccurrence) -> EventDraft:
        line = occ.line if occ.line is not None else XidLine(pci_id=occ.pci_id, xid=occ.xid)
        severity, data = classify(line, self.catalog)
        gpu = self.directory.by_uuid(occ.uuid) if occ.uuid else self.directory.by_pci(occ.pci_id)
        data.update(xid=occ.xid, pid=line.pid, process_name=line.process_name, channel=line.channel)
        if line.link is not None:
            data["link"] = line.link
        if line.registers:
            data["registers"] = " ".join(f"0x{r:x}" for r in line.registers)
        if line.recovery_to is not None:
            data.update(
                action_from=line.recovery_from,
                action=line.recovery_to,
                action_name=RECOVERY_ACTION_NAMES.get(line.recovery_to, line.recovery_to_name or ""),
            )
        if line.nvlink_subcode is not None:
            data.update(nvlink_subcode=line.nvlink_subcode, nvlink_fatal=line.nvlink_fatal)
        data.update(_line_details(line))
        if line.text:
            data["text"] = line.text[:512]
        pci_printed = occ.pci_id or (gpu.pci_bus_id if gpu else "")
        if gpu is None:
            data["unmapped"] = True
        if occ.source in CORROBORATING_SOURCES:
            data["reported_as"] = occ.source  # no XID line: the driver's own words for the fault
        mnemonic = str(data.get("mnemonic", ""))
        on = f"GPU {gpu.index}" if gpu else (pci_printed or "an unknown GPU")
        return EventDraft(
            kind="xid",
            severity=severity,
            message=f"XID {occ.xid} ({mnemonic}) on {on}",
            accelerator_index=gpu.index if gpu else None,
            accelerator_id=gpu.uuid if gpu else "",
            pci_bus_id=gpu.pci_bus_id if gpu else pci_printed,
            ts=occ.ts,
            source=occ.source,
            data=data,
            id=stable_event_id("xid", occ.record_key) if occ.record_key else "",
        )

    def _send(self, drafts: list[EventDraft]) -> None:
        if not drafts:
            return
        with self._lock:
            emit = self._emit
            if emit is None:
                self._early.extend(drafts)
                return
            self.events_total += len(drafts)
        for draft in drafts:
            emit(draft)


class XidKmsgHandler:
    """A kernel-log handler: ``NVRM: Xid`` records become occurrences for the reporter.

    The record's own time is used when ``use_record_time`` (replays); otherwise ``clock()``.
    """

    def __init__(
        self,
        reporter: XidReporter,
        clock: Callable[[], float],
        *,
        use_record_time: bool = False,
    ) -> None:
        self.reporter = reporter
        self._clock = clock
        self._use_record_time = use_record_time
        self.lines_total = 0
        self.unparsed_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        if "NVRM: Xid" not in record.message:
            return
        line = parse_xid_line(record.message)
        if line is None:
            self.unparsed_total += 1
            return
        self.lines_total += 1
        own = record.record_time() if self._use_record_time else None
        ts = own if own is not None else self._clock()
        self.reporter.report(
            XidOccurrence(
                xid=line.xid, ts=ts, source="kmsg", pci_id=line.pci_id, line=line, record_key=record.key
            )
        )

    def tick(self, now: float) -> None:
        self.reporter.flush(now)
