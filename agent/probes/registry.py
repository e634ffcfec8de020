"""The registry of probe types the agent can run, each with its own ``[probes.<name>]`` config table.

A probe type registers here with one line: its name, its msgspec config struct (a subclass of
``ProbeConfig``, so it has ``enabled`` and ``timeout_s``) and a factory that builds the probe from its
validated config. The registry is an explicit dict; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from agent.probes.base import Probe
from agent.probes.host import HostProbe, HostProbeConfig
from agent.probes.host_ras.readings_probe import HostRasProbe, HostRasProbeConfig
from agent.probes.kmsg import KmsgConfig
from agent.probes.neuron.probe import NeuronProbeConfig
from agent.probes.nic.probe import NicProbe, NicProbeConfig
from agent.probes.nvidia.nvml_probe import NvmlConfig
from agent.probes.runner import Clock, ProbeConfig

if TYPE_CHECKING:
    from agent.probes.nvidia.xid import XidReporter

__all__ = ["PROBES", "ProbeConfig", "ProbeContext", "ProbeSpec", "SharedProbeState", "build_probes"]


class SharedProbeState:
    """What the probes of one node share: the XID reporter (NVML events and the kernel log feed
    the same one, so one XID is one event) and the Neuron probe's device lookup."""

    def __init__(self) -> None:
        self._xid_reporter: XidReporter | None = None
        self.neuron_lookup: Callable[[int], str | None] | None = None

    def xid_reporter(self, *, fold_window_s: float = 30.0, dedup_window_s: float = 10.0) -> XidReporter:
        """The node's reporter, created by whichever probe asks first."""
        if self._xid_reporter is None:
            from agent.probes.nvidia.xid import XidReporter

            self._xid_reporter = XidReporter(fold_window_s=fold_window_s, dedup_window_s=dedup_window_s)
        return self._xid_reporter


class ProbeContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a factory may need besides its own config."""

    node: str
    state_dir: Path
    clock: Clock
    interval_s: float = 10.0
    shared: SharedProbeState = msgspec.field(default_factory=SharedProbeState)


C = TypeVar("C", bound=ProbeConfig)


class ProbeSpec(msgspec.Struct, Generic[C], frozen=True):
    """A probe type: its config struct and how to build it."""

    config_type: type[C]
    factory: Callable[[C, ProbeContext], Probe]


def _host(config: HostProbeConfig, context: ProbeContext) -> Probe:
    return HostProbe(config)


def _host_ras(config: HostRasProbeConfig, context: ProbeContext) -> Probe:
    return HostRasProbe(config)


def _nvml(config: NvmlConfig, context: ProbeContext) -> Probe:
    from agent.probes.nvidia.nvml_probe import make_nvml_probe

    reporter = context.shared.xid_reporter(dedup_window_s=config.xid_dedup_window_s)
    return make_nvml_probe(config, reporter=reporter, clock=context.clock.time)


def _neuron(config: NeuronProbeConfig, context: ProbeContext) -> Probe:
    from agent.probes.neuron.probe import make_neuron_probe

    probe = make_neuron_probe(
        config,
        interval_s=context.interval_s,
        state_dir=context.state_dir / "neuron",
        clock=context.clock.time,
        monotonic=context.clock.monotonic,
    )
    context.shared.neuron_lookup = probe.accelerator_id
    return probe


def _nic(config: NicProbeConfig, context: ProbeContext) -> Probe:
    return NicProbe(config, monotonic=context.clock.monotonic)


def _kmsg(config: KmsgConfig, context: ProbeContext) -> Probe:
    from agent.probes.kernel_log import KernelLogProbe
    from agent.probes.kmsg import make_kmsg_probe

    reporter = context.shared.xid_reporter(fold_window_s=config.xid_fold_window_s)
    lookup = context.shared.neuron_lookup
    if not config.state_file:
        config = msgspec.structs.replace(config, state_file=str(context.state_dir / "kmsg.state"))
    follower = make_kmsg_probe(config, clock=context.clock.time)
    if lookup is None:
        return KernelLogProbe(follower, reporter, clock=context.clock.time)
    return KernelLogProbe(follower, reporter, neuron_lookup=lookup, clock=context.clock.time)


#: Every probe type, by the name used in ``[probes.<name>]``, in the order they are built (the
#: kernel log comes last: it attaches to what the vendor probes created). Add a line to register a
#: new type.
PROBES: dict[str, ProbeSpec[Any]] = {
    "host": ProbeSpec(HostProbeConfig, _host),
    "host_ras": ProbeSpec(HostRasProbeConfig, _host_ras),
    "nvml": ProbeSpec(NvmlConfig, _nvml),
    "neuron": ProbeSpec(NeuronProbeConfig, _neuron),
    "nic": ProbeSpec(NicProbeConfig, _nic),
    "kmsg": ProbeSpec(KmsgConfig, _kmsg),
}


def build_probes(
    configs: Mapping[str, ProbeConfig],
    context: ProbeContext,
    registry: Mapping[str, ProbeSpec[Any]] | None = None,
) -> list[Probe]:
    """Build the enabled probes, in registry order, from their validated configs."""
    registry = PROBES if registry is None else registry
    probes: list[Probe] = []
    for name, spec in registry.items():
        config = configs.get(name)
        if config is None or not config.enabled:
            continue
        probes.append(spec.factory(config, context))
    return probes
