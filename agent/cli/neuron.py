"""``fleetops-agent replay neuron-monitor PATH``: what the agent would publish for recorded reports.

``PATH`` holds neuron-monitor output, one JSON report per line. For every line the command prints
one JSON object per line on stdout:

* ``{"type": "readings", "line": N, "accelerators": [AcceleratorReadings, ...]}``
* ``{"type": "event", "line": N, "event": EventDraft}`` for each edge event that report causes
* ``{"type": "bad_line", "line": N}`` for a line that is not a JSON object

and finally ``{"type": "summary", ...}`` with counts. The first report's devices are the inventory
(there is no sysfs in a replay). Exit status 0, or 2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from agent.probes.neuron.frame import NeuronFrames
from agent.probes.neuron.report import decode_report_line

__all__ = ["add_replay_arguments", "replay_neuron_monitor"]

_ENCODER = msgspec.json.Encoder()


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``replay neuron-monitor``."""
    parser.add_argument("path", type=Path, help="file of neuron-monitor reports, one JSON object per line")


def replay_neuron_monitor(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the replay for parsed ``args`` (``args.path``); returns the exit status."""
    stream = out if out is not None else sys.stdout
    path = Path(args.path)
    frames = NeuronFrames()
    counts = {"reports": 0, "bad_lines": 0, "events": 0, "anomalies": 0, "group_errors": 0}
    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                report = decode_report_line(raw)
                if report is None:
                    counts["bad_lines"] += 1
                    _write(stream, {"type": "bad_line", "line": number})
                    continue
                counts["reports"] += 1
                counts["anomalies"] += report.anomalies
                counts["group_errors"] += len(report.group_errors)
                readings, events = frames.step(report, new_report=True)
                _write(stream, {"type": "readings", "line": number, "accelerators": readings})
                for event in events:
                    counts["events"] += 1
                    _write(stream, {"type": "event", "line": number, "event": event})
    except OSError as exc:
        print(f"replay neuron-monitor: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    totals = frames.totals
    _write(
        stream,
        {
            "type": "summary",
            **counts,
            "unmapped_execution_errors": totals.unmapped_errors,
            "unmapped_executions": totals.unmapped_outcomes,
        },
    )
    return 0


def _write(stream: TextIO, obj: dict[str, Any]) -> None:
    stream.write(_ENCODER.encode(obj).decode("utf-8") + "\n")
