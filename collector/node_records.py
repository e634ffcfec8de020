"""A node's fleet state and its stored record: what is persisted of a node, and how a restarted
collector rebuilds the node from it."""

from __future__ import annotations

from typing import Any

import msgspec

from collector.fleet.state import NodeState
from collector.store import NodeRecord
from fleetops.wire import Accelerator, HostFacts, Location

__all__ = ["node_record", "node_state", "record_key"]


def node_record(state: NodeState, now: float) -> NodeRecord:
    """The persisted snapshot of a node."""
    inventory: dict[str, Any] = {
        "hostname": state.hostname,
        "location": msgspec.to_builtins(state.location) if state.location is not None else None,
        "host": msgspec.to_builtins(state.host_facts) if state.host_facts is not None else None,
        "accelerators": msgspec.to_builtins(list(state.accelerators)),
        "birth_ts": state.birth_ts,
        "expected_accelerators": msgspec.to_builtins(list(state.expected_accelerators)),
    }
    return NodeRecord(
        node=state.node,
        site=state.site,
        rack=state.location.rack if state.location is not None else "",
        status=state.status,
        session=state.session,
        boot_id=state.boot_id,
        agent_version=state.agent_version,
        hostname=state.hostname,
        interval_s=state.interval_s,
        last_seen=state.last_seen,
        offline_since=state.offline_since,
        offline_reason=state.offline_reason,
        offline_session=state.offline_session,
        offline_task_raised=state.offline_task_raised,
        inventory=inventory,
        first_seen=now,
        updated_at=now,
    )


def record_key(state: NodeState) -> tuple[object, ...]:
    """What a node's persisted record holds besides when it was last seen: when this is unchanged
    since the last write, updating ``last_seen`` is enough."""
    return (
        state.site,
        state.location,
        state.status,
        state.session,
        state.boot_id,
        state.agent_version,
        state.hostname,
        state.interval_s,
        state.offline_since,
        state.offline_reason,
        state.offline_session,
        state.offline_task_raised,
        state.host_facts,
        state.accelerators,
        state.expected_accelerators,
        state.birth_ts,
    )


def node_state(record: NodeRecord) -> NodeState:
    """A node loaded from the store, as fleet state (readings are not persisted)."""
    inv = record.inventory
    try:
        location = msgspec.convert(inv["location"], Location) if inv.get("location") else None
        host = msgspec.convert(inv["host"], HostFacts) if inv.get("host") else None
        accelerators = tuple(msgspec.convert(inv.get("accelerators") or [], list[Accelerator]))
        expected = tuple(msgspec.convert(inv.get("expected_accelerators") or [], list[Accelerator]))
    except msgspec.ValidationError:
        location, host, accelerators, expected = None, None, (), ()
    status = record.status if record.status in ("online", "offline") else "unknown"
    return NodeState(
        node=record.node,
        site=record.site,
        location=location,
        hostname=record.hostname,
        session=record.session,
        boot_id=record.boot_id,
        agent_version=record.agent_version,
        interval_s=record.interval_s,
        accelerators=accelerators,
        host_facts=host,
        birth_ts=inv.get("birth_ts") if isinstance(inv.get("birth_ts"), float) else None,
        status=status,  # type: ignore[arg-type]
        last_seen=record.last_seen,
        offline_since=record.offline_since,
        offline_reason=record.offline_reason,
        offline_session=record.offline_session,
        offline_task_raised=record.offline_task_raised,
        telemetry_session=record.session,
        last_seq=None,
        expected_accelerators=expected or accelerators,
    )
