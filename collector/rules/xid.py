"""XID rules: NVIDIA's XID catalog (``fleetops.xid_catalog``) decides, as data.

* The *immediate* resolution bucket of an XID chooses the action (``BUCKET_ACTIONS``).
* Workflow buckets are worked out as their text says: XID 48 solo is a GPU reset, with XID 63/64 a
  drain then reset; XID 74 is decoded from its registers; XIDs 144–150 from the catalog's NVLink5
  decode table; XID 45 never asks for anything alone (its solo fix is a fabric-manager restart only
  when it repeats).
* Application-class XIDs (13, 31, 43, 45, 69, 94, 137) raise nothing alone. Repeated on the same GPU
  (``xid.app_repeat_count`` within ``xid.app_repeat_window_s``) they become INVESTIGATE_SOFTWARE, or
  INSPECT_HARDWARE where the catalog's workflow says the repeat points at the hardware (13 on the
  same GPC/TPC, 31 on the same GPU).
* XID 154 is the driver's own verdict and wins (``verdict=True``).
* An XID the catalog does not know is an OBSERVE task naming it, never silence.
* ``overrides`` (XID → action) and ``ignore`` in ``[rules.xid]`` take precedence.
* An XID whose bus id was redacted names no GPU: evidence, never a task alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import msgspec

from collector.rules.actions import Action
from collector.rules.base import (
    VERDICT_PREFIX,
    Finding,
    RuleContext,
    as_int,
    duration_text,
    event_finding,
    where,
)
from collector.rules.gpu_events import ECC_TODO, NVLINK_TODO
from collector.rules.wording import advice, part, xid_name
from fleetops.wire import DataValue, Event
from fleetops.xid_catalog import NvlinkDecodeRow, XidCatalog, xid74_register_classes

__all__ = [
    "APP_CLASS_XIDS",
    "BUCKET_ACTIONS",
    "RECOVERY_ACTIONS",
    "decode_nvlink5",
    "recovery_action_of",
    "verdict_todo",
    "xid74_classes",
    "xid_rule",
]

APP_CLASS_XIDS: Final[frozenset[int]] = frozenset((13, 31, 43, 45, 69, 94, 137))

#: NVIDIA's immediate resolution bucket → our action. The WORKFLOW_* buckets are refined below.
BUCKET_ACTIONS: Final[dict[str, Action]] = {
    "RESTART_APP": Action.RESTART_APP,
    "RESET_GPU": Action.RESET_GPU,
    "RESTART_BM": Action.REBOOT_NODE,
    "RESTART_VM": Action.REBOOT_NODE,
    "CHECK_MECHANICALS": Action.INSPECT_HARDWARE,
    "CONTACT_SUPPORT": Action.CONTACT_VENDOR,
    "UPDATE_SWFW": Action.UPDATE_SOFTWARE,
    "IGNORE": Action.OBSERVE,
    "CHECK_UVM": Action.OBSERVE,  # "if UVM/vGPU is used, RESET_GPU; otherwise IGNORE": bare metal
    "WORKFLOW_XID_48": Action.RESET_GPU,
    "WORKFLOW_NVLINK_ERR": Action.INSPECT_HARDWARE,
    "WORKFLOW_NVLINK5_ERR": Action.INSPECT_HARDWARE,
    "XID_154_EVAL": Action.RESTART_APP,  # "if an XID 154 comes with it, take that action"
}

#: GPU recovery action (NVML field 230 / XID 154) → our action.
RECOVERY_ACTIONS: Final[dict[int, Action]] = {
    0: Action.OBSERVE,  # none
    1: Action.RESET_GPU,  # GPU reset required
    2: Action.REBOOT_NODE,  # node reboot required
    3: Action.DRAIN_NODE,  # drain peer-to-peer
    4: Action.DRAIN_NODE,  # drain and reset: drain first, then reset the GPU
    5: Action.INVESTIGATE_SOFTWARE,  # recover the IMEX domain
    6: Action.RESET_GPU,  # bus reset
    7: Action.REBOOT_NODE,  # system reboot
}
_RECOVERY_NAMES: Final[tuple[tuple[str, int], ...]] = (
    ("drain and reset", 4),
    ("drain_and_reset", 4),
    ("drain p2p", 3),
    ("drain_p2p", 3),
    ("node reboot", 2),
    ("node_reboot", 2),
    ("system reboot", 7),
    ("system_reboot", 7),
    ("bus reset", 6),
    ("bus_reset", 6),
    ("gpu reset", 1),
    ("gpu_reset", 1),
    ("imex", 5),
    ("none", 0),
)

#: Each XID 74 class → (action alone, action when repeated on the same link/GPU).
_XID74_CLASS_ACTIONS: Final[dict[str, tuple[Action, Action]]] = {
    "ignorable": (Action.OBSERVE, Action.OBSERVE),
    "ecc_threshold": (Action.OBSERVE, Action.OBSERVE),
    "sympathetic": (Action.CONTACT_VENDOR, Action.CONTACT_VENDOR),  # solo: report a bug
    "ecc_parity": (Action.OBSERVE, Action.CONTACT_VENDOR),  # more than 2 times on a link: report
    "link_hardware": (Action.INSPECT_HARDWARE, Action.INSPECT_HARDWARE),  # reseat, check the link
    "marginal_si": (Action.INSPECT_HARDWARE, Action.INSPECT_HARDWARE),
    "report_if_repeated": (Action.OBSERVE, Action.CONTACT_VENDOR),
    "report_bug": (Action.CONTACT_VENDOR, Action.CONTACT_VENDOR),
    "link_hardware_if_repeated": (Action.OBSERVE, Action.INSPECT_HARDWARE),
}
_GPC_TPC_RE: Final = re.compile(r"GPC\s*(\d+)\s*,\s*TPC\s*(\d+)")
#: XID 48 with XID 63 or 64 (NVIDIA's DRAIN_AND_RESET), in plain words.
_PAIR_TODO: Final = "drain, then reset to apply the row remap"


def verdict_todo(action: Action) -> str:
    """What a title asks when the driver's verdict decides: "reboot the node, as the driver asks"."""
    if action is Action.OBSERVE:
        return "nothing to do"
    return f"{advice(action)}, as the driver asks"


