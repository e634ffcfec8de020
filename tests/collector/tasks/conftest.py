"""Fixtures of the task tests: a fake clock, and a collector of its own fed by simulated nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from collector.service import Collector
from collector.store import Store
from devtools.broker import PrivateBroker
from tests.helpers.collector import Publisher, eventually
from tests.helpers.simfleet import FakeClock, Feed, collector_config


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "fleetops.db")
    s.open()
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def feed(own_broker: PrivateBroker, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Feed]:
    """A collector of its own on a broker of its own (nothing retained by other tests reaches it)."""
    collector = Collector(collector_config(own_broker, tmp_path), clock=clock)
    await collector.start()
    publisher = Publisher(own_broker.port)
    try:
        await eventually(lambda: collector.ingest.connected)
        yield Feed(collector, publisher, clock)
    finally:
        publisher.close()
        await collector.stop()
