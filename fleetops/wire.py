"""The fleetops wire contract, protocol version 1.

This module is the only part of the agent that the collector imports. It defines the MQTT topic
layout and every message as a typed ``msgspec`` struct, encoded as JSON. ``docs/protocol.md``
documents the same contract for people writing their own consumers.

Rules of the contract:

* Topics are ``fleetops/v1/<site>/<node>/<channel>``; ``site`` and ``node`` match ``NAME_PATTERN``.
* Every message carries ``v`` (the protocol version, ``1``) and ``node`` (which must equal the
  node in the topic).
* Decoding is strict about types (no string-to-number coercion) and ignores unknown fields, so
  that version 1 can grow by adding optional fields only.
* Optional readings are *absent* when the hardware does not provide them: absence never means zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal, TypeVar

import msgspec

__all__ = [
    "COMMAND_CHANNELS",
    "COMMAND_MAX_BYTES",
    "CONTROL_CHANNELS",
    "EVENT_KINDS",
    "MAX_ACCELERATORS",
    "MAX_NICS",
    "MAX_PAYLOAD_BYTES",
    "NAME_PATTERN",
    "OPERATIONS",
    "PROTOCOL_VERSION",
    "SIGNATURE_CONTEXT",
    "TOPIC_ROOT",
    "Accelerator",
    "AcceleratorReadings",
    "Ack",
    "Birth",
    "Channel",
    "Command",
    "CommandResult",
    "Control",
    "CpuPackageThrottle",
    "DecodeError",
    "DimmReading",
    "DiskReading",
    "Event",
    "HostFacts",
    "HostRasReadings",
    "HostReadings",
    "HwmonSensor",
    "Location",
    "MemoryControllerReading",
    "Message",
    "MountReading",
    "Nic",
    "NicReadings",
    "Operation",
    "OperationSpec",
    "ProbeHealth",
    "Rebirth",
    "Status",
    "Telemetry",
    "Topic",
    "TopicError",
    "check_arguments",
    "decode",
    "decode_command",
    "decode_control",
    "encode",
    "parse_topic",
    "signing_payload",
    "topic_for",
    "valid_name",
]

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "fleetops/v1"
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: Accelerators in one birth or frame. The largest nodes sold carry 16 (Trainium trn1/trn2, the
#: 16-GPU HGX-2/DGX-2 generation); HGX boards 8, GB200/GB300 compute trays 4, and a trn2
#: UltraServer is 4 nodes of 16. Twice the largest leaves room, and bounds what one node's frame
#: can add to a consumer's metrics (each accelerator is a few dozen series).
MAX_ACCELERATORS: Final = 32
#: RDMA ports in one birth or frame: an HGX node has 8 compute ports and one or two front-end
#: ports, a trn2 node 16 EFA devices (32 on the largest EFA instances).
MAX_NICS: Final = 64
NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_NAME_RE: Final = re.compile(NAME_PATTERN)

Channel = Literal["birth", "status", "telemetry", "event", "cmd", "cmd/result", "ack", "rebirth"]
CHANNELS: Final[frozenset[str]] = frozenset(
    ("birth", "status", "telemetry", "event", "cmd", "cmd/result", "ack", "rebirth")
)
#: Channels a consumer (the collector) publishes on and the node's agent subscribes to.
CONTROL_CHANNELS: Final[frozenset[str]] = frozenset(("ack", "rebirth"))
#: Remote operations: ``cmd`` (collector → agent, signed) and ``cmd/result`` (agent → collector).
COMMAND_CHANNELS: Final[frozenset[str]] = frozenset(("cmd", "cmd/result"))
#: The largest command an agent accepts (checked before parsing).
COMMAND_MAX_BYTES: Final = 8 * 1024
#: Prepended to the canonical JSON that a command's Ed25519 signature covers.
SIGNATURE_CONTEXT: Final = b"fleetops/v1 cmd\n"

# Bounded scalar types: JSON numbers outside these ranges are rejected at decode time.
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Index = Annotated[int, msgspec.Meta(ge=0, le=4095)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Celsius = Annotated[float, msgspec.Meta(ge=-273.15, le=1000)]
Watts = Annotated[float, msgspec.Meta(ge=0, le=1e6)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MHz = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
NodeName = Annotated[str, msgspec.Meta(pattern=f"^{NAME_PATTERN}\\Z")]
Version = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Session = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
DataValue = str | int | float | bool | None
DataMap = Annotated[dict[Short, DataValue], msgspec.Meta(max_length=64)]

#: The event kinds defined in version 1. Consumers must accept kinds they do not know.
EVENT_KINDS: Final[frozenset[str]] = frozenset(
    (
        "xid",  # NVIDIA XID from the kernel log or NVML events; data.xid, data.pid, data.name ...
        "ecc_uncorrected",  # uncorrected ECC count rose (GPU DBE, Neuron SRAM/HBM)
        "ecc_corrected_burst",  # corrected ECC count rose faster than expected
        "remap_pending",  # row remap pending appeared (GPU needs a reset)
        "remap_failure",  # row remap failed (replacement criterion)
        "throttle_begin",  # a hardware clock-event reason became active; data.reason
        "throttle_end",  # that reason cleared; data.reason, data.duration_s
        "pcie_degraded",  # PCIe link below its maximum generation or width
        "pcie_restored",
        "nvlink_down",  # an NVLink link went down; data.link
        "nvlink_up",
        "gpu_lost",  # the accelerator stopped answering (NVML GPU_IS_LOST, fell off the bus)
        "accelerator_missing",  # fewer accelerators than the birth inventory
        "recovery_action",  # the driver's recovery verdict changed; data.action, data.action_name
        "neuron_hw_error",  # NEURON_HW_ERR= kernel-log line; data.error, data.action
        "neuron_group_error",  # a neuron-monitor metric group reported an error
        "probe_failed",  # a probe failed or timed out repeatedly; data.probe
        "probe_recovered",
        "agent_started",
        # NVIDIA driver lines without an XID, NVSwitch SXids
        "gpu_init_failed",  # RmInitAdapter failed: the driver could not initialise a GPU; data.code
        "nvswitch_sxid",  # NVSwitch SXid; data.sxid, data.switch, data.pci, data.link, data.fatal
        # host RAS from the kernel log (docs/protocol.md §6.1)
        "pcie_aer",  # a PCIe AER report; data.severity, data.source, data.reporter, data.errors ...
        "machine_check",  # an MCE, memory-failure or firmware (GHES) hardware error; data.severity
        "memory_error",  # an EDAC memory error; data.dimm (the EDAC label), data.type, data.count
        "filesystem_readonly",  # a filesystem went read-only or shut down; data.device, data.state
    )
)


class Struct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base for every wire type: immutable, keyword-only, absent optional fields are omitted.

    Wire values are trees (no reference cycles), so they stay out of the garbage collector's
    tracking: a collector holding many nodes' latest readings does not pay for them in GC passes."""