def _nvlink_todo(action: Action) -> str:
    if action is Action.INSPECT_HARDWARE:
        return NVLINK_TODO
    if action is Action.CONTACT_VENDOR:
        return "report it to NVIDIA"
    return advice(action)


def recovery_action_of(data: Mapping[str, DataValue]) -> Action | None:
    """The action for a GPU recovery verdict carried in an event's data (XID 154 or
    ``recovery_action`` events): a number (0-7) or a name such as "Node Reboot Required"."""
    for key in ("recovery_action", "action", "new_action", "action_name"):
        value = data.get(key)
        code = as_int(value) if value is not None else None
        if code is not None and code in RECOVERY_ACTIONS:
            return RECOVERY_ACTIONS[code]
        if isinstance(value, str):
            text = value.lower()
            for name, number in _RECOVERY_NAMES:
                if name in text:
                    return RECOVERY_ACTIONS[number]
    return None


def _registers(data: Mapping[str, DataValue]) -> tuple[int, ...]:
    raw = data.get("registers")
    if not isinstance(raw, str):
        return ()
    out: list[int] = []
    for piece in raw.replace(",", " ").split():
        value = as_int(piece)
        if value is None:
            return ()
        out.append(value)
    return tuple(out)


def xid74_classes(data: Mapping[str, DataValue]) -> list[str]:
    """The bit classes of an XID 74, from its registers (or the agent's ``nvlink_reg0_classes``)."""
    registers = _registers(data)
    classes: list[str] = []
    for labels in xid74_register_classes(registers).values():
        classes.extend(label for label in labels if label not in classes)
    if not registers:
        raw = data.get("nvlink_reg0_classes")
        if isinstance(raw, str):
            classes = [c for c in raw.split(",") if c in _XID74_CLASS_ACTIONS]
    return classes


