"""When an event the collector has not acknowledged is sent again (the schedule, as pure functions).

An event leaves the spool only once the collector acknowledges it on ``.../ack``. Sending it again on a
fixed timer while the agent stays connected multiplies the broker's queue: the collector's persistent
session keeps every copy while the collector is away, so an outage of ``T`` costs ``T / ack_timeout_s``
copies per event. The broker's PUBACK says more than "received": over MQTT v5 it carries reason code
0 when at least one subscription took the message (the collector's session holds it, online or not)
and 16, "No matching subscribers", when none did and the copy is gone. So a copy is sent again:

* **held** (reason 0): after ``max_s``, as a safety net for a copy the broker dropped without saying
  (its queue full, the session expired). When an acknowledgement shows the collector read past it
  (``SpoolQueue.ack``) it is held no longer, and goes on the back-off below.
* **not held** (16, a refusal, or no reason seen): after ``ack_timeout_s``, then twice as long after
  each further copy, up to ``max_s``: a collector whose session is gone for hours costs a handful of
  copies per event, and one that subscribes again gets each event within one back-off step.

Every event is sent again once on each new connection (the broker may have lost it, or its PUBACK);
that is the caller's ``rewind``, outside this schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = ["NO_MATCHING_SUBSCRIBERS", "SUCCESS", "ResendPolicy", "Resends"]

#: PUBACK reason codes (MQTT v5, 3.4.2.1).
SUCCESS: Final = 0
NO_MATCHING_SUBSCRIBERS: Final = 16

_MAX_DOUBLINGS: Final = 32


@dataclass(frozen=True, kw_only=True)
class ResendPolicy:
    """``ack_timeout_s``: the first wait of a copy no subscription took; ``max_s``: the cap of the
    back-off and the wait of a copy the broker holds for a subscription."""

    ack_timeout_s: float = 60.0
    max_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.ack_timeout_s > 0:
            raise ValueError("ack_timeout_s must be positive")
        if self.max_s < self.ack_timeout_s:
            raise ValueError("max_s must not be below ack_timeout_s")

    def delay(self, sends: int, *, held: bool) -> float:
        """Seconds from the ``sends``-th copy's PUBACK (1 for the first copy) until the next copy."""
        if held:
            return self.max_s
        doublings = min(max(sends, 1) - 1, _MAX_DOUBLINGS)
        return min(self.max_s, self.ack_timeout_s * 2.0**doublings)

    @property
    def scan_interval_s(self) -> float:
        """The least time between two searches for due copies (each looks at every kept event): a
        due copy goes out at most this late, never early."""
        return self.ack_timeout_s / 8


class Resends(NamedTuple):
    """Copies put back to be sent again by one ``resend_due``: their time came (``timer``), or an
    acknowledgement of a later copy showed that the collector read past them (``overtaken``)."""

    timer: int = 0
    overtaken: int = 0

    @property
    def total(self) -> int:
        return self.timer + self.overtaken