class Location(Struct, frozen=True):
    """Where the node physically is; every label is optional and free text."""

    site: Short
    room: Short = ""
    row: Short = ""
    rack: Short = ""
    slot: Short = ""


class HostFacts(Struct, frozen=True):
    os: Short = ""
    kernel: Short = ""
    cpu_model: Short = ""
    cpu_count: Count = 0
    memory_total_bytes: Bytes = 0
    boot_time_s: Seconds = 0.0


class Accelerator(Struct, frozen=True):
    """One accelerator as inventoried at birth.

    ``id`` is the stable identity: the NVIDIA GPU UUID, or the Neuron device serial number
    (``neuron<index>`` when the serial cannot be read).
    """

    vendor: Literal["nvidia", "aws"]
    kind: Literal["gpu", "trainium"]
    index: Index
    id: Short
    model: Short = ""
    serial: Short = ""
    pci_bus_id: Short = ""
    board_part_number: Short = ""
    driver_version: Short = ""
    firmware_version: Short = ""
    inforom_version: Short = ""
    memory_total_bytes: Bytes | None = None
    cores: Count | None = None
    capabilities: Annotated[list[Short], msgspec.Meta(max_length=32)] = []


PortNumber = Annotated[int, msgspec.Meta(ge=0, le=255)]
GbPerSecond = Annotated[float, msgspec.Meta(ge=0, le=1e5)]
BusIds = Annotated[list[Short], msgspec.Meta(max_length=32)]


