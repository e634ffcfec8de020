"""What the publisher sends from: one queued message (``Outgoing``), the queue interfaces, and the
bounded in-memory queue. The durable spool (``agent/uplink/spool.py``) implements ``AckedQueue``."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

import msgspec

from agent.uplink.resend import Resends

__all__ = ["AckedQueue", "MemoryQueue", "MessageQueue", "Outgoing"]


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """An encoded message waiting to be sent. ``key`` identifies it in logs (event id, session/seq)."""

    channel: Literal["telemetry", "event"]
    payload: bytes
    key: str = ""


class MessageQueue(Protocol):
    """Where outgoing messages wait. ``put`` returns how many old ones it dropped to make room."""

    def put(self, item: Outgoing) -> int: ...

    def peek(self) -> Outgoing | None: ...

    def pop(self) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class AckedQueue(Protocol):
    """A ``MessageQueue`` that keeps an item after it is sent until ``ack`` removes it by key, and
    says when a kept item is due to be sent again (``agent/uplink/resend.py``)."""

    def put(self, item: Outgoing) -> int: ...

    def peek(self) -> Outgoing | None: ...

    def pop(self) -> None: ...

    def __len__(self) -> int: ...

    def sent(self, *, held: bool) -> None: ...

    def ack(self, keys: Iterable[str]) -> int: ...

    def rewind(self) -> int: ...

    def resend_due(self) -> Resends: ...

    def next_due(self) -> float | None: ...


class MemoryQueue:
    """A bounded FIFO in memory that drops its oldest entry when full."""

    def __init__(self, max_items: int) -> None:
        if max_items < 0:
            raise ValueError("max_items must be >= 0")
        self.max_items = max_items
        self._items: deque[Outgoing] = deque()

    def put(self, item: Outgoing) -> int:
        if self.max_items == 0:
            return 1
        dropped = 0
        while len(self._items) >= self.max_items:
            self._items.popleft()
            dropped += 1
        self._items.append(item)
        return dropped

    def peek(self) -> Outgoing | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        if self._items:
            self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)
