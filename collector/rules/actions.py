"""The closed set of remediation actions a task can recommend, with severity and runbook text."""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = [
    "DEFAULT_LADDER",
    "SEVERITIES",
    "Action",
    "Severity",
    "default_severity",
    "escalate",
    "rank",
    "runbook",
    "stronger",
]

Severity = Literal["critical", "warning", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "warning", "info")


class Action(enum.StrEnum):
    """What a technician (or, later, automation) should do about a finding."""

    RESTART_APP = "RESTART_APP"
    RESET_GPU = "RESET_GPU"
    REBOOT_NODE = "REBOOT_NODE"
    DRAIN_NODE = "DRAIN_NODE"
    INSPECT_HARDWARE = "INSPECT_HARDWARE"
    REPLACE_HARDWARE = "REPLACE_HARDWARE"
    CHECK_COOLING = "CHECK_COOLING"
    CHECK_POWER = "CHECK_POWER"
    CHECK_NETWORK = "CHECK_NETWORK"
    UPDATE_SOFTWARE = "UPDATE_SOFTWARE"
    INVESTIGATE_SOFTWARE = "INVESTIGATE_SOFTWARE"
    CONTACT_VENDOR = "CONTACT_VENDOR"
    OBSERVE = "OBSERVE"


_SEVERITY: Final[dict[Action, Severity]] = {
    Action.RESTART_APP: "warning",
    Action.RESET_GPU: "critical",
    Action.REBOOT_NODE: "critical",
    Action.DRAIN_NODE: "critical",
    Action.INSPECT_HARDWARE: "warning",
    Action.REPLACE_HARDWARE: "critical",
    Action.CHECK_COOLING: "warning",
    Action.CHECK_POWER: "warning",
    Action.CHECK_NETWORK: "critical",
    Action.UPDATE_SOFTWARE: "warning",
    Action.INVESTIGATE_SOFTWARE: "warning",
    Action.CONTACT_VENDOR: "warning",
    Action.OBSERVE: "info",
}

_RUNBOOK: Final[dict[Action, str]] = {
    Action.RESTART_APP: (
        "The fault is contained to the workload. Ask the job owner to restart the application; no GPU "
        "reset or reboot is needed. If the same GPU keeps reporting it, escalate to INSPECT_HARDWARE."
    ),
    Action.RESET_GPU: (
        "Drain the jobs using this GPU, then reset it (nvidia-smi -r -i <index>, or the scheduler's GPU "
        "reset procedure). Confirm the fault cleared in the next telemetry frames. If the reset fails or "
        "the fault returns, reboot the node."
    ),
    Action.REBOOT_NODE: (
        "Drain the node in the scheduler, then reboot it (via BMC power cycle if it does not answer). "
        "After it comes back, check that every accelerator from the inventory is present and healthy. "
        "A second occurrence on the same node within a week: open a hardware inspection."
    ),
    Action.DRAIN_NODE: (
        "Stop scheduling new work on the node and let running jobs finish or migrate; keep it out of "
        "service until the underlying fault is handled."
    ),
    Action.INSPECT_HARDWARE: (
        "Drain the node and inspect the named component on site: reseat the accelerator and its power "
        "and NVLink/PCIe connections, check cables and risers, look for damage. Run the vendor's field "
        "diagnostics before returning it to service. Record what was found in a comment."
    ),
    Action.REPLACE_HARDWARE: (
        "The component meets a replacement criterion. Drain the node, open an RMA with the serial number "
        "shown in this task, and replace the part (or the node). Keep the node out of service until then."
    ),
    Action.CHECK_COOLING: (
        "The accelerator runs hot or slowed down to protect itself from heat. Check the inlet "
        "temperature, fans, airflow blockages and the rack's cooling (CRAC/CDU, liquid loop); compare "
        "with neighbouring slots. A rack-wide task lists every GPU involved: start with the facility."
    ),
    Action.CHECK_POWER: (
        "Power delivery is abnormal: the hardware power brake engaged, or the GPU draws more than its "
        "enforced limit. Check the PSUs, power cables, the rack PDU and the facility power for this "
        "rack; look at the BMC event log for power events. A rack-wide task lists every GPU involved."
    ),
    Action.CHECK_NETWORK: (
        "Many nodes of the site went quiet at the same moment: the cause is what they share, not the "
        "nodes. Check the broker (is it running, reachable, out of connections or disk?), the network "
        "between the nodes and the broker (switches, uplinks, firewall changes) and the site's power "
        "events. Do not reboot the nodes; the task resolves when they are heard again."
    ),
    Action.UPDATE_SOFTWARE: (
        "Update the GPU driver, firmware (VBIOS) and related software to the supported versions, "
        "then reboot the node to load them."
    ),
    Action.INVESTIGATE_SOFTWARE: (
        "Look at the software side first: the job's logs, driver and runtime versions, and the other "
        "workers named in this task. Escalate to hardware only if the software is cleared."
    ),
    Action.CONTACT_VENDOR: (
        "Collect a bug report (nvidia-bug-report.sh or neuron dump) and the evidence in this task, and "
        "open a case with the vendor's support. Keep the node drained if the fault repeats."
    ),
    Action.OBSERVE: (
        "No action needed now. Keep an eye on this component: repeats are counted on this task and may "
        "call for an inspection."
    ),
}


#: How much an action asks of the site, weakest first. When findings about one component fold into
#: one task, the task takes the strongest (unless the driver's own verdict decides, see tasks.py).
_RANK: Final[tuple[Action, ...]] = (
    Action.OBSERVE,
    Action.RESTART_APP,
    Action.INVESTIGATE_SOFTWARE,
    Action.UPDATE_SOFTWARE,
    Action.CONTACT_VENDOR,
    Action.CHECK_POWER,
    Action.CHECK_COOLING,
    Action.CHECK_NETWORK,
    Action.RESET_GPU,
    Action.DRAIN_NODE,
    Action.REBOOT_NODE,
    Action.INSPECT_HARDWARE,
    Action.REPLACE_HARDWARE,
)
_RANK_OF: Final[dict[Action, int]] = {a: i for i, a in enumerate(_RANK)}

#: The escalation ladder: when the same fault returns within the escalation window after a task
#: with one of these actions was resolved, the new task asks for the next step.
DEFAULT_LADDER: Final[tuple[Action, ...]] = (Action.RESET_GPU, Action.REBOOT_NODE, Action.REPLACE_HARDWARE)


def rank(action: Action) -> int:
    """Position of ``action`` from weakest (OBSERVE, 0) to strongest (REPLACE_HARDWARE)."""
    return _RANK_OF[action]


def stronger(a: Action, b: Action) -> Action:
    """The stronger of two actions (``a`` when they are equal)."""
    return b if _RANK_OF[b] > _RANK_OF[a] else a


def escalate(previous: Action, ladder: tuple[Action, ...] = DEFAULT_LADDER) -> Action | None:
    """The step after ``previous`` on ``ladder``; ``None`` when it is not on it or is the last."""
    if previous not in ladder:
        return None
    i = ladder.index(previous)
    return ladder[i + 1] if i + 1 < len(ladder) else None


def default_severity(action: Action) -> Severity:
    return _SEVERITY[action]


def runbook(action: Action) -> str:
    return _RUNBOOK[action]
