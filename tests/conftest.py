"""Shared fixtures: a real Mosquitto broker on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.broker import PrivateBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateBroker]:
    """One Mosquitto for the whole session (tests use distinct site/node names)."""
    with PrivateBroker() as b:
        yield b


@pytest.fixture
def own_broker() -> Iterator[PrivateBroker]:
    """A Mosquitto of the test's own, for tests that stop or restart it."""
    with PrivateBroker() as b:
        yield b
