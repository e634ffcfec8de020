"""Simulated nodes at the hardware boundary for the fault and noise corpora, and a collector to feed.

GPU nodes run the agent's real NVML probe (edge detection, readings) over the fake NVML of
``agent.sim.gpu_model`` and the agent's real XID parser and reporter over the kernel-log lines
the simulated driver writes. Trainium nodes run the agent's real neuron-monitor report parser,
sysfs reader, frame builder (edges) and ``NEURON_HW_ERR`` parser over ``agent.probes.neuron``'s device
model. What they produce becomes wire messages (birth, telemetry, events) published to a real
Mosquitto, and a real ``Collector`` (SQLite, pipeline, rules, tasks) runs in-process on the same
fake clock, so minutes of hardware time pass in a second.
"""

from __future__ import annotations
