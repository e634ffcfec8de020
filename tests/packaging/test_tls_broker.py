"""The production broker configuration (TLS, a certificate per node, ACLs) with a real Mosquitto,
the real agent and the real collector."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog

from agent.config import parse_config as agent_config
from agent.node import Agent
from collector.config import parse_config as collector_config
from collector.service import Collector
from fleetops import wire
from fleetops.identity import NodeKey
from tests.helpers.tls import SITE, Client, Pki, TlsBroker, wait_for

N1, N2, N3 = "gpu-r01-n01", "gpu-r01-n02", "gpu-r01-n03"
#: PUBACK reason codes of an accepted publish: 0, or 16 when no session subscribes to the topic
ACCEPTED = (0, 16)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki") / "fleet").init()


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with TlsBroker(pki, tmp_path_factory.mktemp("tls-broker")) as b:
        yield b


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: object, **kwargs: object) -> Client:
        client = Client(*args, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def collector(pki: Pki, broker: TlsBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    cert, key = pki.collector()
    config = collector_config(
        {
            "mqtt": {
                "url": broker.url,
                "client_id": f"collector-{tmp_path.name}",
                "tls_ca_file": str(pki.ca),
                "tls_cert_file": str(cert),
                "tls_key_file": str(key),
                "reconnect_max_s": 2,
            },
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
        }
    )
    c = Collector(config)
    await c.start()
    await eventually(lambda: c.ingest.connected)
    yield c
    await c.stop()


async def test_collector_ingest_and_operations_connections_have_their_own_identities(
    pki: Pki, broker: TlsBroker, tmp_path: Path
) -> None:
    """Both connections of a collector with remote operations, each with its own certificate: the
    broker binds each to its own client id, so neither takes over the other's session."""
    from collector.operations.signing import generate_key

    key_file = tmp_path / "signing.pem"
    generate_key(key_file)
    cert, key = pki.collector()
    ops_cert, ops_key = pki.collector_ops()
    config = collector_config(
        {
            "mqtt": {
                "url": broker.url,
                "tls_ca_file": str(pki.ca),
                "tls_cert_file": str(cert),
                "tls_key_file": str(key),
                "reconnect_max_s": 2,
            },
            "operations": {
                "enabled": True,
                "signing_key_file": str(key_file),
                "tls_cert_file": str(ops_cert),
                "tls_key_file": str(ops_key),
            },
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
        }
    )
    collector = Collector(config)
    await collector.start()
    try:
        await eventually(lambda: collector.ingest.connected and collector.operations.connected)
        # Its own node: the other tests' agents start a fresh session 1 for N1 and N2, which a
        # retained offline status of an earlier session 1 would shadow.
        async with running(_agent(pki, broker, tmp_path, N3, cert_of=N3)):
            await eventually(lambda: NodeKey(SITE, N3) in collector.state.nodes)
            frames = collector.state.nodes[NodeKey(SITE, N3)].frames_total
            # A connection taken over is dropped before the broker answers the new one; frames
            # arriving afterwards show that ingest kept its one connection.
            await eventually(lambda: collector.state.nodes[NodeKey(SITE, N3)].frames_total >= frames + 2)
        assert collector.ingest.connects == 1
        assert collector.operations.connected
    finally:
        await collector.stop()


