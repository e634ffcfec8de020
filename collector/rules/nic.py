"""RDMA port rules (InfiniBand, RoCE, EFA), from the NIC probe's readings folded per port
(``collector.fleet.nic_conditions``). Every one asks ``CHECK_NETWORK`` of the port, located by its
part (``mlx5_3 port 1``) and PCI address, and names the GPUs behind the same PCIe switch (else on
the same NUMA node): their jobs are the ones the port slows or stops.

* ``nic_port_down``: a port in use not ACTIVE / not LinkUp for ``nic.down_for_s``.
* ``nic_link_flap``: ``nic.flap_count`` link downs or link error recoveries within
  ``nic.flap_window_s``.
* ``nic_errors``: symbol, link-integrity, receive and remote physical receive errors past
  ``nic.errors_per_min``.
* ``nic_speed``: an ACTIVE port below its rated rate for ``nic.slow_for_s``.

Nothing counts within ``nic.boot_grace_s`` of boot (link training, renegotiation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from collector.fleet.nic_conditions import ERROR_COUNTERS, NicConditions
from collector.fleet.state import NodeState
from collector.rules.actions import Action, default_severity
from collector.rules.base import DETAIL_MAX, Finding, RuleContext, duration_text, part_location
from collector.rules.wording import clip
from fleetops.wire import Nic, NicReadings

__all__ = [
    "near_gpus",
    "nic_errors_rule",
    "nic_link_flap_rule",
    "nic_port_down_rule",
    "nic_speed_rule",
    "nic_view",
]

_NAME_IN_TITLE: Final = 24
_READING_FIELDS: Final = (
    "state",
    "phys_state",
    "rate_gbps",
    "carrier",
    "carrier_changes",
    "operstate",
    "link_downed",
    "link_error_recovery",
    *ERROR_COUNTERS,
    "port_xmit_discards",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
)
_CABLE: Final = "check the cable, transceiver and switch port"


def _bdf(text: str) -> str:
    """A PCI address in one form (``0000:18:00.0``) whether NVML (``00000000:18:00.0``) or sysfs wrote it."""
    parts = text.strip().lower().split(":")
    if len(parts) != 3:
        return ""
    try:
        domain = int(parts[0], 16)
    except ValueError:
        return ""
    return f"{domain:04x}:{parts[1]}:{parts[2]}"


def near_gpus(node: NodeState, nic: Nic | None) -> list[dict[str, Any]]:
    """The accelerators of the inventory behind the port's PCIe switch, else on its NUMA node."""
    if nic is None:
        return []
    wanted = [_bdf(b) for b in (nic.near_gpus or nic.numa_gpus)]
    by_bdf = {_bdf(a.pci_bus_id): a for a in node.accelerators if a.pci_bus_id}
    out = []
    for bdf in wanted:
        accel = by_bdf.get(bdf)
        row: dict[str, Any] = {"pci_bus_id": bdf}
        if accel is not None:
            row.update(index=accel.index, id=accel.id)
        out.append(row)
    return out


def nic_view(r: NicReadings) -> dict[str, Any]:
    """The evidence-worthy fields of one port's readings (absent ones left out)."""
    out: dict[str, Any] = {"device": r.device, "port": r.port}
    for name in _READING_FIELDS:
        value = getattr(r, name)
        if value is not None and value != "":
            out[name] = value
    return out


def _gpus_text(gpus: list[dict[str, Any]]) -> str:
    indices = [str(g["index"]) for g in gpus if "index" in g]
    if not indices:
        return ""
    return f"; it carries the traffic of GPU {', '.join(indices)}"


def _ports(node: NodeState) -> Iterator[tuple[NicConditions, NicReadings, Nic | None]]:
    for (device, port), c in sorted(node.nic_conditions.items()):
        if c.latest is not None and c.watch:
            yield c, c.latest, node.nic(device, port)


def _finding(
    node: NodeState,
    c: NicConditions,
    r: NicReadings,
    nic: Nic | None,
    *,
    fault: str,
    rule: str,
    what: str,
    todo: str,
    detail: str,
    evidence: dict[str, Any],
) -> Finding:
    gpus = near_gpus(node, nic)
    name = f"{c.device} port {c.port}"
    return Finding(
        node=node.node,
        component=f"nic:{c.device}/{c.port}",
        fault=fault,
        action=Action.CHECK_NETWORK,
        severity=default_severity(Action.CHECK_NETWORK),
        what=f"NIC {clip(c.device, _NAME_IN_TITLE)} port {c.port} {what}",
        todo=todo,
        detail=(f"{name}: {detail}{_gpus_text(gpus)}")[:DETAIL_MAX],
        location=part_location(node, name, pci_bus_id=nic.pci_bus_id if nic is not None else ""),
        rule=rule,
        evidence={
            "nic": {
                "device": c.device,
                "port": c.port,
                "link_layer": nic.link_layer if nic is not None else "",
                "netdev": nic.netdev if nic is not None else "",
                "pci_bus_id": nic.pci_bus_id if nic is not None else "",
                "numa_node": nic.numa_node if nic is not None else None,
            },
            "near_gpus": gpus,
            "readings": [{"ts": c.last_ts, **nic_view(r)}],
            **evidence,
        },
        condition=True,
    )