def _mask_matches(mask: str, value: int) -> bool:
    bits = mask.strip()
    if not bits or any(c not in "01-" for c in bits):
        return False
    width = len(bits)
    return all(c == "-" or (value >> (width - 1 - i) & 1) == int(c) for i, c in enumerate(bits))


def decode_nvlink5(xid: int, registers: tuple[int, ...], catalog: XidCatalog) -> NvlinkDecodeRow | None:
    """The catalog's XID 144–150 decode row matching intrInfo (V2 or V1 mask) and errorStatus."""
    if len(registers) < 2:
        return None
    intr, status = registers[0], registers[1]
    for row in catalog.nvlink_decode:
        if row.xid != xid:
            continue
        if not (_mask_matches(row.intr_mask_v2, intr) or _mask_matches(row.intr_mask_v1, intr)):
            continue
        if row.error_status and status not in row.error_status:
            continue
        return row
    return None


def _same_gpu(event: Event, other: Event) -> bool:
    if event.accelerator_id and other.accelerator_id:
        return event.accelerator_id == other.accelerator_id
    if event.accelerator_index is not None and other.accelerator_index is not None:
        return event.accelerator_index == other.accelerator_index
    return bool(event.pci_bus_id) and event.pci_bus_id.lower() == other.pci_bus_id.lower()


def _earlier_xids(event: Event, ctx: RuleContext, codes: frozenset[int], window_s: float) -> list[Event]:
    """Earlier XID events on the same GPU with one of ``codes`` within ``window_s`` of ``event``."""
    node = ctx.node
    if node is None:
        return []
    out = []
    for other in node.recent_events:
        if other.id == event.id or other.kind != "xid" or not _same_gpu(event, other):
            continue
        code = as_int(other.data.get("xid"))
        if code in codes and abs(event.ts - other.ts) <= window_s:
            out.append(other)
    return out


def _gpc_tpc(event: Event) -> tuple[str, str] | None:
    text = event.data.get("text")
    match = _GPC_TPC_RE.search(text if isinstance(text, str) else event.message)
    return (match.group(1), match.group(2)) if match else None


def _app_class(event: Event, ctx: RuleContext, code: int) -> Finding | None:
    """Application XIDs: nothing alone; repeated on one GPU, software or hardware suspicion."""
    cfg = ctx.config
    earlier = _earlier_xids(event, ctx, frozenset((code,)), cfg.xid.app_repeat_window_s)
    occurrences = event.count + sum(e.count for e in earlier)
    if occurrences < cfg.xid.app_repeat_count:
        return None
    action = Action.INVESTIGATE_SOFTWARE
    todo = "check the workload first"
    why = "repeats of an application fault: look at the workload and the software stack first"
    if code == 31:
        action = Action.INSPECT_HARDWARE
        todo = "run GPU diagnostics"
        why = (
            "MMU faults repeating on the same GPU point at the GPU (NVIDIA WORKFLOW_XID_31): run diagnostics"
        )
    elif code == 13:
        mine = _gpc_tpc(event)
        if (
            mine is not None
            and sum(1 for e in earlier if _gpc_tpc(e) == mine) + 1 >= cfg.xid.app_repeat_count
        ):
            action = Action.INSPECT_HARDWARE
            todo = "run GPU diagnostics"
            why = (
                f"graphics exceptions repeating on GPC {mine[0]} TPC {mine[1]} point at the GPU "
                "(NVIDIA WORKFLOW_XID_13): run diagnostics"
            )
    return event_finding(
        event,
        ctx,
        fault=f"xid:{code}:repeated",
        action=action,
        what=f"{part(event.accelerator_index)} {xid_name(code, ctx.catalog.get(code))} repeating "
        f"(XID {code}, {occurrences} times)",
        todo=todo,
        detail=(
            f"XID {code} {occurrences} times within {duration_text(cfg.xid.app_repeat_window_s)}"
            f"{where(event.accelerator_index)}: {why}"
        ),
        rule="xid_app_repeat",
        extra={"occurrences": occurrences, "earlier_event_ids": [e.id for e in earlier][-20:]},
    )


