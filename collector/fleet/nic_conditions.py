"""An RDMA port's lasting conditions, folded frame by frame (like ``collector.fleet.conditions``
for accelerators): down for a while, flapping, erroring, running below its rated rate.

Nothing counts within ``nic.boot_grace_s`` of the node's boot: ports train, renegotiate and
bounce their carrier then. A port is judged down only when it is known to be in use: it has a
rated rate in the birth (configured on the agent, or it ran ACTIVE there) or ran ACTIVE here.
Each counter is followed on its own: one that falls (a driver reload, a counter reset) counts
nothing and is followed again from its new value.

Pure: no I/O and no clock; agent time comes with each frame.
"""

from __future__ import annotations

from typing import Final, Protocol

from collector.fleet.conditions import Rise, Sustained
from fleetops.wire import NicReadings

__all__ = ["ERROR_COUNTERS", "NicConditions", "NicSettings", "port_up"]

#: The PortCounters of a bad physical link (cable, transceiver, port) or of bad packets arriving
#: over it, and the interface's frames with a bad checksum (a RoCE port's physical link errors),
#: added up for the error rate.
ERROR_COUNTERS: Final = (
    "symbol_error",
    "local_link_integrity_errors",
    "port_rcv_errors",
    "port_rcv_remote_physical_errors",
    "rx_crc_errors",
)


class NicSettings(Protocol):
    """The thresholds the folding needs (``[rules.nic]``, ``collector.rules.settings.NicSettings``)."""

    @property
    def down_for_s(self) -> float: ...
    @property
    def slow_for_s(self) -> float: ...
    @property
    def flap_window_s(self) -> float: ...
    @property
    def errors_per_min(self) -> float: ...
    @property
    def error_window_s(self) -> float: ...


def port_up(r: NicReadings) -> bool | None:
    """ACTIVE and (where the driver says) LinkUp; ``None`` when the state could not be read."""
    if not r.state:
        return None
    return r.state == "ACTIVE" and r.phys_state in ("", "LinkUp")


class NicConditions:
    """One port's conditions, fed with every frame that carries it (agent-time order)."""

    __slots__ = (
        "carrier",
        "counts_from",
        "device",
        "down",
        "downed",
        "errors",
        "errors_since",
        "highest_gbps",
        "last_ts",
        "latest",
        "port",
        "recovered",
        "slow",
        "watch",
    )

    def __init__(self, device: str, port: int) -> None:
        self.device, self.port = device, port
        self.latest: NicReadings | None = None
        self.last_ts: float | None = None
        self.counts_from: float | None = None
        #: the highest rate the port ran at while ACTIVE (any time, grace or not)
        self.highest_gbps: float | None = None
        self.watch = False
        self.down = Sustained()
        self.slow = Sustained()
        self.downed = Rise()
        self.recovered = Rise()
        self.carrier = Rise()
        self.errors: dict[str, Rise] = {}
        self.errors_since: float | None = None

    def _reset(self) -> None:
        self.down = Sustained()
        self.slow = Sustained()
        self.downed = Rise()
        self.recovered = Rise()
        self.carrier = Rise()
        self.errors = {name: Rise() for name in ERROR_COUNTERS}
        self.errors_since = None

    def rated(self, birth_rated: float | None) -> float | None:
        """The rate the port should run at: the birth's, or the highest seen here."""
        values = [v for v in (birth_rated, self.highest_gbps) if v]
        return max(values) if values else None

    def link_downs(self) -> int:
        """Link downs within the flap window: ``link_downed`` rises, or half the carrier changes
        (a down and an up each count one change)."""
        return max(self.downed.total, self.carrier.total // 2)

    def flaps(self) -> int:
        """Link downs and link error recoveries (the link retrained without going down) within the
        flap window."""
        return self.link_downs() + self.recovered.total

    def error_deltas(self) -> dict[str, int]:
        """Each error counter's rise within the error window (those that rose)."""
        return {name: rise.total for name, rise in self.errors.items() if rise.total}

    def error_total(self) -> int:
        return sum(rise.total for rise in self.errors.values())

    def errors_past(self, cfg: NicSettings) -> bool:
        """As many errors within the window as ``nic.errors_per_min`` all through it."""
        return self.error_total() >= max(1.0, cfg.errors_per_min * cfg.error_window_s / 60.0)

    def error_rate_per_min(self, cfg: NicSettings) -> float | None:
        """Errors per minute over the part of the window the port was read in (a minute at
        least); ``None`` before any reading of an error counter."""
        if self.errors_since is None or self.last_ts is None:
            return None
        span = min(cfg.error_window_s, max(60.0, self.last_ts - self.errors_since))
        return self.error_total() / (span / 60.0)

    def feed(
        self,
        ts: float,
        r: NicReadings,
        cfg: NicSettings,
        *,
        prev_frame_ts: float | None,
        counts_from: float,
        birth_rated: float | None,
    ) -> None:
        self.latest, self.last_ts = r, ts
        up = port_up(r)
        if up and r.rate_gbps:
            self.highest_gbps = max(self.highest_gbps or 0.0, r.rate_gbps)
        if self.counts_from != counts_from:  # a new boot: the conditions start afresh
            self.counts_from = counts_from
            self._reset()
        if ts < counts_from:
            self.watch = False
            return
        rated = self.rated(birth_rated)
        down = None if up is None else (not up and rated is not None)
        self.down.step(ts, down, down, cfg.down_for_s)
        slow: bool | None = None
        if up and r.rate_gbps is not None and rated is not None:
            slow = r.rate_gbps < rated
        elif up is False:
            slow = False
        self.slow.step(ts, slow, slow, cfg.slow_for_s)
        self.downed.step(prev_frame_ts, ts, r.link_downed, cfg.flap_window_s, False)
        self.recovered.step(prev_frame_ts, ts, r.link_error_recovery, cfg.flap_window_s, False)
        self.carrier.step(prev_frame_ts, ts, r.carrier_changes, cfg.flap_window_s, False)
        seen = False
        for name, rise in self.errors.items():
            value = getattr(r, name)
            rise.step(prev_frame_ts, ts, value, cfg.error_window_s, False)
            seen = seen or value is not None
        if seen and self.errors_since is None:
            self.errors_since = ts
        self.watch = bool(self.down.active or self.slow.active or self.flaps() or self.error_total())
