"""Pure edge detection for Trainium: compare the previous state with the current one.

Events (kinds from ``fleetops.wire.EVENT_KINDS``):

* ``ecc_uncorrected`` (critical): an uncorrected ECC count of a present device rose;
  ``data.memory`` is ``"hbm"``, ``"sram"`` or ``"hbm_repairable"`` (the sysfs counter of HBM errors
  the driver can repair by reload or reboot), ``data.delta`` the rise, ``data.total`` the new count.
  A count that falls (driver reloaded) only resets the baseline. An HBM or SRAM count (neuron-monitor's,
  cumulative since the driver loaded) that is not zero the first time a device's count is seen has
  no baseline to rise from: it is an event too, once ("present at start", ``data.at_start`` true,
  ``data.delta`` the count). Its id derives from ``start_key`` (the boot), the device, the memory and
  the count, so an agent restart that finds the same count gives the same event, which the collector
  already has; a count that changed meanwhile is a new one.
* ``accelerator_missing`` (critical): a device present before is gone; ``data.expected``,
  ``data.present`` (device counts) and ``data.missing`` (comma-separated indexes).
* ``neuron_group_error`` (warning): a metric group went from no error to error; once per
  transition, not once per period. ``data.group`` names it, ``data.error`` is its text.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from agent.probes.base import EventDraft, stable_event_id

__all__ = ["NeuronState", "detect"]


class NeuronState(msgspec.Struct, frozen=True, kw_only=True):
    present: frozenset[int] = frozenset()
    ids: dict[int, str] = {}
    hbm_uncorrected: dict[int, int] = {}
    sram_uncorrected: dict[int, int] = {}
    hbm_repairable_uncorrected: dict[int, int] = {}
    group_errors: dict[str, str] = {}


#: The counts whose first non-zero value is an event ("present at start"): neuron-monitor's.
_AT_START: frozenset[str] = frozenset(("hbm", "sram"))


def detect(prev: NeuronState | None, cur: NeuronState, *, start_key: str = "") -> list[EventDraft]:
    """Events for what changed from ``prev`` to ``cur``; ``prev`` ``None`` is the first look."""
    events: list[EventDraft] = []
    base = prev or NeuronState()
    for memory, before, after in (
        ("hbm", base.hbm_uncorrected, cur.hbm_uncorrected),
        ("sram", base.sram_uncorrected, cur.sram_uncorrected),
        ("hbm_repairable", base.hbm_repairable_uncorrected, cur.hbm_repairable_uncorrected),
    ):
        events.extend(_ecc_rises(memory, before, after, cur))
        if memory in _AT_START:
            events.extend(_ecc_at_start(memory, before, after, cur, start_key))
    if prev is not None:
        missing = sorted(prev.present - cur.present)
        if missing:
            events.append(
                EventDraft(
                    kind="accelerator_missing",
                    severity="critical",
                    message=f"Neuron device(s) {', '.join(map(str, missing))} disappeared",
                    accelerator_index=missing[0],
                    accelerator_id=prev.ids.get(missing[0], ""),
                    source="neuron",
                    data={
                        "expected": len(prev.present),
                        "present": len(cur.present),
                        "missing": ",".join(map(str, missing)),
                    },
                )
            )
    for group in sorted(cur.group_errors):
        if group not in base.group_errors:
            events.append(
                EventDraft(
                    kind="neuron_group_error",
                    severity="warning",
                    message=f"neuron-monitor group {group} reported an error",
                    source="neuron-monitor",
                    data={"group": group[:256], "error": cur.group_errors[group][:256]},
                )
            )
    return events


def _ecc_at_start(
    memory: str, before: Mapping[int, int], after: Mapping[int, int], cur: NeuronState, start_key: str
) -> list[EventDraft]:
    out: list[EventDraft] = []
    for index in sorted(after):
        total = after[index]
        if index not in cur.present or index in before or total <= 0:
            continue
        device_id = cur.ids.get(index, "")
        out.append(
            EventDraft(
                kind="ecc_uncorrected",
                severity="critical",
                message=f"Neuron device {index}: {total} uncorrected {memory.upper()} ECC errors "
                "present at start",
                accelerator_index=index,
                accelerator_id=device_id,
                source="neuron",
                data={"memory": memory, "delta": total, "total": total, "at_start": True},
                id=stable_event_id(
                    "neuron_ecc_at_start", f"{start_key}:{device_id or index}:{memory}:{total}"
                ),
            )
        )
    return out


def _ecc_rises(
    memory: str, before: Mapping[int, int], after: Mapping[int, int], cur: NeuronState
) -> list[EventDraft]:
    out: list[EventDraft] = []
    for index in sorted(after):
        if index not in cur.present or index not in before:
            continue
        delta = after[index] - before[index]
        if delta > 0:
            out.append(
                EventDraft(
                    kind="ecc_uncorrected",
                    severity="critical",
                    message=f"Neuron device {index}: uncorrected {memory.upper()} ECC errors +{delta}",
                    accelerator_index=index,
                    accelerator_id=cur.ids.get(index, ""),
                    source="neuron",
                    data={"memory": memory, "delta": delta, "total": after[index]},
                )
            )
    return out
