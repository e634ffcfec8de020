"""The agent's process hands back what startup freed, and does it once every agent is sampling."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

from agent.config import parse_config
from agent.node import Agent
from agent.probes.base import EventSink, Sample
from agent.system.memory import release_memory_after, release_startup_memory
from devtools.broker import free_port
from fleetops.wire import Accelerator


def _rss_anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_freed_heap_pages_go_back_to_the_system() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    # 40 MB in 2 KiB blocks (from the C heap: above Python's small-object allocator, below mmap's
    # threshold), then all but the last freed: the heap keeps its top, the middle is free pages.
    blocks = [bytearray(2048) for _ in range(20_000)]
    for block in blocks:
        block[::512] = b"\x01" * 4  # touch every page
    keep = blocks[-1]
    del blocks
    before = _rss_anon_bytes()
    assert release_startup_memory() is glibc
    after = _rss_anon_bytes()
    if glibc:
        assert before - after > 20_000_000
    assert keep[0] == 1


class _Probe:
    name = "slow-start"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def start(self, emit: EventSink) -> None:
        await self.started.wait()

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return Sample()

    async def stop(self) -> None:
        return None


def _agent(state_dir: Path, node: str, probe: _Probe) -> Agent:
    raw = {
        "node": {"name": node, "site": "memtest"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
        "agent": {"interval_s": 1, "state_dir": str(state_dir)},
    }
    return Agent(parse_config(raw, environ={}), [probe])


async def test_memory_is_released_only_after_every_agent_sampled(tmp_path: Path) -> None:
    fast, slow = _Probe(), _Probe()
    fast.started.set()
    agents = [_agent(tmp_path / "a", "n1", fast), _agent(tmp_path / "b", "n2", slow)]
    tasks = [asyncio.ensure_future(agent.run()) for agent in agents]
    settle = asyncio.ensure_future(release_memory_after(agents))
    try:
        await asyncio.wait_for(agents[0].first_frame(), 10)
        await asyncio.sleep(0.05)
        assert not settle.done()  # the second agent is still starting
        slow.started.set()
        await asyncio.wait_for(settle, 10)
        assert settle.exception() is None
    finally:
        settle.cancel()
        for agent in agents:
            agent.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