def nic_port_down_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A port in use, not ACTIVE / not LinkUp for ``nic.down_for_s``."""
    if not ctx.enabled("nic_port_down"):
        return []
    out = []
    for c, r, nic in _ports(node):
        if not c.down.active:
            continue
        state = "/".join(s for s in (r.state, r.phys_state) if s) or "not up"
        out.append(
            _finding(
                node,
                c,
                r,
                nic,
                fault="nic_down",
                rule="nic_port_down",
                what="down",
                todo=_CABLE,
                detail=f"port {state} since agent time {c.down.since:.0f} "
                f"(over {duration_text(ctx.config.nic.down_for_s)})",
                evidence={"since": c.down.since},
            )
        )
    return out


def nic_link_flap_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """``nic.flap_count`` link downs or link error recoveries within ``nic.flap_window_s``."""
    if not ctx.enabled("nic_link_flap"):
        return []
    cfg = ctx.config.nic
    out = []
    for c, r, nic in _ports(node):
        flaps = c.flaps()
        if flaps < cfg.flap_count:
            continue
        window = duration_text(cfg.flap_window_s)
        downs, recoveries = c.link_downs(), c.recovered.total
        counts = [f"{downs} down{'s' * (downs != 1)}"] if downs else []
        if recoveries:
            counts.append(f"{recoveries} recover{'ies' if recoveries != 1 else 'y'}")
        out.append(
            _finding(
                node,
                c,
                r,
                nic,
                fault="nic_flap",
                rule="nic_link_flap",
                what=f"link flapping ({', '.join(counts)} in {window})",
                todo="check the cable and switch port",
                detail=f"the link went down {downs} times and retrained {recoveries} times within "
                f"{window} (link_downed +{c.downed.total}, link_error_recovery +{recoveries}, "
                f"carrier_changes +{c.carrier.total})",
                evidence={
                    "link_downs": downs,
                    "link_recoveries": recoveries,
                    "deltas": {
                        "link_downed": c.downed.total,
                        "link_error_recovery": recoveries,
                        "carrier_changes": c.carrier.total,
                    },
                    "window_s": cfg.flap_window_s,
                },
            )
        )
    return out


def nic_errors_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Symbol, link-integrity, receive and remote physical receive errors rising past
    ``nic.errors_per_min``."""
    if not ctx.enabled("nic_errors"):
        return []
    cfg = ctx.config.nic
    out = []
    for c, r, nic in _ports(node):
        rate = c.error_rate_per_min(cfg)
        if rate is None or not c.errors_past(cfg):
            continue
        total, deltas = c.error_total(), c.error_deltas()
        out.append(
            _finding(
                node,
                c,
                r,
                nic,
                fault="nic_errors",
                rule="nic_errors",
                what=f"link errors ({rate:.0f}/min)",
                todo="reseat or replace the cable or transceiver",
                detail=f"{total} link errors within {duration_text(cfg.error_window_s)} "
                f"({rate:.1f}/min; over {cfg.errors_per_min:g}/min is a bad link): "
                + ", ".join(f"{name} +{n}" for name, n in deltas.items()),
                evidence={
                    "errors": total,
                    "deltas": deltas,
                    "per_min": round(rate, 2),
                    "window_s": cfg.error_window_s,
                },
            )
        )
    return out


def nic_speed_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """An ACTIVE port below its rated rate for ``nic.slow_for_s``."""
    if not ctx.enabled("nic_speed"):
        return []
    cfg = ctx.config.nic
    out = []
    for c, r, nic in _ports(node):
        rated = c.rated(nic.rated_gbps if nic is not None else None)
        if not c.slow.active or r.rate_gbps is None or rated is None:
            continue
        out.append(
            _finding(
                node,
                c,
                r,
                nic,
                fault="nic_slow",
                rule="nic_speed",
                what=f"at {r.rate_gbps:g} of {rated:g} Gb/s",
                todo="check the cable and switch port speed",
                detail=f"link at {r.rate_gbps:g} Gb/s, rated {rated:g} Gb/s, for over "
                f"{duration_text(cfg.slow_for_s)}",
                evidence={"rate_gbps": r.rate_gbps, "rated_gbps": rated, "since": c.slow.since},
            )
        )
    return out
