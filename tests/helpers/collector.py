"""Builders of wire messages and a small paho publisher for the collector tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    Event,
    HostFacts,
    Location,
    Message,
    Status,
    Telemetry,
    encode,
    topic_for,
)

SITE = "demo"


def birth(
    node: str, session: int = 1, *, gpus: int = 2, ts: float = 1000.0, rack: str = "r01", site: str = SITE
) -> Birth:
    return Birth(
        v=1,
        node=node,
        ts=ts,
        session=session,
        hostname=node,
        agent_version="0.1.0",
        boot_id="boot-1",
        interval_s=10.0,
        location=Location(site=site, room="hall-a", row="1", rack=rack, slot="u10"),
        host=HostFacts(os="Debian 12", cpu_count=64),
        accelerators=[
            Accelerator(
                vendor="nvidia",
                kind="gpu",
                index=i,
                id=f"GPU-{node}-{i}",
                model="NVIDIA H100 80GB HBM3",
                serial=f"SN{i:04d}",
                pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
            )
            for i in range(gpus)
        ],
    )


def status(node: str, state: str, session: int = 1, ts: float = 1000.0) -> Status:
    return Status(v=1, node=node, ts=ts, session=session, state=state)  # type: ignore[arg-type]


def frame(node: str, seq: int, session: int = 1, *, ts: float = 1000.0, temp: float = 40.0) -> Telemetry:
    return Telemetry(
        v=1,
        node=node,
        ts=ts,
        session=session,
        seq=seq,
        interval_s=10.0,
        accelerators=[AcceleratorReadings(index=0, id=f"GPU-{node}-0", temperature_celsius=temp)],
    )


def event(
    node: str,
    kind: str,
    *,
    data: dict[str, Any] | None = None,
    index: int | None = 0,
    session: int = 1,
    seq: int = 0,
    event_id: str | None = None,
) -> Event:
    return Event(
        v=1,
        node=node,
        id=event_id or uuid.uuid4().hex,
        ts=1000.0,
        session=session,
        seq=seq,
        kind=kind,
        severity="critical",
        message=f"{kind} test",
        accelerator_index=index,
        accelerator_id=f"GPU-{node}-{index}" if index is not None else "",
        data=data or {},
    )


class Publisher:
    """A synchronous MQTT v5 publisher (what an agent would send)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def raw(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=10)

    def send(self, message: Message, *, site: str = SITE, qos: int = 1, retain: bool = False) -> None:
        channel = {"birth": "birth", "status": "status", "telemetry": "telemetry", "event": "event"}
        kind = type(message).__name__.lower()
        self.raw(topic_for(site, message.node, channel[kind]), encode(message), qos=qos, retain=retain)  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (or raise after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {check}")
        await asyncio.sleep(0.05)
