"""Handlers for ``fleetops-agent probe`` and ``fleetops-agent replay kmsg PATH``.

``add_probe_arguments`` / ``add_replay_arguments`` add the options to an argparse parser;
``probe_command`` / ``replay_kmsg_command`` take the parsed namespace and return an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import msgspec

from agent.probes.base import EventDraft, Unsupported
from agent.probes.kernel_log import LineContext, build_line_handlers
from agent.probes.kmsg import read_records
from agent.probes.kmsg_time import resolve_timezone
from agent.probes.nvidia.nvml_facade import NvmlFacade, RealNvml
from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe
from agent.probes.nvidia.nvml_read import read_inventory
from agent.probes.nvidia.xid import GpuDirectory, XidReporter
from fleetops.wire import Accelerator, AcceleratorReadings

__all__ = ["add_probe_arguments", "add_replay_arguments", "probe_command", "replay_kmsg_command"]


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--simulate", action="store_true", help="read simulated GPUs instead of NVML")
    parser.add_argument("--model", default="h100", help="simulated GPU model (default h100)")
    parser.add_argument("--gpus", type=int, default=8, help="number of simulated GPUs")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="file of recorded kernel-log lines (dmesg text or /dev/kmsg)")
    parser.add_argument("--format", choices=("auto", "kmsg", "text"), default="auto")
    parser.add_argument("--fold-window-s", type=float, default=30.0)
    parser.add_argument(
        "--timezone",
        default="",
        help="zone of the file's local times without an offset (syslog, journalctl, dmesg -T): "
        "an IANA name or UTC; default the machine's local time",
    )
    parser.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="an NVML recording (tests/fixtures/nvml format) whose GPUs map PCI ids to GPUs",
    )
    parser.add_argument(
        "--sysfs-root",
        type=Path,
        default=Path("/sys"),
        help="the sysfs tree that maps PCIe errors to the GPU or NIC behind them (default /sys: "
        "replay on the node that logged the lines)",
    )


def _event_dict(draft: EventDraft) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(draft)
    return out


async def _probe_once(
    facade: NvmlFacade,
) -> tuple[list[Accelerator], list[AcceleratorReadings], list[EventDraft]]:
    events: list[EventDraft] = []
    probe = NvmlProbe(NvmlConfig(events_thread=False, edge_poll_s=60.0), facade_factory=lambda: facade)
    await probe.start(events.append)
    try:
        sample = await probe.sample()
        return probe.inventory(), sample.accelerators, events
    finally:
        await probe.stop()


def probe_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print what the agent sees on this node now. 0 ok, 2 NVML unavailable, 1 error."""
    with tempfile.TemporaryDirectory(prefix="fleetops-probe-") as tmp:
        if args.simulate:
            from agent.sim.fake_nvml import FakeNvml  # the simulation loads only when asked for
            from agent.sim.gpu_model import MODELS, SimulatedNode

            if args.model not in MODELS:
                models = ", ".join(sorted(MODELS))
                print(f"unknown simulated model {args.model!r}; models: {models}", file=out)
                return 1
            node = SimulatedNode(
                "simulated", args.gpus, args.model, [], Path(tmp) / "kmsg.log", _Clock(), args.seed
            )
            facade: NvmlFacade = FakeNvml(node.system(), node.devices)
        else:
            facade = RealNvml()
        try:
            inventory, readings, events = asyncio.run(_probe_once(facade))
        except Unsupported as exc:
            print(f"NVML not available on this node: {exc}", file=out)
            return 2
        except TimeoutError as exc:
            print(f"NVML timed out: {exc}", file=out)
            return 1
    if args.json:
        doc = {
            "accelerators": msgspec.to_builtins(inventory),
            "readings": msgspec.to_builtins(readings),
            "events": [_event_dict(e) for e in events],
        }
        out.write(msgspec.json.encode(doc).decode() + "\n")
        return 0
    _print_table(inventory, readings, events, out)
    return 0