class Nic(Struct, frozen=True):
    """One port of an RDMA device (InfiniBand, RoCE, EFA) as inventoried at birth.

    ``device`` and ``port`` are its identity (``mlx5_3`` port 1, ``efa_0`` port 1). ``rated_gbps``:
    the rate the port should run at (configured, else the highest it ran at since the agent
    started). ``near_gpus``: the PCI addresses of the accelerators behind the same PCIe switch;
    ``numa_gpus``: those on the same NUMA node (a port's fault hurts their jobs first).
    """

    device: Short
    port: PortNumber
    link_layer: Short = ""  # InfiniBand, Ethernet (RoCE); EFA: Unspecified
    netdev: Short = ""
    pci_bus_id: Short = ""
    numa_node: Index | None = None
    rated_gbps: GbPerSecond | None = None
    near_gpus: BusIds = []
    numa_gpus: BusIds = []


class NicReadings(Struct, frozen=True):
    """One RDMA port's readings in a frame. Counters are cumulative as the kernel keeps them (a
    consumer computes rates); every reading is optional, absent when the driver does not expose it
    (EFA has none of the standard PortCounters)."""

    device: Short
    port: PortNumber
    state: Short = ""  # DOWN, INIT, ARMED, ACTIVE, ACTIVE_DEFER
    phys_state: Short = ""  # Sleep, Polling, Disabled, LinkUp, LinkErrorRecovery ...
    rate_gbps: GbPerSecond | None = None
    # the port's network interface (IPoIB, RoCE netdev)
    carrier: bool | None = None
    carrier_changes: Count | None = None
    operstate: Short = ""
    # the interface's statistics/ (errors of the Ethernet link of a RoCE port, IPoIB's own)
    rx_errors: Count | None = None
    tx_errors: Count | None = None
    rx_dropped: Count | None = None
    rx_crc_errors: Count | None = None
    # InfiniBand PortCounters (ports/<n>/counters)
    link_downed: Count | None = None
    link_error_recovery: Count | None = None
    symbol_error: Count | None = None
    port_rcv_errors: Count | None = None
    port_xmit_discards: Count | None = None
    excessive_buffer_overrun_errors: Count | None = None
    local_link_integrity_errors: Count | None = None
    port_rcv_remote_physical_errors: Count | None = None
    # the driver's own counters (ports/<n>/hw_counters: mlx5, EFA), by name
    hw_counters: Annotated[dict[Short, Count], msgspec.Meta(max_length=128)] | None = None


class ProbeHealth(Struct, frozen=True):
    """How a probe did in the last cycle.

    ``state``: ``ok``; ``unsupported`` (no such hardware or library on this node: not a fault);
    ``failed`` (raised an error); ``timeout`` (did not finish within its timeout).
    """

    name: Short
    state: Literal["ok", "unsupported", "failed", "timeout"]
    detail: Text = ""
    duration_s: Seconds = 0.0
    consecutive_failures: Count = 0


class Birth(Struct, tag="birth", tag_field="type", frozen=True):
    """Retained, QoS 1, on ``.../birth``: the node's inventory, sent on every connect."""

    v: Version
    node: NodeName
    ts: Seconds
    session: Session
    hostname: Short
    agent_version: Short
    boot_id: Short
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=300)]
    location: Location
    host: HostFacts
    accelerators: Annotated[list[Accelerator], msgspec.Meta(max_length=MAX_ACCELERATORS)] = []
    probes: Annotated[list[ProbeHealth], msgspec.Meta(max_length=64)] = []
    nics: Annotated[list[Nic], msgspec.Meta(max_length=MAX_NICS)] = []


