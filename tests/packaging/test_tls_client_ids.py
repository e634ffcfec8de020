"""Client ids are bound to certificates by the shipped broker configuration (a real Mosquitto with
packaging/mosquitto-tls): a node certificate cannot take over the collector's session or another
node's, whatever client id it sends."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.helpers.tls import SITE, Client, Pki, TlsBroker, wait_for

N1, N2 = "gpu-r01-n01", "gpu-r01-n02"
COLLECTOR_ID = "fleetops-collector"
EVENTS = 6


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki") / "fleet").init()


@pytest.fixture
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


def _agent_id(node: str, site: str = SITE) -> str:
    return f"fleetops-agent-{site}-{node}"


EVENT_TOPIC = f"fleetops/v1/{SITE}/{N1}/event"


def _queue_for_the_collector(pki: Pki, broker: TlsBroker, clients: Callable[..., Client]) -> Client:
    """The collector subscribes with a persistent session and goes away; node n01 then publishes
    ``EVENTS`` QoS 1 events, which the broker queues for it. Returns n01's connection."""
    away = clients(broker, *pki.collector(), client_id=COLLECTOR_ID)
    assert away.connect(clean_start=False, session_expiry_s=3600)
    away.subscribe("fleetops/v1/+/+/event")
    away.close()
    node = clients(broker, *pki.node(N1), client_id=_agent_id(N1))
    assert node.connect()
    for i in range(EVENTS):
        assert node.publish(EVENT_TOPIC, f"queued-{i}".encode()) == 0
    return node


def _collector_gets_its_queue(pki: Pki, broker: TlsBroker, clients: Callable[..., Client]) -> Client:
    collector = clients(broker, *pki.collector(), client_id=COLLECTOR_ID)
    assert collector.connect(clean_start=False, session_expiry_s=3600)
    wait_for(lambda: len(collector.messages) >= EVENTS, timeout_s=5)
    assert sorted(payload for _, payload in collector.messages) == [
        f"queued-{i}".encode() for i in range(EVENTS)
    ]
    assert collector.session_present
    return collector


def test_node_certificate_cannot_resume_the_collectors_session(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    """Resuming the collector's session would hand the collector's queue to a node."""
    _queue_for_the_collector(pki, broker, clients)
    attacker = clients(broker, *pki.node(N2), client_id=COLLECTOR_ID)
    assert attacker.connect(clean_start=False, session_expiry_s=3600)
    assert not attacker.session_present, "a node certificate resumed the collector's session"
    attacker.close()
    assert attacker.messages == []
    _collector_gets_its_queue(pki, broker, clients)


def test_collectors_queue_survives_a_clean_start_with_its_client_id(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    """A node certificate connecting with the collector's id and a clean start would throw the
    collector's queue away (issue #16: 0 of 6 redelivered)."""
    _queue_for_the_collector(pki, broker, clients)
    attacker = clients(broker, *pki.node(N2), client_id=COLLECTOR_ID)
    assert attacker.connect(clean_start=True)
    attacker.close()
    _collector_gets_its_queue(pki, broker, clients)


def test_connected_collector_is_not_disconnected_by_a_node_certificate(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    node = _queue_for_the_collector(pki, broker, clients)
    collector = _collector_gets_its_queue(pki, broker, clients)
    attacker = clients(broker, *pki.node(N2), client_id=COLLECTOR_ID)
    assert attacker.connect()
    # The broker drops a taken-over connection before it answers the new one, so a message sent
    # after the attacker's CONNACK reaches this connection only if it was never dropped.
    assert node.publish(EVENT_TOPIC, b"after-attempt") == 0
    wait_for(lambda: (EVENT_TOPIC, b"after-attempt") in collector.messages)
    assert not collector.closed.is_set(), "the collector was disconnected by a node certificate"
    assert len(collector.messages) == EVENTS + 1


def test_node_certificate_cannot_take_over_another_nodes_session(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    """Node n02's certificate with n01's client id neither disconnects n01 nor fires n01's Will."""
    status = f"fleetops/v1/{SITE}/{N1}/status"
    observer = clients(broker, *pki.collector(), client_id=COLLECTOR_ID)
    assert observer.connect()
    observer.subscribe(status)
    victim = clients(broker, *pki.node(N1), client_id=_agent_id(N1), will=(status, b"will"))
    assert victim.connect()

    attacker = clients(broker, *pki.node(N2), client_id=_agent_id(N1))
    assert attacker.connect()
    assert victim.publish(status, b"still-here") == 0
    wait_for(lambda: (status, b"still-here") in observer.messages)
    assert not victim.closed.is_set(), "n01 was disconnected by n02's certificate"
    assert observer.messages == [(status, b"still-here")], "n01's Will fired"


def test_broker_names_every_connection_by_its_certificate(
    pki: Pki, broker: TlsBroker, clients: Callable[..., Client]
) -> None:
    """Whatever client id is sent, the session the broker opens is the certificate's CN."""
    for cert, sent in (
        (pki.node(N2), COLLECTOR_ID),
        (pki.node(N2), _agent_id(N1)),
        (pki.node(N1), _agent_id(N1)),
        (pki.collector(), "anything"),
        (pki.collector_ops(), COLLECTOR_ID),
    ):
        client = clients(broker, *cert, client_id=sent)
        assert client.connect()
        client.close()
    expected = [
        f"{SITE}/{N2}",
        f"{SITE}/{N2}",
        f"{SITE}/{N1}",
        COLLECTOR_ID,
        f"{COLLECTOR_ID}-ops",
    ]

    def seen() -> list[tuple[str, str]]:
        text = broker.log_path.read_text()
        return re.findall(r"New client connected from \S+ as (\S+) \(p5, c1, k\d+, u'([^']*)'\)", text)

    wait_for(lambda: len(seen()) >= len(expected))
    assert seen() == [(name, name) for name in expected]
