"""Fleet state: what the collector knows about every node, updated from decoded messages.

Pure: no I/O and no clock reads. Every method takes ``now`` (collector clock, seconds since the
epoch) and returns the state changes it caused, so the pipeline can log and act on them.

Liveness: a node is ``online`` after a birth, an online status or any frame from a session newer
than its last offline status; it goes ``offline`` when its offline status (the MQTT Will, or a clean
shutdown) arrives for its current session, or when nothing arrived for ``silent_after_intervals`` x
its interval (``tick``). An offline status from an older session is stale and ignored.

History: the rules' windowed conditions are folded frame by frame into ``collector.fleet.conditions``
(one ``GpuConditions`` per accelerator, one ``HostConditions`` per node); a compact ``Trend`` keeps a
few readings per frame over the history window for plots and evidence. Past frames themselves are
not kept.

Telemetry sequence: ``seq`` restarts at 0 after every birth. Within a session a jump forward counts
the missing frames as gaps; a frame from an older session, or an old ``seq`` of the current one, is
"late" (counted, never a gap, and its readings do not replace newer ones).

Reinstalls: a birth with a lower session than the node's but another ``boot_id`` comes from a
node whose agent lost its state directory (a reimage): it becomes the current session and the
per-session trackers start over (``is_reinstall``, ``restart_sessions``). A lower session with the
same ``boot_id`` is an old birth and is ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from collector.fleet.conditions import GpuConditions, HostConditions
from collector.fleet.history import Trend
from collector.fleet.host_ras_readings import HostRasConditions
from collector.fleet.nic_conditions import NicConditions
from collector.fleet.snapshot import FleetSnapshot
from collector.rules.config import RulesConfig
from fleetops.identity import NodeKey
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    Event,
    HostFacts,
    HostReadings,
    Location,
    Message,
    Nic,
    NicReadings,
    Status,
    Telemetry,
)

__all__ = [
    "RECENT_EVENTS_MAX",
    "FleetState",
    "NodeChange",
    "NodeKey",
    "NodeState",
    "NodeStatus",
    "is_reinstall",
    "restart_sessions",
]

NodeStatus = Literal["online", "offline", "unknown"]

#: Events remembered per node for the rules (XID repeats, XIDs that come together).
RECENT_EVENTS_MAX: Final = 256


@dataclass
class NodeState:
    """One node as the collector sees it."""

    node: str
    site: str
    location: Location | None = None
    hostname: str = ""
    session: int = -1  # highest session seen (birth, status or any message)
    boot_id: str = ""
    agent_version: str = ""
    interval_s: float = 10.0
    accelerators: tuple[Accelerator, ...] = ()
    host_facts: HostFacts | None = None
    birth_ts: float | None = None
    status: NodeStatus = "unknown"
    last_seen: float | None = None
    offline_since: float | None = None
    offline_reason: str = ""  # "status" (Will or clean shutdown) or "silence"
    offline_session: int = -1  # session of the last offline status honoured
    offline_task_raised: bool = False
    # telemetry sequence tracking
    telemetry_session: int = -1
    last_seq: int | None = None  # None: no baseline yet (first frame sets it)
    frames_total: int = 0
    gaps_total: int = 0
    late_frames_total: int = 0
    stale_status_total: int = 0
    #: births accepted with a lower session and a new boot id (see ``is_reinstall``)
    reinstalls_total: int = 0
    readings: dict[int, AcceleratorReadings] = field(default_factory=dict)
    host_readings: HostReadings | None = None
    readings_ts: float | None = None
    events_total: int = 0
    #: per accelerator index: its conditions, folded frame by frame (see collector.fleet.conditions)
    conditions: dict[int, GpuConditions] = field(default_factory=dict)
    host_conditions: HostConditions = field(default_factory=HostConditions)
    #: the host RAS readings (EDAC, throttling, hwmon, mounts), folded frame by frame
    host_ras: HostRasConditions = field(default_factory=HostRasConditions)
    #: some accelerator's conditions are watched (see GpuConditions.watch) as of the newest frame
    watching: bool = False
    #: a few readings per frame over the history window (plots, evidence)
    trend: Trend = field(default_factory=lambda: Trend(1800.0))
    #: collector time since which frames have been arriving without the node going offline
    stream_since: float | None = None
    #: the reference inventory: the largest birth inventory seen (a smaller birth does not lower it)
    expected_accelerators: tuple[Accelerator, ...] = ()
    #: probe name -> agent time since which it has been failing (from the frames' probe health)
    probe_failing_since: dict[str, float] = field(default_factory=dict)
    probe_failing_detail: dict[str, str] = field(default_factory=dict)
    #: expected accelerator index -> agent time since which it has been absent from the frames
    missing_since: dict[int, float] = field(default_factory=dict)
    #: the node's latest events (bounded), for rules that look at what came together or repeated
    recent_events: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS_MAX))
    #: RDMA ports of the latest birth, those of the latest frame (a port the probe did not read
    #: then has none) and their conditions, by (device, port)
    nics: tuple[Nic, ...] = ()
    nic_readings: dict[tuple[str, int], NicReadings] = field(default_factory=dict)
    nic_conditions: dict[tuple[str, int], NicConditions] = field(default_factory=dict)

    @property
    def key(self) -> NodeKey:
        """The node's identity: its site and its name."""
        return NodeKey(self.site, self.node)

    def nic(self, device: str, port: int) -> Nic | None:
        """The birth inventory's entry of an RDMA port."""
        return next((n for n in self.nics if n.device == device and n.port == port), None)

    def remembers(self, event_id: str) -> bool:
        """An event with this id is among the node's recent events (a redelivery, not a new event)."""
        return any(e.id == event_id for e in self.recent_events)

    def accelerator(self, index: int | None, accel_id: str = "") -> Accelerator | None:
        """The inventoried accelerator matching ``accel_id`` (preferred) or ``index``."""
        for accel in self.accelerators:
            if accel_id and accel.id == accel_id:
                return accel
        for accel in self.accelerators:
            if index is not None and accel.index == index:
                return accel
        return None