class Status(Struct, tag="status", tag_field="type", frozen=True):
    """Retained, QoS 1, on ``.../status``: ``online`` after each birth; ``offline`` is the Will."""

    v: Version
    node: NodeName
    ts: Seconds
    session: Session
    state: Literal["online", "offline"]


class DiskReading(Struct, frozen=True):
    mount: Short
    used_bytes: Bytes
    total_bytes: Bytes


class DimmReading(Struct, frozen=True, kw_only=True):
    """One DIMM's EDAC error counters since boot (``/sys/devices/system/edac/mc/mc<N>/dimm<M>``, or a
    ``csrow<M>`` of the older layout)."""

    mc: Index
    entry: Short
    label: Short
    location: Short = ""
    size_mb: Count | None = None
    corrected_total: Count | None = None
    uncorrected_total: Count | None = None


class MemoryControllerReading(Struct, frozen=True, kw_only=True):
    """A memory controller's errors that EDAC could not place on a DIMM."""

    mc: Index
    name: Short = ""
    corrected_noinfo_total: Count | None = None
    uncorrected_noinfo_total: Count | None = None


class CpuPackageThrottle(Struct, frozen=True, kw_only=True):
    """Thermal throttling of one CPU package since boot (``thermal_throttle/`` of its CPUs)."""

    package: Index
    cpus: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 0
    core_throttles_total: Count | None = None
    core_throttle_ms_total: Count | None = None
    package_throttles_total: Count | None = None
    package_throttle_ms_total: Count | None = None


class HwmonSensor(Struct, frozen=True, kw_only=True):
    """One hwmon sensor with an alarm or fault flag, or a fan (``/sys/class/hwmon/hwmon<N>``)."""

    chip: Short
    device: Short
    sensor: Short
    label: Short = ""
    psu: Index | None = None
    alarm: bool = False
    fault: bool = False
    alarms: Annotated[list[Short], msgspec.Meta(max_length=16)] = []
    rpm: Count | None = None


class MountReading(Struct, frozen=True, kw_only=True):
    """A watched mount and whether it is read-only."""

    mount: Short
    device: Short = ""
    fs: Short = ""
    readonly: bool = False


class HostRasReadings(Struct, frozen=True, kw_only=True):
    """Host RAS readings from sysfs and /proc: memory errors, CPU throttling, hwmon alarms, mounts."""

    dimms: Annotated[list[DimmReading], msgspec.Meta(max_length=256)] = []
    memory_controllers: Annotated[list[MemoryControllerReading], msgspec.Meta(max_length=64)] = []
    cpu_packages: Annotated[list[CpuPackageThrottle], msgspec.Meta(max_length=64)] = []
    hwmon: Annotated[list[HwmonSensor], msgspec.Meta(max_length=256)] = []
    mounts: Annotated[list[MountReading], msgspec.Meta(max_length=64)] = []


class HostReadings(Struct, frozen=True):
    cpu_percent: Percent
    load1: Annotated[float, msgspec.Meta(ge=0, le=1e6)]
    load5: Annotated[float, msgspec.Meta(ge=0, le=1e6)]
    load15: Annotated[float, msgspec.Meta(ge=0, le=1e6)]
    memory_total_bytes: Bytes
    memory_available_bytes: Bytes
    swap_total_bytes: Bytes = 0
    swap_used_bytes: Bytes = 0
    disks: Annotated[list[DiskReading], msgspec.Meta(max_length=64)] = []
    net_rx_errors_total: Count = 0
    net_tx_errors_total: Count = 0
    net_rx_drops_total: Count = 0
    net_tx_drops_total: Count = 0
    boot_id: Short = ""
    ras: HostRasReadings | None = None