def _xid48(event: Event, ctx: RuleContext) -> tuple[Action, str, str]:
    """(action, detail, the XIDs the title names)."""
    with_remap = _earlier_xids(event, ctx, frozenset((63, 64)), ctx.config.correlation_window_s)
    if with_remap:
        other = as_int(with_remap[-1].data.get("xid"))
        return (
            Action.DRAIN_NODE,
            "with XID 63/64: drain, then reset the GPU (NVIDIA DRAIN_AND_RESET)",
            f"XID 48, {other}",
        )
    return Action.RESET_GPU, "solo: reset the GPU (NVIDIA WORKFLOW_XID_48)", "XID 48"


def _xid74(event: Event, ctx: RuleContext) -> tuple[Action, str]:
    classes = xid74_classes(event.data)
    if not classes:
        return Action.INSPECT_HARDWARE, "registers not available: check the NVLink connections"
    repeated = len(_earlier_xids(event, ctx, frozenset((74,)), ctx.config.xid.app_repeat_window_s)) >= 2
    best = Action.OBSERVE
    for label in classes:
        alone, again = _XID74_CLASS_ACTIONS[label]
        candidate = again if repeated else alone
        if candidate is Action.INSPECT_HARDWARE or best is Action.OBSERVE:
            best = candidate
    return best, f"register classes {', '.join(classes)}{' (repeated)' if repeated else ''}"


def _xid_nvlink5(event: Event, ctx: RuleContext, code: int) -> tuple[Action, str]:
    registers = _registers(event.data)
    row = decode_nvlink5(code, registers, ctx.catalog) if registers else None
    bucket = row.immediate if row is not None else None
    if bucket is None and event.data.get("nvlink_decode") == "matched":
        raw = event.data.get("nvlink_immediate")
        bucket = raw if isinstance(raw, str) else None
    if bucket is not None:
        subcode = row.subcode if row is not None else str(event.data.get("nvlink_subcode_decoded") or "")
        return BUCKET_ACTIONS.get(bucket, Action.CONTACT_VENDOR), f"decoded {subcode}: NVIDIA bucket {bucket}"
    if registers:
        return Action.CONTACT_VENDOR, "registers match no row of NVIDIA's decode table: report it"
    return Action.INSPECT_HARDWARE, "no registers to decode: check the NVLink connections"


def xid_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """An XID → the action of its immediate resolution bucket, worked out as described above.

    An XID whose bus id was redacted (``data.pci_redacted``: a log as posted, replayed) names no
    GPU: it is evidence on the node, never a task of its own (it could be any GPU, or none)."""
    finding = _xid_finding(event, ctx)
    if finding is not None and event.data.get("pci_redacted") is True and event.accelerator_index is None:
        return msgspec.structs.replace(finding, opens=False)
    return finding


