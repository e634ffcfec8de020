"""MQTT ingest: paho-mqtt 2.x on its own network thread, messages bridged into asyncio.

The collector keeps a persistent MQTT v5 session (fixed client id, ``clean_start=False``, a session
expiry) and acknowledges QoS 1 messages itself (``manual_ack=True``) only after the batch they
belong to committed to the store, so a crash between receipt and commit means redelivery, not loss.

The collector also publishes: acknowledgements of committed events (``.../ack``) and rebirth requests
(``.../rebirth``), QoS 1, not retained. It subscribes with MQTT v5 *No Local*, so its own control
messages never come back to it.

The bridge is bounded: paho's thread waits for room in the queue (back-pressure onto TCP) instead of
dropping messages, and gives up waiting only when the ingest stops. It costs one deque append per
message; the event loop is woken only when it is waiting for messages (not once per message).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.ingest.settings import MqttConfig
from fleetops.wire import CONTROL_CHANNELS, DecodeError, Message, Topic, TopicError, decode, parse_topic

__all__ = ["InboundMessage", "MqttIngest", "PublishSink", "Rejections", "decode_inbound", "parse_publish"]

log = structlog.get_logger("collector.ingest.client")

#: How often a rejection reason is logged again after its first occurrence.
REJECT_LOG_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retained: bool


class Rejections:
    """Rejected messages counted by reason; the first of each reason is logged, then at most one
    line per reason every ``REJECT_LOG_EVERY_S`` seconds (with the count so far)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._logged_at: dict[str, float] = {}

    def note(self, reason: str, detail: str, topic: str) -> None:
        self.counts[reason] += 1
        now = self._clock()
        last = self._logged_at.get(reason)
        if last is None or now - last >= REJECT_LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning(
                "message_rejected",
                reason=reason,
                detail=detail[:300],
                topic=topic[:200],
                count=self.counts[reason],
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


#: Parsed topics, by topic string (each node publishes on a handful): valid ones only, and at most
#: this many (about 250 bytes each) before the cache starts over.
TOPIC_CACHE_MAX: Final = 65_536
_TOPICS: dict[str, Topic] = {}


def decode_inbound(msg: InboundMessage, max_bytes: int) -> tuple[Topic, Message] | DecodeError:
    """Parse the topic and decode the payload; a ``DecodeError`` (returned, not raised) says why not.

    Reasons: ``topic`` (not a fleetops v1 node topic), ``not_consumed`` (a command or control
    message that only the collector itself should write), ``elsewhere`` (command results, read by
    the operations service: not a rejection), and those of ``fleetops.wire.decode``: ``oversized``,
    ``malformed``, ``over_limit``, ``unknown_version``, ``node_mismatch``, ``unknown_channel``. (The
    pipeline adds ``series_budget``: see ``collector.ingest.budget``.)
    """
    topic = _TOPICS.get(msg.topic)
    if topic is None:
        try:
            topic = parse_topic(msg.topic)
        except TopicError as exc:
            return DecodeError("topic", str(exc))
        if len(_TOPICS) >= TOPIC_CACHE_MAX:
            _TOPICS.clear()
        _TOPICS[msg.topic] = topic
    if topic.channel == "cmd/result":
        # Read by the operations service on a connection of its own; nothing to do here.
        return DecodeError("elsewhere", topic.channel)
    if topic.channel == "cmd" or topic.channel in CONTROL_CHANNELS:
        # Only the collector writes these, and it never hears its own messages (No Local).
        return DecodeError("not_consumed", topic.channel)
    try:
        return topic, decode(topic, msg.payload, max_bytes=max_bytes)
    except DecodeError as exc:
        return exc


_PUBLISH: Final = 0x30

#: What the ingest client hands over for each PUBLISH: topic (raw bytes), payload, QoS, packet id,
#: retain flag.
PublishSink = Callable[[bytes, bytes, int, int, bool], None]


class _IngestClient(mqtt.Client):
    """paho's client with a leaner receive path for the collector's stream.

    - The socket is read in chunks of up to ``READ_CHUNK`` bytes. Stock paho reads each packet
      with several small ``recv`` calls (the type byte, each byte of the remaining length, then the
      rest): three or more system calls per message, and as many times the GIL is released and
      must be won back from the busy pipeline thread. Here one ``recv`` takes whatever the kernel
      holds, and the packets in it are handled before paho waits on the socket again.
    - PUBLISH packets of QoS 0 and 1 (acknowledged by the caller: ``manual_ack``) are parsed here
      and handed to ``publish_sink`` as bytes and numbers, without paho's message object, MQTT v5
      properties object or callback-filter matching (the collector uses none of them). Their
      properties are skipped: the client never allows topic aliases (paho's default Topic Alias
      Maximum is 0), so none of them changes what the message is. QoS 2 and anything else go
      through paho.

    This relies on paho 2.x internals (``_sock_recv``, ``_sock_close``, ``loop_read``,
    ``_handle_publish``, ``_in_packet``); the dependency is pinned below 3 and the end-to-end
    tests run through it."""

    READ_CHUNK: Final = 256 * 1024

    def __init__(self, *args: Any, publish_sink: PublishSink | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publish_sink = publish_sink
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(self.READ_CHUNK)
            if len(data) <= bufsize:
                return data  # all of it wanted (or the connection closed: b"")
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf)
        ):
            rc = super().loop_read(max_packets)  # packets already read: no waiting on the socket
        return rc

    def _packet_read(self) -> MQTTErrorCode:
        """A PUBLISH of QoS 0 or 1 whose bytes are all in the read buffer is taken from it here;
        anything else (other packets, a packet split across reads) goes through paho."""
        sink = self.publish_sink
        buf, pos = self._rbuf, self._rpos
        if sink is None or self._in_packet["command"] != 0 or len(buf) - pos < 2:
            return super()._packet_read()
        header = buf[pos]
        qos = (header & 0x06) >> 1
        if (
            header & 0xF0 != _PUBLISH
            or qos > 1
            or not self._manual_ack
            or self._protocol != MQTTProtocolVersion.MQTTv5
        ):
            return super()._packet_read()
        remaining = read_varint(buf, pos + 1)
        if remaining is None or remaining[0] + remaining[1] > len(buf):
            return super()._packet_read()  # split across reads (or malformed: paho says so)
        length, at = remaining
        end = at + length
        self._rpos = end
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        parsed = parse_publish(memoryview(buf)[at:end], qos)
        if parsed is None:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL  # paho drops the connection
        topic, mid, payload = parsed
        sink(topic, payload, qos, mid, bool(header & 0x01))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        sink = self.publish_sink
        if sink is None or qos > 1 or not self._manual_ack or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        parsed = parse_publish(self._in_packet["packet"], qos)
        if parsed is None:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL  # paho drops the connection
        topic, mid, payload = parsed
        sink(topic, payload, qos, mid, bool(header & 0x01))
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def parse_publish(packet: bytes | bytearray | memoryview, qos: int) -> tuple[bytes, int, bytes] | None:
    """The variable header and payload of an MQTT v5 PUBLISH (everything after the fixed header):
    ``(topic, packet id, payload)``, or None when the packet is malformed. Properties are skipped."""
    n = len(packet)
    if n < 2:
        return None
    end = 2 + ((packet[0] << 8) | packet[1])
    if end > n:
        return None
    topic = bytes(packet[2:end])
    mid = 0
    if qos:
        if end + 2 > n:
            return None
        mid = (packet[end] << 8) | packet[end + 1]
        end += 2
    properties = read_varint(packet, end)  # their length; the properties themselves are skipped
    if properties is None:
        return None
    size, end = properties
    end += size
    if end > n:
        return None
    return topic, mid, bytes(packet[end:])