class AcceleratorReadings(Struct, frozen=True):
    """One accelerator's readings in a frame. Every reading is optional: absent means the
    hardware does not provide it (listed in ``unsupported`` when the driver said so)."""

    index: Index
    id: Short
    lost: bool = False
    # temperature
    temperature_celsius: Celsius | None = None
    memory_temperature_celsius: Celsius | None = None
    slowdown_temperature_celsius: Celsius | None = None
    shutdown_temperature_celsius: Celsius | None = None
    # power and energy
    power_watts: Watts | None = None
    power_limit_watts: Watts | None = None
    energy_joules_total: Annotated[float, msgspec.Meta(ge=0, le=1e18)] | None = None
    power_percent_of_max: Percent | None = None
    # clocks and clock-event (throttle) reasons, NVML bitmask
    sm_clock_mhz: MHz | None = None
    sm_clock_max_mhz: MHz | None = None
    memory_clock_mhz: MHz | None = None
    memory_clock_max_mhz: MHz | None = None
    clock_event_reasons: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    # utilization and memory
    utilization_percent: Percent | None = None
    memory_utilization_percent: Percent | None = None
    memory_used_bytes: Bytes | None = None
    memory_total_bytes: Bytes | None = None
    # ECC
    ecc_enabled: bool | None = None
    ecc_volatile_corrected_total: Count | None = None
    ecc_volatile_uncorrected_total: Count | None = None
    ecc_aggregate_corrected_total: Count | None = None
    ecc_aggregate_uncorrected_total: Count | None = None
    sram_ecc_corrected_total: Count | None = None
    sram_ecc_uncorrected_total: Count | None = None
    # row remapping (Ampere and later) and page retirement (earlier)
    remapped_rows_corrected: Count | None = None
    remapped_rows_uncorrected: Count | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    retired_pages_single_bit: Count | None = None
    retired_pages_double_bit: Count | None = None
    retired_pages_pending: bool | None = None
    # PCIe
    pcie_link_gen: Count | None = None
    pcie_link_gen_max: Count | None = None
    pcie_link_width: Count | None = None
    pcie_link_width_max: Count | None = None
    pcie_replay_total: Count | None = None
    # NVLink (only where NVLink exists)
    nvlink_links_total: Count | None = None
    nvlink_links_up: Count | None = None
    nvlink_crc_errors_total: Count | None = None
    nvlink_replay_errors_total: Count | None = None
    nvlink_recovery_errors_total: Count | None = None
    # misc
    fan_percent: Percent | None = None
    performance_state: Annotated[int, msgspec.Meta(ge=0, le=32)] | None = None
    recovery_action: Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None
    # Trainium: NeuronCore utilization by core index, execution counters
    core_utilization_percent: Annotated[dict[Short, Percent], msgspec.Meta(max_length=256)] | None = None
    execution_errors_total: Annotated[dict[Short, Count], msgspec.Meta(max_length=64)] | None = None
    executions_total: Annotated[dict[Short, Count], msgspec.Meta(max_length=64)] | None = None
    unsupported: Annotated[list[Short], msgspec.Meta(max_length=128)] = []


class Telemetry(Struct, tag="telemetry", tag_field="type", frozen=True):
    """QoS 0, on ``.../telemetry``: a periodic frame. ``seq`` starts at 0 after each birth and
    rises by one per frame, so a consumer sees lost frames as gaps."""

    v: Version
    node: NodeName
    ts: Seconds
    session: Session
    seq: Count
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=300)]
    host: HostReadings | None = None
    accelerators: Annotated[list[AcceleratorReadings], msgspec.Meta(max_length=MAX_ACCELERATORS)] = []
    probes: Annotated[list[ProbeHealth], msgspec.Meta(max_length=64)] = []
    nics: Annotated[list[NicReadings], msgspec.Meta(max_length=MAX_NICS)] = []


