"""Runs the collector (``collector.service.Collector``, as ``fleetops-collector run`` does) in its own
process for the benchmarks: ``python bench/_collector_proc.py CONFIG.json OUT.json``. Prints its API
URL on stdout once started; writes the pipeline's counters (and the sum of per-node frame counters)
to OUT.json every second and once more after SIGTERM stopped it cleanly. ``loop_stall_max_s``: the
longest the event loop was held beyond the one-second period (garbage collection, long batches)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from collector.config import parse_config
from collector.service import Collector
from fleetops.logging import configure_logging


async def serve(config_path: Path, out_path: Path) -> None:
    config = parse_config(json.loads(await asyncio.to_thread(config_path.read_text)))
    configure_logging("console", config.log.level)
    collector = Collector(config)
    await collector.start()
    print(collector.api_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stalls = {"max": 0.0}

    async def report() -> None:
        """The counters every second; a late write measures how long the event loop was held."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            stalls["max"] = max(stalls["max"], now - last - 1.0)
            last = now
            write(collector, out_path, stalls["max"])

    reporter = asyncio.create_task(report())
    await stop.wait()
    reporter.cancel()
    await collector.stop()
    write(collector, out_path, stalls["max"])


def write(collector: Collector, out_path: Path, loop_stall_max_s: float) -> None:
    stats: dict[str, float] = dict(collector.pipeline.stats)
    stats["written_at"] = time.time()
    stats["loop_stall_max_s"] = round(loop_stall_max_s, 3)
    stats["rejected"] = collector.pipeline.rejections.total
    nodes = collector.state.nodes.values()
    stats["frames_total"] = sum(n.frames_total for n in nodes)
    stats["gaps_total"] = sum(n.gaps_total for n in nodes)
    stats["nodes"] = len(collector.state.nodes)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(out_path)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2])))