def read_varint(data: bytes | bytearray | memoryview, at: int) -> tuple[int, int] | None:
    """An MQTT variable byte integer (at most 4 bytes) starting at ``at``: ``(value, the index after
    it)``, or None when ``data`` ends first or the integer runs over 4 bytes."""
    value = shift = 0
    for i in range(at, min(at + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


class MqttIngest:
    """The broker connection. ``start()`` connects in the background (paho retries until the
    broker answers); ``batch()`` returns queued messages; ``ack()`` acknowledges them."""

    def __init__(self, config: MqttConfig, *, queue_max: int = 20_000) -> None:
        self.config = config
        self.queue_max = queue_max
        self.connected = False
        self.connects = 0
        self.session_present = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: paho's thread appends, the event loop takes (deque appends and pops are thread-safe)
        self._queue: deque[InboundMessage] = deque()
        #: set while the event loop waits for the first message of a batch
        self._waiting = False
        self._arrived: asyncio.Event | None = None
        #: set while there is room in the queue (paho's thread waits on it when the queue is full)
        self._room = threading.Event()
        self._room.set()
        self._started = False
        self._stopping = threading.Event()
        self._client: mqtt.Client | None = None

    @property
    def pending(self) -> int:
        """Messages received and not yet taken by ``batch()`` (at most ``queue_max``)."""
        return len(self._queue)

    # ---- paho thread --------------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker_connect_refused", reason=str(reason_code), url=self.config.url)
            return
        self.connects += 1
        self.session_present = bool(flags.session_present)
        client.subscribe(self.config.subscription, options=SubscribeOptions(qos=1, noLocal=True))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        """Ready only once the broker confirmed the subscription (SUBACK)."""
        if any(code.is_failure for code in reason_codes):
            log.error("subscription_refused", topic=self.config.subscription, reasons=str(reason_codes))
            return
        self.connected = True
        log.info(
            "broker_connected",
            url=self.config.url,
            client_id=self.config.client_id,
            session_present=self.session_present,
        )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was = self.connected
        self.connected = False
        if was:
            log.warning("broker_disconnected", reason=str(reason_code), url=self.config.url)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Messages paho handled itself (QoS 2)."""
        if self._stopping.is_set():
            return  # not acknowledged: the broker delivers it again next session
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = ""  # rejected as "topic" downstream, and still acknowledged
        self._enqueue(
            InboundMessage(topic, bytes(message.payload), message.qos, message.mid, bool(message.retain))
        )

    def _on_publish(self, topic: bytes, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        """QoS 0 and 1 messages, parsed by the ingest client."""
        if self._stopping.is_set():
            return  # not acknowledged: the broker delivers it again next session
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError:
            text = ""  # rejected as "topic" downstream, and still acknowledged
        self._enqueue(InboundMessage(text, payload, qos, mid, retain))

    def _enqueue(self, item: InboundMessage) -> None:
        loop = self._loop
        if loop is None:
            return
        queue = self._queue
        while len(queue) >= self.queue_max:
            self._room.clear()
            if len(queue) < self.queue_max:
                break
            self._room.wait(0.5)
            if self._stopping.is_set():
                return  # not acknowledged: the broker delivers it again next session
        queue.append(item)
        if self._waiting:
            self._waiting = False
            with contextlib.suppress(RuntimeError):  # the event loop is closed: shutting down
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    # ---- asyncio side -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._started = True
        cfg = self.config
        client = _IngestClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            publish_sink=self._on_publish,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.tls_ca_file or None,
                certfile=cfg.tls_cert_file or None,
                keyfile=cfg.tls_key_file or None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        client.connect_async(
            cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props
        )
        self._client = client
        client.loop_start()
        log.info("broker_connecting", url=cfg.url, client_id=cfg.client_id, subscription=cfg.subscription)

    async def batch(self, max_items: int, timeout_s: float) -> list[InboundMessage]:
        """Up to ``max_items`` messages: waits up to ``timeout_s`` for the first, then takes what is
        ready. Returns an empty list on timeout."""
        if not self._started or self._arrived is None:
            raise RuntimeError("ingest not started")
        queue = self._queue
        if not queue:
            arrived = self._arrived
            arrived.clear()
            self._waiting = True
            if not queue:  # paho may have appended between the test and the flag
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await arrived.wait()
            self._waiting = False
        return self.take(max_items)

    def take(self, max_items: int) -> list[InboundMessage]:
        """Up to ``max_items`` messages that are already queued; never waits."""
        if not self._started:
            raise RuntimeError("ingest not started")
        queue = self._queue
        items: list[InboundMessage] = []
        while queue and len(items) < max_items:
            items.append(queue.popleft())
        if len(queue) < self.queue_max:
            self._room.set()
        return items

    def ack(self, messages: list[InboundMessage]) -> None:
        """Acknowledge the QoS 1 messages of a committed batch."""
        client = self._client
        if client is None:
            return
        for msg in messages:
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message for the broker (paho sends it, and QoS 1 again after a reconnect);
        False when it could not even be queued."""
        client = self._client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=qos, retain=False)
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)

    def pause(self) -> None:
        """Stop taking messages from the network (used at shutdown, before the last batch)."""
        self._stopping.set()

    async def stop(self) -> None:
        """Disconnect cleanly; the broker keeps the session (and anything unacknowledged)."""
        self._stopping.set()
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self.connected = False
        log.info("broker_disconnected_cleanly", url=self.config.url)