class Event(Struct, tag="event", tag_field="type", frozen=True):
    """QoS 1, on ``.../event``: a discrete fault or state change.

    ``id`` is unique and stays the same when the event is delivered again, so consumers drop
    duplicates by it. ``count`` > 1 means a burst of identical occurrences folded into one event
    between ``first_ts`` and ``ts``.
    """

    v: Version
    node: NodeName
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{8,128}\Z")]
    ts: Seconds
    session: Session
    seq: Count
    kind: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,64}\Z")]
    severity: Literal["info", "warning", "critical", "fatal"]
    message: Text = ""
    accelerator_index: Index | None = None
    accelerator_id: Short = ""
    pci_bus_id: Short = ""
    count: Annotated[int, msgspec.Meta(ge=1, le=2**53)] = 1
    first_ts: Seconds | None = None
    source: Short = ""
    data: DataMap = {}


EventId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{8,128}\Z")]


class Ack(Struct, tag="ack", tag_field="type", frozen=True):
    """QoS 1, not retained, on ``.../ack``, published by the collector to one node: the ids of
    that node's events it has committed. The agent removes them from its spool; an event sent but
    never acknowledged is sent again, and the collector drops the duplicate by ``id``."""

    v: Version
    node: NodeName
    ts: Seconds
    ids: Annotated[list[EventId], msgspec.Meta(min_length=1, max_length=1000)]


class Rebirth(Struct, tag="rebirth", tag_field="type", frozen=True):
    """QoS 1, not retained, on ``.../rebirth``, published by the collector: please publish your
    birth again. Unsigned and harmless by design: it can only cause a birth to be re-published,
    and the agent rate-limits it."""

    v: Version
    node: NodeName
    ts: Seconds
    reason: Short = ""


#: a command id reaches hooks' argv (``{cmd_id}``): no leading ``-`` (an option), no ``..``
CommandId = Annotated[str, msgspec.Meta(pattern=r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.:-]{7,127}\Z")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}\Z")]
UnixTime = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
ArgName = Annotated[str, msgspec.Meta(max_length=32)]


class Command(Struct, tag="cmd", tag_field="type", frozen=True, kw_only=True):
    """QoS 1, not retained, on ``.../cmd``, published by the collector: run one operation.

    ``sig`` is the Ed25519 signature (base64url, no padding) of ``signing_payload(command)``: the
    fixed ``SIGNATURE_CONTEXT`` followed by the canonical JSON (keys sorted, no whitespace, UTF-8) of
    ``{v, cmd_id, site, node, op, args, iat, exp, key_id}``: ``site`` and ``node`` together name the
    one machine that is to run it (node names repeat across sites). The agent answers every command,
    accepted or not, on ``.../cmd/result``."""

    v: Version
    site: NodeName
    node: NodeName
    cmd_id: CommandId
    op: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}\Z")]
    args: Annotated[dict[ArgName, Short], msgspec.Meta(max_length=8)] = {}
    iat: UnixTime
    exp: UnixTime
    key_id: KeyId
    sig: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{86}\Z")]


class CommandResult(Struct, tag="cmd/result", tag_field="type", frozen=True, kw_only=True):
    """QoS 1, not retained, on ``.../cmd/result``, published by the agent: what became of a command.

    ``accepted`` (verified, the hook starts now), then one of ``succeeded`` / ``failed`` /
    ``timed_out``; or ``rejected`` alone, with the reason (``oversized``, ``malformed``,
    ``unknown_key``, ``bad_signature``, ``wrong_node``, ``wrong_site``, ``clock_skew``, ``expired``,
    ``ttl_too_long``, ``unknown_operation``, ``bad_argument``, ``replayed``, ``busy``)."""

    v: Version
    node: NodeName
    ts: Seconds
    cmd_id: Annotated[str, msgspec.Meta(max_length=128)]
    op: Short = ""
    outcome: Literal["accepted", "rejected", "succeeded", "failed", "timed_out"]
    reason: Short = ""
    exit_code: Annotated[int, msgspec.Meta(ge=-255, le=255)] | None = None
    duration_s: Seconds | None = None
    output: Text = ""
    output_truncated: bool = False


class OperationSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An operation's arguments (name → regular expression a value must match in full), which of
    them are required, and whether it disrupts the node's work (needs an approval by default)."""

    args: dict[str, str]
    required: frozenset[str] = frozenset()
    destructive: bool


#: A reason reaches hooks' argv (``{reason}``), maybe inside a path: letters, digits, space and
#: ``. _ : , = + -``, starting with a letter or digit (never ``-``), never ``/`` nor ``..``.
_REASON: Final = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9 ._:,=+-]{0,127}"

#: The operations of version 1. An agent runs only those its configuration allows and has a hook for.
OPERATIONS: Final[dict[str, OperationSpec]] = {
    "drain": OperationSpec(args={"reason": _REASON}, destructive=True),
    "undrain": OperationSpec(args={"reason": _REASON}, destructive=False),
    "reset_gpu": OperationSpec(args={"gpu": r"[0-9]{1,4}"}, required=frozenset(("gpu",)), destructive=True),
    "reboot": OperationSpec(args={"reason": _REASON}, destructive=True),
    "run_diagnostics": OperationSpec(
        args={"level": r"[1-4]"}, required=frozenset(("level",)), destructive=False
    ),
    "collect_bug_report": OperationSpec(args={}, destructive=False),
    "rebirth": OperationSpec(args={}, destructive=False),
}
_ARG_RES: Final[dict[str, dict[str, re.Pattern[str]]]] = {
    op: {name: re.compile(pattern) for name, pattern in spec.args.items()} for op, spec in OPERATIONS.items()
}


def check_arguments(op: str, args: dict[str, str]) -> str | None:
    """Why ``args`` are not valid for ``op`` (a known operation), or ``None`` when they are."""
    spec = OPERATIONS[op]
    patterns = _ARG_RES[op]
    for name, value in args.items():
        pattern = patterns.get(name)
        if pattern is None:
            return f"{op} takes no argument {name[:32]!r}"
        if pattern.fullmatch(value) is None:
            return f"{op}: argument {name} does not match {spec.args[name]}"
    missing = sorted(spec.required - set(args))
    if missing:
        return f"{op}: missing argument {', '.join(missing)}"
    return None


_CANONICAL: Final = msgspec.json.Encoder(order="sorted")


def signing_payload(command: Command) -> bytes:
    """The bytes a command's signature covers (see ``Command``)."""
    body = {
        "v": command.v,
        "cmd_id": command.cmd_id,
        "site": command.site,
        "node": command.node,
        "op": command.op,
        "args": dict(command.args),
        "iat": command.iat,
        "exp": command.exp,
        "key_id": command.key_id,
    }
    return SIGNATURE_CONTEXT + _CANONICAL.encode(body)


Message = Birth | Status | Telemetry | Event
Control = Ack | Rebirth
Operation = Command | CommandResult

_DECODERS: Final[dict[str, msgspec.json.Decoder[Message]]] = {
    "birth": msgspec.json.Decoder(Birth, strict=True),
    "status": msgspec.json.Decoder(Status, strict=True),
    "telemetry": msgspec.json.Decoder(Telemetry, strict=True),
    "event": msgspec.json.Decoder(Event, strict=True),
}
_CONTROL_DECODERS: Final[dict[str, msgspec.json.Decoder[Control]]] = {
    "ack": msgspec.json.Decoder(Ack, strict=True),
    "rebirth": msgspec.json.Decoder(Rebirth, strict=True),
}
_COMMAND_DECODERS: Final[dict[str, msgspec.json.Decoder[Operation]]] = {
    "cmd": msgspec.json.Decoder(Command, strict=True),
    "cmd/result": msgspec.json.Decoder(CommandResult, strict=True),
}
_ENCODER: Final = msgspec.json.Encoder()


class TopicError(ValueError):
    """The topic is not a fleetops v1 node topic."""