def is_reinstall(state: NodeState, birth: Birth) -> bool:
    """A birth with a lower session than the node's and another boot id: the node was reinstalled
    (its agent's session counter was lost and started over), not an old birth arriving late."""
    return birth.session < state.session and birth.boot_id != state.boot_id


def restart_sessions(state: NodeState) -> None:
    """Forget the sessions of a node's previous installation before its reinstall birth applies:
    the new, lower session becomes current, and an offline status of the old one does not keep
    the node offline."""
    state.reinstalls_total += 1
    state.session = -1
    state.telemetry_session = -1
    state.last_seq = None
    state.offline_session = -1


@dataclass(frozen=True)
class NodeChange:
    """A liveness change: ``kind`` is ``online`` or ``offline``."""

    node: str
    site: str
    kind: Literal["online", "offline"]
    at: float
    reason: str
    previous: NodeStatus

    @property
    def key(self) -> NodeKey:
        return NodeKey(self.site, self.node)


class FleetState:
    """All nodes, keyed by ``NodeKey(site, node)``: a name repeats across sites, and what arrives on
    one site's topics never changes the same-named node of another site."""

    def __init__(
        self,
        *,
        silent_after_intervals: float = 3.0,
        history_window_s: float | None = None,
        rules: RulesConfig | None = None,
    ) -> None:
        self.silent_after_intervals = silent_after_intervals
        #: the thresholds and windows the conditions are folded with (the rules read them)
        self.rules = rules if rules is not None else RulesConfig()
        self.history_window_s = (
            history_window_s if history_window_s is not None else self.rules.history_window_s
        )
        # the frame times must reach back over the counter windows too (see Rise.span)
        self.trend_window_s = max(
            self.history_window_s, self.rules.gpu_pcie.replay_window_s, self.rules.gpu_nvlink.window_s
        )
        self.nodes: dict[NodeKey, NodeState] = {}

    def node(self, name: str, site: str) -> NodeState:
        """The node ``name`` of ``site``, created when first heard of."""
        key = NodeKey(site, name)
        state = self.nodes.get(key)
        if state is None:
            state = self.nodes[key] = NodeState(node=name, site=site, trend=Trend(self.trend_window_s))
        return state

    def get(self, site: str, name: str) -> NodeState | None:
        """The node ``name`` of ``site``, if known."""
        return self.nodes.get(NodeKey(site, name))

    def named(self, name: str) -> list[NodeState]:
        """Every node called ``name``, at any site (sorted by site)."""
        return sorted((s for s in self.nodes.values() if s.node == name), key=lambda s: s.site)

    def snapshot(self) -> FleetSnapshot:
        """An immutable copy of the nodes, to hand to a worker thread (take it on the event loop)."""
        return FleetSnapshot.of(self.nodes)

    def restore(self, state: NodeState) -> None:
        """Put a node loaded from the store back (at start-up, before any message)."""
        state.trend = Trend(self.trend_window_s)
        self.nodes[state.key] = state

    # ---- messages -----------------------------------------------------------------------------

    def apply(self, site: str, message: Message, now: float, *, retained: bool = False) -> list[NodeChange]:
        """Apply one decoded message received on ``site``'s topic (the site the broker's ACL ties to
        the sender; a site named inside a payload is not trusted)."""
        state = self.node(message.node, site)
        if isinstance(message, Birth):
            return self._birth(state, message, now, retained)
        if isinstance(message, Status):
            return self._status(state, message, now)
        if isinstance(message, Telemetry):
            return self._telemetry(state, message, now)
        return self._event(state, message, now)

    def _birth(self, state: NodeState, birth: Birth, now: float, retained: bool) -> list[NodeChange]:
        if birth.session < state.session:
            if not is_reinstall(state, birth):
                return []  # an older birth than one already applied
            restart_sessions(state)
        state.session = birth.session
        location = birth.location
        if location is not None and location.site != state.site:
            # the topic decides the site: a birth cannot place itself at another site
            location = msgspec.structs.replace(location, site=state.site)
        state.location = location
        state.hostname = birth.hostname
        state.boot_id = birth.boot_id
        state.agent_version = birth.agent_version
        state.interval_s = birth.interval_s
        state.accelerators = tuple(birth.accelerators)
        state.nics = tuple(birth.nics)
        self._reference_inventory(state)
        state.host_facts = birth.host
        state.birth_ts = birth.ts
        if state.telemetry_session != birth.session:
            state.telemetry_session = birth.session
            # A live birth restarts seq at 0; a retained one may be old, so the first frame sets
            # the baseline instead.
            state.last_seq = None if retained else -1
        return self._alive(state, birth.session, now, "birth")

    def _status(self, state: NodeState, status: Status, now: float) -> list[NodeChange]:
        if status.session < state.session:
            state.stale_status_total += 1
            return []
        state.session = status.session
        if status.state == "online":
            return self._alive(state, status.session, now, "status")
        state.offline_session = status.session
        return self._offline(state, now, "status")

    def _telemetry(self, state: NodeState, frame: Telemetry, now: float) -> list[NodeChange]:
        state.frames_total += 1
        late = frame.session < state.telemetry_session or (
            frame.session == state.telemetry_session
            and state.last_seq is not None
            and frame.seq <= state.last_seq
        )
        if late:
            state.late_frames_total += 1
        else:
            if frame.session > state.telemetry_session:
                state.telemetry_session = frame.session
                state.last_seq = None  # a session whose birth we did not see: no baseline
            if state.last_seq is not None and frame.seq > state.last_seq + 1:
                state.gaps_total += frame.seq - state.last_seq - 1
            state.last_seq = frame.seq
            state.interval_s = frame.interval_s
            if frame.host is not None:
                state.host_readings = frame.host
            for readings in frame.accelerators:
                state.readings[readings.index] = readings
            state.nic_readings = {(nic.device, nic.port): nic for nic in frame.nics}
            state.readings_ts = frame.ts
            self._remember(state, frame, now)
        state.session = max(state.session, frame.session)
        return self._alive(state, frame.session, now, "telemetry")

    def _reference_inventory(self, state: NodeState) -> None:
        """A birth with at least as many accelerators becomes the reference; a part whose id changed
        in a slot starts a fresh history."""
        if len(state.accelerators) >= len(state.expected_accelerators):
            old = {a.index: a.id for a in state.expected_accelerators}
            for accel in state.accelerators:
                if accel.index in old and old[accel.index] != accel.id:
                    state.conditions.pop(accel.index, None)
                    state.trend.forget(accel.index)
            state.expected_accelerators = state.accelerators
        for accel in state.accelerators:
            c = state.conditions.get(accel.index)
            if c is not None and c.aws != (accel.vendor == "aws"):
                del state.conditions[accel.index]  # another kind of device in this slot

    def _remember(self, state: NodeState, frame: Telemetry, now: float) -> None:
        """Fold a frame newer than the last one into the node's conditions and trend; forget the
        accelerators not heard of within the history window."""
        if state.stream_since is None:
            state.stream_since = now
        trend = state.trend
        prev = trend.newest_ts
        if prev is None or frame.ts > prev:
            cfg = self.rules
            trend.append(frame.ts, frame.accelerators)
            boot = state.host_facts.boot_time_s if state.host_facts is not None else 0.0
            after = boot + cfg.gpu_pcie.boot_grace_s
            conditions = state.conditions
            watching = False
            for r in frame.accelerators:
                c = conditions.get(r.index)
                if c is None:
                    accel = state.accelerator(r.index, r.id)
                    c = conditions[r.index] = GpuConditions(
                        r.id, aws=accel is not None and accel.vendor == "aws"
                    )
                c.feed(frame.ts, r, cfg, prev_frame_ts=prev, pcie_after=after)
                watching = watching or c.watch
            state.watching = watching
            horizon = frame.ts - self.history_window_s
            if len(conditions) > len(frame.accelerators):
                for index in [i for i, c in conditions.items() if c.last_ts is None or c.last_ts < horizon]:
                    del conditions[index]
            if frame.host is not None:
                state.host_conditions.feed(frame.ts, now, frame.host, cfg)
                if frame.host.ras is not None:
                    state.host_ras.feed(frame.ts, now, frame.host.ras, cfg, boot)
            if frame.nics or state.nic_conditions:
                self._fold_nics(state, frame, prev, boot + cfg.nic.boot_grace_s)
        present = {r.index for r in frame.accelerators if not r.lost}
        for accel in state.expected_accelerators:
            if accel.index in present:
                state.missing_since.pop(accel.index, None)
            else:
                state.missing_since.setdefault(accel.index, frame.ts)
        for probe in frame.probes:
            if probe.state in ("failed", "timeout"):
                state.probe_failing_since.setdefault(probe.name, frame.ts)
                state.probe_failing_detail[probe.name] = probe.detail[:200]
            else:
                state.probe_failing_since.pop(probe.name, None)
                state.probe_failing_detail.pop(probe.name, None)

    def _fold_nics(self, state: NodeState, frame: Telemetry, prev: float | None, counts_from: float) -> None:
        """Fold a frame's RDMA ports into their conditions; forget ports (and their readings) not
        heard of within the history window."""
        cfg = self.rules.nic
        conditions = state.nic_conditions
        for r in frame.nics:
            key = (r.device, r.port)
            c = conditions.get(key)
            if c is None:
                c = conditions[key] = NicConditions(r.device, r.port)
            nic = state.nic(r.device, r.port)
            c.feed(
                frame.ts,
                r,
                cfg,
                prev_frame_ts=prev,
                counts_from=counts_from,
                birth_rated=nic.rated_gbps if nic is not None else None,
            )
        if len(conditions) > len(frame.nics):
            horizon = frame.ts - self.history_window_s
            for key in [k for k, c in conditions.items() if c.last_ts is None or c.last_ts < horizon]:
                del conditions[key]
                state.nic_readings.pop(key, None)

    def _event(self, state: NodeState, event: Event, now: float) -> list[NodeChange]:
        state.events_total += 1
        if not state.remembers(event.id):  # the rules' memory counts an event once, however often sent
            state.recent_events.append(event)
        state.session = max(state.session, event.session)
        return self._alive(state, event.session, now, "event")

    def _alive(self, state: NodeState, session: int, now: float, reason: str) -> list[NodeChange]:
        """Something arrived: the node is online unless it belongs to a session already over."""
        if session <= state.offline_session and state.offline_reason == "status":
            return []
        state.last_seen = now if state.last_seen is None else max(state.last_seen, now)
        if state.status == "online":
            return []
        previous = state.status
        state.status = "online"
        state.offline_since = None
        state.offline_reason = ""
        state.offline_task_raised = False
        return [NodeChange(state.node, state.site, "online", now, reason, previous)]

    def _offline(self, state: NodeState, since: float, reason: str) -> list[NodeChange]:
        if state.status == "offline" and state.offline_reason == "status":
            return []
        previous = state.status
        if state.status != "offline":
            state.offline_since = since
            state.offline_task_raised = False
        state.status = "offline"
        state.stream_since = None
        state.offline_reason = reason
        if previous == "offline":
            return []  # silence became a confirmed offline status: same episode
        return [NodeChange(state.node, state.site, "offline", since, reason, previous)]

    # ---- time ---------------------------------------------------------------------------------

    def tick(self, now: float, watching_since: float = -math.inf) -> list[NodeChange]:
        """Mark nodes offline that stayed silent for ``silent_after_intervals`` intervals, counted
        from no earlier than ``watching_since`` (when the collector's broker connection came up:
        before it, the collector could not have heard them; ``collector.fleet.vantage``)."""
        changes: list[NodeChange] = []
        for state in self.nodes.values():
            if state.status != "online" or state.last_seen is None:
                continue
            heard = max(state.last_seen, watching_since)
            if now - heard > self.silent_after_intervals * state.interval_s:
                changes.extend(self._offline(state, state.last_seen, "silence"))
        return changes
