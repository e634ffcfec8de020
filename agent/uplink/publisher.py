"""The MQTT side of the agent: connect with a Will, announce, and deliver queued events and frames.

On every connect (MQTT v5): the Will is ``Status(offline, session=N)`` (retained, QoS 1); then Birth
(retained, QoS 1), Status online (retained, QoS 1), then queued events (QoS 1, each removed only once
the broker acknowledged it) and queued frames (QoS 0). Events are sent as soon as they are queued and
always before frames. Reconnects back off exponentially with full jitter. Payloads above
``wire.MAX_PAYLOAD_BYTES`` are refused and counted (the client would otherwise drop them silently).

The queues sit behind ``MessageQueue`` so a durable spool can replace the in-memory one. An event
queue that also implements ``AckedQueue`` (the spool) keeps events after the broker's PUBACK until the
collector acknowledges them on ``.../ack``; an unacknowledged event is sent again on every reconnect,
and while connected when its wait is over (``agent/uplink/resend.py``: the PUBACK's reason code says
whether a subscription, the collector's session, took the copy; if none did, the waits double from
``ack_timeout_s``). The agent subscribes to its own ``ack`` and ``rebirth``
topics; a rebirth request re-publishes the birth, at most once per ``rebirth_min_interval_s``.
With a ``CommandReceiver`` it also subscribes to its ``cmd`` topic, hands each payload to it, and
publishes the answers (``send_result``, QoS 1) before anything else that is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from typing import Any, Final, Literal

import aiomqtt
import structlog

from agent.config import MqttSection
from agent.probes.runner import Clock
from agent.uplink.queues import AckedQueue, MemoryQueue, MessageQueue, Outgoing
from agent.uplink.resend import NO_MATCHING_SUBSCRIBERS, SUCCESS, Resends
from agent.uplink.session import CommandReceiver, ConnectionHooks, PublisherStats, backoff_delay
from fleetops import wire

__all__ = [
    "AckedQueue",
    "CommandReceiver",
    "ConnectionHooks",
    "MemoryQueue",
    "MessageQueue",
    "Outgoing",
    "Publisher",
    "PublisherStats",
    "backoff_delay",
]

_SHUTDOWN_DRAIN_S: Final = 2.0
_PUBLISH_TIMEOUT_S: Final = 10.0
_RESEND_LOG_S: Final = 60.0


_RESULTS_MAX: Final = 256


class Publisher:
    """Owns the MQTT connection for one node. ``run()`` until ``stop()``."""

    def __init__(
        self,
        config: MqttSection,
        *,
        site: str,
        node: str,
        client_id: str,
        hooks: ConnectionHooks,
        clock: Clock,
        events: MessageQueue | None = None,
        frames: MessageQueue | None = None,
        rng: random.Random | None = None,
        logger: Any = None,
        rebirth_min_interval_s: float = 10.0,
        commands: CommandReceiver | None = None,
    ) -> None:
        self._config = config
        self._commands = commands
        self._results: deque[bytes] = deque()
        self._rebirth_min_interval_s = rebirth_min_interval_s
        self._last_rebirth_request: float | None = None
        self._site = site
        self._node = node
        self._client_id = client_id
        self._hooks = hooks
        self._clock = clock
        self._events: MessageQueue = events if events is not None else MemoryQueue(config.queue_max_events)
        self._frames: MessageQueue = frames if frames is not None else MemoryQueue(config.queue_max_frames)
        self._rng = rng or random.Random()
        self._log = logger if logger is not None else structlog.get_logger("fleetops.agent.publisher")
        self.stats = PublisherStats()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._logged_oversized: set[str] = set()
        self._logged_refusals: set[str] = set()
        self._events_dropping = False
        self._frames_dropping = False
        self._tls_context: ssl.SSLContext | None = None
        self._birth_requested = False
        self._puback_reason: int | None = None
        self._no_subscriber = False
        self._resends_unlogged = Resends()
        self._resends_logged_at: float | None = None
        self.session: int | None = None

    # -- what the agent calls ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def queued(self) -> tuple[int, int]:
        """(events, frames) waiting to be sent."""
        return len(self._events), len(self._frames)

    def send_event(self, event: wire.Event) -> None:
        """Queue an event; it is sent at once when connected, else after the next birth."""
        payload = self._encode(event, "event")
        if payload is None:
            return
        dropped = self._events.put(Outgoing(channel="event", payload=payload, key=event.id))
        if dropped:
            self.stats.events_dropped += dropped
            if not self._events_dropping:
                self._events_dropping = True
                self._log.warning("event_queue_full", dropped_total=self.stats.events_dropped)
        self._wakeup.set()

    def send_frame(self, frame: wire.Telemetry) -> None:
        """Queue a telemetry frame (the oldest waiting frame is dropped when the queue is full)."""
        payload = self._encode(frame, "telemetry")
        if payload is None:
            return
        dropped = self._frames.put(
            Outgoing(channel="telemetry", payload=payload, key=f"{frame.session}/{frame.seq}")
        )
        if dropped:
            self.stats.frames_dropped += dropped
            if not self._frames_dropping:
                self._frames_dropping = True
                self._log.warning("frame_queue_full", dropped_total=self.stats.frames_dropped)
        self._wakeup.set()

    def send_result(self, result: wire.CommandResult) -> None:
        """Queue the answer to a command (kept in memory, the oldest dropped beyond 256)."""
        if len(self._results) >= _RESULTS_MAX:
            self._results.popleft()
            self.stats.results_dropped += 1
        self._results.append(wire.encode(result))
        self._wakeup.set()

    def request_birth(self) -> None:
        """Re-announce the node (a fresh birth, same session) before the next queued message.

        Used when the inventory changes after the connect (a probe finished starting, a device
        appeared) and when the collector asks for a rebirth. A birth is sent on every connect anyway.
        """
        self._birth_requested = True
        self._wakeup.set()

    def acked_queue(self) -> AckedQueue | None:
        """The event queue when it keeps events until the collector acknowledges them."""
        events = self._events
        if isinstance(events, AckedQueue) and getattr(events, "acked", True):
            return events
        return None

    def stop(self) -> None:
        """Ask ``run()`` to publish Status offline, disconnect and return."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until ``stop()``."""
        attempt = 0
        while not self._stopping.is_set():
            session = self._hooks.next_session()
            try:
                client = self._client(session)
                async with client:
                    attempt = 0
                    await self._serve(client, session)
                    return
            except aiomqtt.MqttError as exc:
                self._connection_lost(session, exc)
            finally:
                self._connected.clear()
            if self._stopping.is_set():
                return
            delay = backoff_delay(
                attempt, self._config.reconnect_min_s, self._config.reconnect_max_s, self._rng
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    # -- connection ----------------------------------------------------------------------------

    def _topic(self, channel: wire.Channel) -> str:
        return wire.topic_for(self._site, self._node, channel)

    def _status(self, session: int, state: Literal["online", "offline"]) -> bytes:
        return wire.encode(
            wire.Status(
                v=wire.PROTOCOL_VERSION, node=self._node, ts=self._clock.time(), session=session, state=state
            )
        )

    def _client(self, session: int) -> aiomqtt.Client:
        cfg = self._config
        will = aiomqtt.Will(
            topic=self._topic("status"), payload=self._status(session, "offline"), qos=1, retain=True
        )
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=self._client_id,
            username=cfg.username,
            password=cfg.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=cfg.keepalive_s,
            timeout=_PUBLISH_TIMEOUT_S,
            tls_context=self._tls() if cfg.tls_enabled else None,
            logger=_QUIET_MQTT_LOGGER,
        )
        self._watch_pubacks(client)
        return client

    def _watch_pubacks(self, client: aiomqtt.Client) -> None:
        """aiomqtt 2.5 drops PUBACK reason codes; read them from paho's callback.

        The reason of the latest PUBACK is kept for ``_publish_event`` (publishes are awaited one at a
        time, so it is that publish's). A refusal (135 "Not authorized": this node's certificate may
        not write the topic) is logged once per reason; a refused message counts as sent, and an event
        stays in the spool to be sent again on its back-off."""
        paho = client._client
        forward: Any = paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            value = getattr(reason_code, "value", reason_code)
            self._puback_reason = value if isinstance(value, int) else None
            if getattr(reason_code, "is_failure", False):
                self.stats.publish_refused += 1
                reason = str(reason_code)
                if reason not in self._logged_refusals:
                    self._logged_refusals.add(reason)
                    self._log.error(
                        "mqtt_publish_refused",
                        reason=reason,
                        reason_code=int(reason_code.value),
                        topic_prefix=wire.topic_for(self._site, self._node, "birth").rsplit("/", 1)[0],
                        refused_total=self.stats.publish_refused,
                    )
            if forward is not None:
                forward(c, userdata, mid, reason_code, properties)

        paho.on_publish = on_publish

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            tls = self._config.tls
            context = ssl.create_default_context(cafile=tls.ca_file or None)
            if tls.cert_file:
                context.load_cert_chain(tls.cert_file, tls.key_file or None)
            self._tls_context = context
        return self._tls_context

    async def _serve(self, client: aiomqtt.Client, session: int) -> None:
        self.stats.connects += 1
        # Subscribe first, so acknowledgements of what is replayed below cannot be missed.
        await client.subscribe(self._topic("ack"), qos=1)
        await client.subscribe(self._topic("rebirth"), qos=1)
        if self._commands is not None:
            await client.subscribe(self._topic("cmd"), qos=1)
        acked = self.acked_queue()
        resent = acked.rewind() if acked is not None else 0  # sent before, never acknowledged
        self.stats.events_resent += resent
        self.stats.events_resent_reconnect += resent
        birth = self._hooks.connected(session)
        self.session = session
        birth_payload = wire.encode(birth)
        if len(birth_payload) > wire.MAX_PAYLOAD_BYTES:
            self.stats.oversized += 1
            self._log.error("birth_oversized", bytes=len(birth_payload))
        else:
            await client.publish(self._topic("birth"), birth_payload, qos=1, retain=True)
        await client.publish(self._topic("status"), self._status(session, "online"), qos=1, retain=True)
        self._birth_requested = False
        self._connected.set()
        events, frames = self.queued()
        self._log.info(
            "mqtt_connected",
            session=session,
            queued_events=events,
            queued_frames=frames,
            resent_events=resent,
        )
        self._events_dropping = self._frames_dropping = False

        watcher = asyncio.ensure_future(self._watch(client))
        sender = asyncio.ensure_future(self._send_loop(client))
        try:
            done, _ = await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, sender):
                task.cancel()
            await asyncio.gather(watcher, sender, return_exceptions=True)
        for task in done:
            task.result()  # re-raise MqttError from either task
        # The sender returned: stop was requested while connected.
        await self._shutdown(client, session)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Returns only by raising ``MqttError`` when the connection drops."""
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                self.control(str(message.topic), bytes(payload))
        raise aiomqtt.MqttError("message stream ended")

    def control(self, topic: str, payload: bytes) -> None:
        """Handle a message on this node's ``ack`` or ``rebirth`` topic (bad ones are counted)."""
        try:
            parsed = wire.parse_topic(topic)
            if parsed.node != self._node or parsed.site != self._site:
                raise wire.DecodeError("node_mismatch", topic[:200])
            if parsed.channel == "cmd" and self._commands is not None:
                self._commands.receive(payload)
                return
            message = wire.decode_control(parsed, payload)
        except (wire.TopicError, wire.DecodeError) as exc:
            self.stats.control_invalid += 1
            if "control" not in self._logged_oversized:
                self._logged_oversized.add("control")
                self._log.warning("control_message_invalid", topic=topic[:200], error=str(exc)[:300])
            return
        if isinstance(message, wire.Ack):
            self.stats.acks_received += 1
            acked = self.acked_queue()
            if acked is not None:
                self.stats.events_acked += acked.ack(message.ids)
            return
        self.stats.rebirth_requests += 1
        now = self._clock.monotonic()
        last = self._last_rebirth_request
        if last is not None and now - last < self._rebirth_min_interval_s:
            self.stats.rebirth_requests_ignored += 1
            return
        self._last_rebirth_request = now
        self._log.info("rebirth_requested", reason=message.reason[:200])
        self.request_birth()

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        acked = self.acked_queue()
        while not self._stopping.is_set():
            if acked is not None:
                self._count_resends(acked.resend_due())
            if not await self._send_one(client):
                self._wakeup.clear()
                if self._stopping.is_set():
                    break
                if (
                    len(self._events) == 0
                    and len(self._frames) == 0
                    and not self._birth_requested
                    and not self._results
                ):
                    due = acked.next_due() if acked is not None else None
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._wakeup.wait()

    def _count_resends(self, resends: Resends) -> None:
        """Count events put back to be sent again; log them at most once a minute (with the counts
        since the previous line), so a long outage shows in the log without filling it."""
        if resends.total == 0:
            return
        self.stats.events_resent += resends.total
        self.stats.events_resent_timer += resends.timer
        self.stats.events_resent_overtaken += resends.overtaken
        before = self._resends_unlogged
        pending = self._resends_unlogged = Resends(
            timer=before.timer + resends.timer, overtaken=before.overtaken + resends.overtaken
        )
        now = self._clock.monotonic()
        if self._resends_logged_at is not None and now - self._resends_logged_at < _RESEND_LOG_S:
            return
        self._resends_logged_at = now
        self._resends_unlogged = Resends()
        self._log.info(
            "events_resent",
            timer=pending.timer,
            overtaken=pending.overtaken,
            resent_total=self.stats.events_resent,
            reconnect_total=self.stats.events_resent_reconnect,
        )

    async def _send_one(self, client: aiomqtt.Client) -> bool:
        """Send a requested birth, else the head event, else the head frame; False when idle."""
        if self._birth_requested:
            self._birth_requested = False
            payload = self._encode(self._hooks.birth(), "birth")
            if payload is not None:
                await client.publish(self._topic("birth"), payload, qos=1, retain=True)
                self.stats.rebirths += 1
            return True
        if self._results:
            await client.publish(self._topic("cmd/result"), self._results[0], qos=1, retain=False)
            self._results.popleft()
            self.stats.results_sent += 1
            return True
        item = self._events.peek()
        if item is not None:
            await self._publish_event(client, item)
            return True
        item = self._frames.peek()
        if item is not None:
            await client.publish(self._topic("telemetry"), item.payload, qos=0, retain=False)
            self._frames.pop()
            self.stats.frames_sent += 1
            return True
        return False

    async def _publish_event(
        self, client: aiomqtt.Client, item: Outgoing, *, wait_s: float | None = None
    ) -> None:
        """Publish the head event (QoS 1) and take it off the queue with what the PUBACK said."""
        self._puback_reason = None
        await client.publish(self._topic("event"), item.payload, qos=1, retain=False, timeout=wait_s)
        reason = self._puback_reason
        self.stats.events_sent += 1
        acked = self.acked_queue()
        if acked is None:
            self._events.pop()
            return
        acked.sent(held=reason == SUCCESS)
        if reason == NO_MATCHING_SUBSCRIBERS:
            self.stats.events_no_subscriber += 1
            if not self._no_subscriber:
                self._no_subscriber = True
                self._log.warning(
                    "events_without_subscriber",
                    hint="the broker has no subscription for this node's events (no collector session): "
                    "they stay in the spool and are sent again with back-off",
                    no_subscriber_total=self.stats.events_no_subscriber,
                )
        elif reason == SUCCESS and self._no_subscriber:
            self._no_subscriber = False
            self._log.info("events_subscriber_back", no_subscriber_total=self.stats.events_no_subscriber)

    async def _shutdown(self, client: aiomqtt.Client, session: int) -> None:
        """Deliver what events can be delivered quickly, then Status offline; the caller disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_DRAIN_S
        try:
            while self._events.peek() is not None and loop.time() < deadline:
                item = self._events.peek()
                assert item is not None
                await self._publish_event(client, item, wait_s=1.0)
            await client.publish(
                self._topic("status"), self._status(session, "offline"), qos=1, retain=True, timeout=2.0
            )
        except aiomqtt.MqttError as exc:
            self._log.warning("mqtt_offline_not_sent", session=session, error=str(exc))
            raise
        events, frames = self.queued()
        self._log.info(
            "mqtt_disconnected_cleanly", session=session, unsent_events=events, unsent_frames=frames
        )

    def _connection_lost(self, session: int, exc: aiomqtt.MqttError) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
            self._log.warning("mqtt_disconnected", session=session, error=str(exc))
        else:
            self.stats.connect_failures += 1
            if self.stats.connect_failures == 1 or self.stats.connect_failures % 100 == 0:
                self._log.warning(
                    "mqtt_connect_failed",
                    session=session,
                    broker=self._config.url,
                    error=str(exc),
                    failures=self.stats.connect_failures,
                )

    def _encode(self, message: wire.Message, channel: str) -> bytes | None:
        payload = wire.encode(message)
        if len(payload) > wire.MAX_PAYLOAD_BYTES:
            self.stats.oversized += 1
            if channel not in self._logged_oversized:
                self._logged_oversized.add(channel)
                self._log.error(
                    "message_oversized", channel=channel, bytes=len(payload), limit=wire.MAX_PAYLOAD_BYTES
                )
            return None
        return payload


def _quiet_logger() -> logging.Logger:
    """paho's own debug chatter stays out of the agent's log; connection changes are logged above."""
    logger = logging.getLogger("fleetops.agent.mqtt")
    logger.setLevel(logging.ERROR)
    return logger


_QUIET_MQTT_LOGGER: Final = _quiet_logger()