def _agent(pki: Pki, broker: TlsBroker, tmp_path: Path, node: str, cert_of: str) -> Agent:
    cert, key = pki.node(cert_of)
    config = agent_config(
        {
            "node": {"name": node, "site": SITE},
            "mqtt": {
                "url": broker.url,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
                "tls": {"ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key)},
            },
            "agent": {"interval_s": 1, "state_dir": str(tmp_path / f"state-{node}")},
            "probes": {name: {"enabled": False} for name in ("host", "nvml", "neuron", "kmsg")},
        },
        check_files=True,
    )
    return Agent(config, [])


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.ensure_future(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


async def test_agent_with_its_own_certificate_reaches_the_collector(
    pki: Pki, broker: TlsBroker, collector: Collector, tmp_path: Path
) -> None:
    async with running(_agent(pki, broker, tmp_path, N1, cert_of=N1)) as agent:
        await eventually(
            lambda: (
                NodeKey(SITE, N1) in collector.state.nodes
                and collector.state.nodes[NodeKey(SITE, N1)].status == "online"
            )
        )
        await eventually(lambda: collector.state.nodes[NodeKey(SITE, N1)].frames_total >= 1)
        assert agent.publisher.stats.publish_refused == 0
    assert collector.state.nodes[NodeKey(SITE, N1)].site == SITE


async def test_agent_cannot_publish_as_another_node_and_logs_the_reason_code(
    pki: Pki, broker: TlsBroker, collector: Collector, tmp_path: Path
) -> None:
    """Node n01's certificate, configured as n02: the broker answers 135 to every QoS 1 publish;
    the agent logs it (aiomqtt alone would not) and the collector never hears of n02."""
    with structlog.testing.capture_logs() as logs:
        async with running(_agent(pki, broker, tmp_path, N2, cert_of=N1)) as agent:
            await eventually(lambda: agent.publisher.stats.publish_refused >= 2)
    refused = [entry for entry in logs if entry["event"] == "mqtt_publish_refused"]
    assert len(refused) == 1, "logged once per reason, counted every time"
    assert refused[0]["reason_code"] == 135
    assert refused[0]["reason"] == "Not authorized"
    assert refused[0]["topic_prefix"] == f"fleetops/v1/{SITE}/{N2}"
    await asyncio.sleep(0.5)
    assert not collector.state.named(N2)


@pytest.mark.parametrize(
    "topic",
    [
        f"fleetops/v1/{SITE}/{N2}/event",  # another node
        f"fleetops/v1/other-site/{N1}/event",  # its own name in another site
        f"fleetops/v1/{SITE}/{N1}/cmd",  # commands to itself
        f"fleetops/v1/{SITE}/{N2}/cmd",  # commands to another node
        f"fleetops/v1/{SITE}/{N1}/ack",  # acknowledging its own events
        f"fleetops/v1/{SITE}/{N2}/rebirth",  # asking another node for a birth
        f"fleetops/v1/{SITE}/{N1}/extra/event",  # below its own topics
        "fleetops/v1/other",
    ],
)
def test_node_certificate_may_not_write(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client], topic: str
) -> None:
    node = clients(broker, *pki.node(N1))
    assert node.connect()
    assert node.publish(topic) == 135


def test_node_certificate_writes_its_own_channels(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    node = clients(broker, *pki.node(N1))
    assert node.connect()
    for channel in ("birth", "status", "telemetry", "event", "cmd/result"):
        assert node.publish(f"fleetops/v1/{SITE}/{N1}/{channel}") in ACCEPTED, channel


def test_nodes_read_only_their_own_commands(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    n1 = clients(broker, *pki.node(N1))
    n2 = clients(broker, *pki.node(N2))
    collector = clients(broker, *pki.collector_ops())
    for client in (n1, n2, collector):
        assert client.connect()
    n1.subscribe(f"fleetops/v1/{SITE}/+/cmd")
    n2.subscribe(f"fleetops/v1/{SITE}/{N2}/cmd")
    n1.subscribe(f"fleetops/v1/{SITE}/{N2}/birth")
    assert collector.publish(f"fleetops/v1/{SITE}/{N2}/cmd", b"for-n2") == 0
    assert collector.publish(f"fleetops/v1/{SITE}/{N1}/cmd", b"for-n1") == 0
    assert n2.publish(f"fleetops/v1/{SITE}/{N2}/birth", b"n2-birth") == 0
    wait_for(lambda: len(n2.messages) >= 1 and len(n1.messages) >= 1)
    assert n2.messages == [(f"fleetops/v1/{SITE}/{N2}/cmd", b"for-n2")]
    assert (f"fleetops/v1/{SITE}/{N1}/cmd", b"for-n1") in n1.messages
    assert all(topic.endswith(f"/{N1}/cmd") for topic, _ in n1.messages), n1.messages


def test_collector_identity_may_not_write_node_channels(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    collector = clients(broker, *pki.collector())
    assert collector.connect()
    assert collector.publish(f"fleetops/v1/{SITE}/{N1}/event") == 135


def test_collector_identities_write_only_their_own_channels(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    """Ingest acknowledges and asks for births; only the operations identity sends commands."""
    ingest = clients(broker, *pki.collector())
    ops = clients(broker, *pki.collector_ops())
    assert ingest.connect()
    assert ops.connect()
    assert ingest.publish(f"fleetops/v1/{SITE}/{N1}/ack") in ACCEPTED
    assert ingest.publish(f"fleetops/v1/{SITE}/{N1}/rebirth") in ACCEPTED
    assert ingest.publish(f"fleetops/v1/{SITE}/{N1}/cmd") == 135
    assert ops.publish(f"fleetops/v1/{SITE}/{N1}/cmd") in ACCEPTED
    for channel in ("ack", "rebirth", "event", "cmd/result"):
        assert ops.publish(f"fleetops/v1/{SITE}/{N1}/{channel}") == 135, channel


def test_collector_checks_the_payload_node_as_a_second_wall(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client], tmp_path: Path
) -> None:
    """A node may write its own topic, but a payload naming another node is rejected downstream."""
    from collector.ingest.client import InboundMessage, decode_inbound

    node = clients(broker, *pki.node(N1))
    assert node.connect()
    payload = wire.encode(wire.Status(v=wire.PROTOCOL_VERSION, node=N2, ts=1.0, session=1, state="online"))
    assert node.publish(f"fleetops/v1/{SITE}/{N1}/status", payload) in ACCEPTED
    result = decode_inbound(
        InboundMessage(f"fleetops/v1/{SITE}/{N1}/status", payload, 1, 1, False), wire.MAX_PAYLOAD_BYTES
    )
    assert isinstance(result, wire.DecodeError)
    assert result.reason == "node_mismatch"


def test_no_certificate_is_refused(pki: Pki, broker: TlsBroker, clients: Callable[..., Client]) -> None:
    assert not clients(broker, None, None).connect()


def test_certificate_from_a_foreign_ca_is_refused(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client], tmp_path: Path
) -> None:
    foreign = Pki(tmp_path / "foreign").init()
    assert not clients(broker, *foreign.node(N1), ca=pki.ca).connect()


def test_plain_mqtt_is_refused(pki: Pki, broker: TlsBroker, clients: Callable[..., Client]) -> None:
    assert not clients(broker, None, None, tls=False).connect(timeout_s=5)


def test_a_foreign_broker_is_refused_by_the_node(pki: Pki, broker: TlsBroker, tmp_path: Path) -> None:
    """The node checks the broker too: with another CA as its trust anchor (the agent builds its
    context the same way) the handshake fails."""
    foreign = Pki(tmp_path / "foreign").init()
    cert, key = pki.node(N1)
    context = ssl.create_default_context(cafile=str(foreign.ca))
    context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", broker.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