class DecodeError(ValueError):
    """The payload is not a valid message for its topic. ``reason`` is a short, stable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Topic(msgspec.Struct, frozen=True):
    site: str
    node: str
    channel: str


def valid_name(name: str) -> bool:
    """Whether ``name`` may be used as a site or node name in a topic."""
    return _NAME_RE.fullmatch(name) is not None


def topic_for(site: str, node: str, channel: Channel) -> str:
    """The topic a node publishes ``channel`` on."""
    if not valid_name(site):
        raise TopicError(f"invalid site name {site!r}")
    if not valid_name(node):
        raise TopicError(f"invalid node name {node!r}")
    return f"{TOPIC_ROOT}/{site}/{node}/{channel}"


def parse_topic(topic: str) -> Topic:
    """Split a v1 topic into site, node and channel, or raise ``TopicError``."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "fleetops" or parts[1] != "v1":
        raise TopicError(f"not a fleetops v1 topic: {topic[:200]!r}")
    site, node, channel = parts[2], parts[3], "/".join(parts[4:])
    if not valid_name(site) or not valid_name(node):
        raise TopicError(f"invalid site or node in topic: {topic[:200]!r}")
    if channel not in CHANNELS:
        raise TopicError(f"unknown channel {channel[:64]!r}")
    return Topic(site, node, channel)


def encode(message: Message | Control | Operation) -> bytes:
    """Encode a message as compact JSON."""
    return _ENCODER.encode(message)


def decode(topic: Topic, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """Decode and validate ``payload`` received on ``topic``.

    Raises ``DecodeError`` with ``reason`` one of: ``oversized``, ``unknown_channel``,
    ``malformed`` (not JSON or wrong shape), ``over_limit`` (a list, map or string longer than its
    bound, e.g. more than ``MAX_ACCELERATORS`` accelerators), ``unknown_version``, ``node_mismatch``.
    """
    return _decode(_DECODERS, topic, payload, max_bytes)


def decode_control(topic: Topic, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Control:
    """Decode a message on a control channel (``ack``, ``rebirth``); same reasons as ``decode``."""
    return _decode(_CONTROL_DECODERS, topic, payload, max_bytes)


def decode_command(topic: Topic, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Operation:
    """Decode a message on ``cmd`` or ``cmd/result`` (no signature check: see ``agent.operations.commands``);
    same reasons as ``decode``."""
    return _decode(_COMMAND_DECODERS, topic, payload, max_bytes)


_M = TypeVar("_M", Message, Control, Operation)


def _decode(
    decoders: Mapping[str, msgspec.json.Decoder[_M]], topic: Topic, payload: bytes, max_bytes: int
) -> _M:
    if len(payload) > max_bytes:
        raise DecodeError("oversized", f"{len(payload)} bytes > {max_bytes}")
    decoder = decoders.get(topic.channel)
    if decoder is None:
        raise DecodeError("unknown_channel", topic.channel)
    try:
        message = decoder.decode(payload)
    except msgspec.ValidationError as exc:
        version = _version_of(payload)
        if version not in (None, PROTOCOL_VERSION):
            raise DecodeError("unknown_version", str(version)) from None
        # msgspec words a length bound as "Expected `array` of length <= 32 - at `$.accelerators`"
        reason = "over_limit" if "of length <=" in str(exc) else "malformed"
        raise DecodeError(reason, str(exc)[:300]) from None
    except (msgspec.DecodeError, RecursionError, OverflowError, ValueError) as exc:
        raise DecodeError("malformed", str(exc)[:300]) from None
    if message.v != PROTOCOL_VERSION:
        raise DecodeError("unknown_version", str(message.v))
    if message.node != topic.node:
        raise DecodeError("node_mismatch", f"topic node {topic.node!r}, payload {message.node!r}")
    return message


class _Versioned(msgspec.Struct):
    v: int | None = None


_VERSION_DECODER: Final = msgspec.json.Decoder(_Versioned)


def _version_of(payload: bytes) -> int | None:
    try:
        return _VERSION_DECODER.decode(payload).v
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, OverflowError):
        return None