def _xid_finding(event: Event, ctx: RuleContext) -> Finding | None:
    if event.kind != "xid":
        return None
    cfg = ctx.config
    code = as_int(event.data.get("xid"))
    gpu = part(event.accelerator_index)
    if code is None:
        return event_finding(
            event,
            ctx,
            fault="xid:unknown",
            action=Action.OBSERVE,
            what=f"{gpu} unreadable XID",
            todo=advice(Action.OBSERVE),
            detail=f"XID event without a readable code{where(event.accelerator_index, event.pci_bus_id)}: "
            f"{event.message[:200]}",
            rule="xid",
        )
    if code in cfg.xid.ignore:
        return None
    override = cfg.xid.overrides.get(str(code))
    entry = ctx.catalog.get(code)
    name = entry.mnemonic if entry is not None else "UNKNOWN"
    place = where(event.accelerator_index, event.pci_bus_id)
    what = f"{gpu} {xid_name(code, entry)} (XID {code})"
    if override is not None:
        return event_finding(
            event,
            ctx,
            fault=f"xid:{code}",
            action=Action(override),
            what=what,
            todo=f"{advice(Action(override))} (site policy)",
            detail=f"XID {code} {name}{place}; site policy: {override}",
            rule="xid",
        )
    if code in APP_CLASS_XIDS:
        return _app_class(event, ctx, code) if ctx.enabled("xid_app_repeat") else None
    if entry is None:
        return event_finding(
            event,
            ctx,
            fault=f"xid:{code}",
            action=Action.OBSERVE,
            what=what,
            todo=advice(Action.OBSERVE),
            detail=f"XID {code} is not in NVIDIA's XID catalog ({ctx.catalog.edition}){place}: watch it",
            rule="xid",
        )
    bucket = entry.immediate
    verdict = False
    opens = True
    todo = ""
    if code == 154:
        verdict = True
        action = recovery_action_of(event.data) or Action.OBSERVE
        opens = action is not Action.OBSERVE
        detail = f"driver verdict {event.data.get('action_name') or event.data.get('action') or 'unknown'}"
        needs = "recovery required" if opens else "no recovery needed"
        what, todo = f"{gpu} {needs} (XID 154)", verdict_todo(action)
    elif code == 48:
        action, detail, codes = _xid48(event, ctx)
        what = f"{gpu} {xid_name(48, entry)} ({codes})"
        todo = _PAIR_TODO if action is Action.DRAIN_NODE else ECC_TODO
    elif code in (63, 64) and _earlier_xids(event, ctx, frozenset((48,)), cfg.correlation_window_s):
        action, detail = Action.DRAIN_NODE, "with XID 48: drain, then reset the GPU (NVIDIA DRAIN_AND_RESET)"
        what, todo = f"{gpu} {xid_name(48, ctx.catalog.get(48))} (XID 48, {code})", _PAIR_TODO
    elif code == 74:
        action, detail = _xid74(event, ctx)
        link = event.data.get("link")
        on = f" on link {str(link)[:8]}" if link is not None else ""
        what, todo = f"{gpu} {xid_name(74, entry)}{on} (XID 74)", _nvlink_todo(action)
    elif 144 <= code <= 150:
        action, detail = _xid_nvlink5(event, ctx, code)
        todo = _nvlink_todo(action)
    elif not bucket:
        action, detail = Action.OBSERVE, "the catalog gives no resolution bucket"
    else:
        action = BUCKET_ACTIONS.get(bucket, Action.OBSERVE)
        detail = f"NVIDIA bucket {bucket}"
    ladder = (Action.REBOOT_NODE, Action.INSPECT_HARDWARE, Action.REPLACE_HARDWARE) if code == 79 else ()
    full = f"XID {code} {name}{place}; {detail}"
    if verdict:
        full = f"{VERDICT_PREFIX} {event.data.get('action_name') or action.value} (XID 154){place}"
    return event_finding(
        event,
        ctx,
        fault=f"xid:{code}",
        action=action,
        what=what,
        todo=todo or advice(action),
        detail=full,
        rule="xid",
        verdict=verdict,
        opens=opens,
        ladder=ladder,
    )


def recovery_action_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """The driver's recovery verdict changed (NVML field 230): it decides the task's action."""
    if event.kind != "recovery_action":
        return None
    code = as_int(event.data.get("action"))
    action = recovery_action_of(event.data)
    if code is not None and code not in RECOVERY_ACTIONS and code != 0:
        action = Action.CONTACT_VENDOR  # a verdict this catalog edition does not know: needs attention
    if action is None or action is Action.OBSERVE:
        return None
    name = event.data.get("action_name") or event.data.get("action")
    gpu = part(event.accelerator_index)
    known = code is None or code in RECOVERY_ACTIONS
    return event_finding(
        event,
        ctx,
        fault="recovery_action",
        action=action,
        what=f"{gpu} recovery required" if known else f"{gpu} unknown recovery verdict ({code})",
        todo=verdict_todo(action) if known else advice(action),
        detail=f"{VERDICT_PREFIX} {name}{where(event.accelerator_index, event.pci_bus_id)}",
        rule="recovery_action",
        verdict=True,
    )