class _Clock:
    """A fixed clock for one-shot simulated reads (the simulation stays at its start)."""

    def __call__(self) -> float:
        return 0.0


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}"
    return f"{value}{unit}"


def _print_table(
    inventory: list[Accelerator], readings: list[AcceleratorReadings], events: list[EventDraft], out: TextIO
) -> None:
    by_index = {r.index: r for r in readings}
    header = (
        "GPU",
        "Name",
        "UUID",
        "PCI",
        "Temp",
        "Power/Limit",
        "Util",
        "Mem used/total",
        "ECC unc",
        "PCIe",
        "NVLink",
        "Reasons",
        "Recov",
    )
    rows = [header]
    for acc in inventory:
        r = by_index.get(acc.index)
        if r is None or r.lost:
            rows.append(
                (str(acc.index), acc.model, acc.id, acc.pci_bus_id, "LOST", "", "", "", "", "", "", "", "")
            )
            continue
        gib = 1024**3
        mem = (
            f"{r.memory_used_bytes / gib:.1f}/{r.memory_total_bytes / gib:.1f} GiB"
            if r.memory_used_bytes is not None and r.memory_total_bytes
            else "-"
        )
        rows.append(
            (
                str(acc.index),
                acc.model,
                acc.id,
                acc.pci_bus_id,
                _fmt(r.temperature_celsius, " C"),
                f"{_fmt(r.power_watts)}/{_fmt(r.power_limit_watts)} W",
                _fmt(r.utilization_percent, "%"),
                mem,
                _fmt(r.ecc_volatile_uncorrected_total),
                f"Gen{_fmt(r.pcie_link_gen)} x{_fmt(r.pcie_link_width)}",
                f"{_fmt(r.nvlink_links_up)}/{_fmt(r.nvlink_links_total)}",
                f"0x{r.clock_event_reasons:x}" if r.clock_event_reasons is not None else "-",
                _fmt(r.recovery_action),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    if inventory:
        first = inventory[0]
        out.write(f"\ndriver {first.driver_version}; capabilities: {', '.join(first.capabilities) or '-'}\n")
    for r in readings:
        if r.unsupported:
            out.write(f"GPU {r.index} unsupported: {', '.join(r.unsupported)}\n")
    for e in events:
        out.write(f"event: {e.kind} ({e.severity}) {e.message}\n")


def replay_kmsg_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print, one JSON object per line, the events the agent would publish for a kernel-log file.

    Lines without a year (syslog, ``journalctl``) are dated against the file's modification time."""
    try:
        tz = resolve_timezone(args.timezone)
    except ValueError as exc:
        print(f"--timezone: {exc}", file=sys.stderr)
        return 2
    directory = GpuDirectory()
    if args.inventory is not None:
        from agent.sim.fake_nvml import FakeNvml  # answers NVML calls from the recording

        fake = FakeNvml.from_recording(args.inventory)
        fake.nvmlInit()
        directory.update(read_inventory(fake)[1])
    reporter = XidReporter(directory=directory, fold_window_s=args.fold_window_s)
    events: list[EventDraft] = []
    reporter.bind(events.append)
    # Every handler the live agent attaches; lines without a kernel timestamp count as simultaneous.
    ctx = LineContext(
        emit=events.append, xid_reporter=reporter, clock=lambda: 0.0, replay=True, sysfs_root=args.sysfs_root
    )
    handlers = build_line_handlers(ctx)
    try:
        for record in read_records(args.path, args.format, tz=tz):
            for handler in handlers:
                handler(record)
    except OSError as exc:
        print(f"cannot read {args.path}: {exc.strerror}", file=sys.stderr)
        return 1
    for handler in handlers:
        close = getattr(handler, "close", None)
        if callable(close):
            close()
    reporter.close()
    for event in events:
        out.write(msgspec.json.encode(_event_dict(event)).decode() + "\n")
    return 0
