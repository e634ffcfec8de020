"""The registry of probe types the agent can run, each with its own ``[probes.<name>]`` config table.

A probe type registers here with one line: its name, its msgspec config struct (a subclass of
``ProbeConfig``, so it has ``enabled`` and ``timeout_s``) and a factory that builds the probe from its
validated config. The registry is an explicit dict; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from agent.probe import Probe
from agent.probes.host import HostProbe, HostProbeConfig
from agent.runner import Clock, ProbeConfig

__all__ = ["PROBES", "ProbeConfig", "ProbeContext", "ProbeSpec", "build_probes"]


class ProbeContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a factory may need besides its own config."""

    node: str
    state_dir: Path
    clock: Clock


C = TypeVar("C", bound=ProbeConfig)


class ProbeSpec(msgspec.Struct, Generic[C], frozen=True):
    """A probe type: its config struct and how to build it."""

    config_type: type[C]
    factory: Callable[[C, ProbeContext], Probe]


def _host(config: HostProbeConfig, context: ProbeContext) -> Probe:
    return HostProbe(config)


#: Every probe type, by the name used in ``[probes.<name>]``. Add a line to register a new type.
PROBES: dict[str, ProbeSpec[Any]] = {
    "host": ProbeSpec(HostProbeConfig, _host),
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
