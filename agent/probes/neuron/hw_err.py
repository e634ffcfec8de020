"""Pure parser of the Neuron driver's ``NEURON_HW_ERR=`` kernel-log lines.

The driver logs fatal hardware errors as one line, in one of two published forms. The documented
one names the device, for example::

    NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR instance-id=i-0abc hostname=ip-10-0-0-1 nd-id=0 nc-id=0
    serial-num=19fcda00f5ff6eb9 action=TERMINATE_INSTANCE

(one line in the log). A line of this form counts as complete when it names the error kind,
``nd-id`` (an integer) and ``action``; anything less is treated as truncated or garbage and yields
``None``. The short form names no device::

    kernel: NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR affecting neuron devices

(the form AWS's EKS node monitoring agent matches); its event concerns the node: no
``accelerator_index``, no serial, ``action`` empty. The marker may follow a prefix (``neuron:``,
``kernel:``, a timestamp).

Severity: every kind is ``fatal`` (AWS replaces the node for SRAM/NC/HBM uncorrectable and DMA
errors) except ``HANG_ON_COLLECTIVES`` (``critical``: the hardware fault is usually on another
worker of the same job). Kinds this module does not know are ``fatal`` too, with ``data.known``
false, because the driver uses this marker only for hardware errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Protocol

import msgspec
import structlog

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id

__all__ = ["KNOWN_KINDS", "MARKER", "SHORT_FORM", "HasMessage", "make_hw_err_handler", "parse_hw_err"]

MARKER: Final = "NEURON_HW_ERR="
KNOWN_KINDS: Final[dict[str, Severity]] = {
    "SRAM_UNCORRECTABLE_ERROR": "fatal",
    "NC_UNCORRECTABLE_ERROR": "fatal",
    "HBM_UNCORRECTABLE_ERROR": "fatal",
    "DMA_ERROR": "fatal",
    "HANG_ON_COLLECTIVES": "critical",
}
_KIND: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_PAIR: Final = re.compile(r"([a-z][a-z0-9_-]{0,31})=(\S{0,256})")
_INDEX: Final = re.compile(r"\d{1,4}")
#: The rest of a short-form line after the error kind.
SHORT_FORM: Final = "affecting neuron devices"

log = structlog.get_logger(__name__)


class HasMessage(Protocol):
    @property
    def message(self) -> str: ...


def parse_hw_err(message: str) -> EventDraft | None:
    """The ``neuron_hw_error`` event a kernel-log message describes, or ``None``."""
    at = message.find(MARKER)
    if at < 0:
        return None
    tokens = message[at + len(MARKER) :].split()
    if not tokens or not _KIND.fullmatch(tokens[0]):
        return None
    kind = tokens[0]
    if " ".join(tokens[1:]).rstrip(".") == SHORT_FORM:
        return _node_scoped(kind)
    fields: dict[str, str] = {}
    for token in tokens[1:]:
        m = _PAIR.fullmatch(token)
        if m is None:
            return None
        fields[m.group(1)] = m.group(2)
    nd = fields.get("nd-id", "")
    action = fields.get("action", "")
    if not _INDEX.fullmatch(nd) or not action:
        return None
    nc = fields.get("nc-id", "")
    serial = fields.get("serial-num", "")
    known = kind in KNOWN_KINDS
    severity: Severity = KNOWN_KINDS.get(kind, "fatal")
    return EventDraft(
        kind="neuron_hw_error",
        severity=severity,
        message=f"Neuron device {int(nd)}: {kind} (driver suggests {action})",
        accelerator_index=int(nd),
        accelerator_id=serial,
        source="kmsg",
        data={
            "error": kind,
            "nc_id": int(nc) if _INDEX.fullmatch(nc) else None,
            "serial": serial,
            "action": action,
            "instance_id": fields.get("instance-id", ""),
            "hostname": fields.get("hostname", ""),
            "known": known,
        },
    )


def _node_scoped(kind: str) -> EventDraft:
    """A short-form line: the node has the error; which device the line does not say."""
    return EventDraft(
        kind="neuron_hw_error",
        severity=KNOWN_KINDS.get(kind, "fatal"),
        message=f"Neuron hardware error {kind} affecting neuron devices (device not named)",
        source="kmsg",
        data={
            "error": kind,
            "nc_id": None,
            "serial": "",
            "action": "",
            "instance_id": "",
            "hostname": "",
            "known": kind in KNOWN_KINDS,
        },
    )


def make_hw_err_handler(
    emit: EventSink, inventory_lookup: Callable[[int], str | None], *, use_record_time: bool = False
) -> Callable[[HasMessage], None]:
    """A kernel-log record handler that emits ``neuron_hw_error`` events.

    ``inventory_lookup(device_index)`` returns the accelerator id the birth inventory gave that
    device (``None`` if unknown); the event carries it so consumers can join on it, and falls back
    to the serial number in the line. A record with a ``key`` gives an event whose id derives from
    it, so the same record read twice is one event for the collector. With ``use_record_time``
    (replays) the event takes the record's own time (``KmsgRecord.record_time()``) where it has
    one. The handler never raises: failures are counted and logged once.
    """
    failures = 0

    def handle(record: HasMessage) -> None:
        nonlocal failures
        try:
            message = record.message
            if MARKER not in message:
                return
            draft = parse_hw_err(message)
            if draft is None:
                return
            index = draft.accelerator_index
            known_id = inventory_lookup(index) if index is not None else None
            if known_id:
                draft = msgspec.structs.replace(draft, accelerator_id=known_id)
            key = getattr(record, "key", "")  # KmsgRecord.key: where the record was read
            if isinstance(key, str) and key:
                draft = msgspec.structs.replace(draft, id=stable_event_id("neuron_hw_error", key))
            own = getattr(record, "record_time", None) if use_record_time else None
            ts = own() if callable(own) else None
            if isinstance(ts, float):
                draft = msgspec.structs.replace(draft, ts=ts)
            emit(draft)
        except Exception as exc:
            failures += 1
            if failures == 1:
                log.warning("neuron_hw_err_handler_failed", error=repr(exc)[:300])

    return handle
