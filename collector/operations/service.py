"""Remote operations on the collector: plans, approvals, the queue, signing, dispatch, results.

Every ``tick_s``, in one store transaction (run in the store's thread, reading a snapshot of the
fleet taken on the event loop, never the live fleet state):

1. disruptions whose task closed (or that never ran) stop counting against the blast radius;
2. the circuit breaker: more than ``breaker_percent`` of the fleet's nodes with a new fault within
   ``breaker_window_s`` trips it: one fleet task opens (it pages, through the notification outbox)
   and nothing is sent until a human re-arms it;
3. every open task whose action a remote operation carries out gets a plan: ``queued`` when policy
   lets that operation run by itself for that action, otherwise a ``dry_run`` record (and a line in
   the task's history) saying what would have been done; an operator can approve it;
4. waiting commands expire, unanswered ones time out;
5. queued commands are signed and published on ``cmd``, oldest first, one per node at a time,
   unless the breaker is tripped, the node is offline, or the blast radius (``max_per_rack``,
   ``max_site_percent``) is reached: then they wait, with the reason shown.

Answers on ``cmd/result`` update the command, write the audit log and the task's history; a
successful operation that carries out the task's action moves the task to verification.

This module owns the loop, the MQTT connection and the reads; the decisions live by job in
``brakes`` (circuit breaker), ``dispatch`` (plans, expiry, dispatch, results), ``requests``
(operator requests and approvals) and ``audit`` (actors, descriptions, task history notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.fleet.snapshot import FleetSnapshot
from collector.fleet.state import FleetState
from collector.ingest.settings import MqttConfig
from collector.operations import brakes, db, dispatch, requests
from collector.operations.audit import ACTOR, OperationsError
from collector.operations.brakes import BREAKER_FINGERPRINT
from collector.operations.settings import OperationsConfig
from collector.operations.signing import CommandSigner
from collector.rules.config import RulesConfig
from collector.store import Store, Transaction
from fleetops import wire

__all__ = ["BREAKER_FINGERPRINT", "OperationsError", "OperationsService"]

log = structlog.get_logger("collector.operations")


class OperationsSettings(Protocol):
    """The sections of the collector's configuration remote operations read (``CollectorConfig`` has them)."""

    @property
    def mqtt(self) -> MqttConfig: ...

    @property
    def operations(self) -> OperationsConfig: ...

    @property
    def rules(self) -> RulesConfig: ...


class OperationsService:
    """Owns the operations loop and its MQTT connection; the API and CLI call its methods."""

    def __init__(
        self,
        config: OperationsSettings,
        store: Store,
        state: FleetState,
        *,
        clock: Callable[[], float] = time.time,
        signer: CommandSigner | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.operations
        self.store = store
        self.state = state
        self.clock = clock
        self.signer = signer
        if signer is None and self.cfg.enabled:
            self.signer = CommandSigner.from_file(Path(self.cfg.signing_key_file), self.cfg.key_id)
        self.stats: Counter[str] = Counter()
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._reader: sqlite3.Connection | None = None
        self._connected = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._reader = sqlite3.connect(self.store.path, check_same_thread=False, isolation_level=None)
        self._reader.execute("PRAGMA busy_timeout = 10000")
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="operations-tick"))
        if self.cfg.enabled:
            self._tasks.append(asyncio.create_task(self._mqtt_loop(), name="operations-mqtt"))
        log.info(
            "operations_started",
            enabled=self.cfg.enabled,
            automatic=self.cfg.automatic,
            key_id=self.signer.key_id if self.signer else "",
        )

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception as exc:  # a bug must not stop operations for good: log, try again
                self.stats["tick_errors"] += 1
                log.exception("operations_tick_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.tick_s):
                    await self._stopping.wait()

    # ---- MQTT ---------------------------------------------------------------------------------

    def _mqtt_client(self) -> aiomqtt.Client:
        """The operations connection: the broker of ``[mqtt]``, its own identity (``[operations]``
        client_id and certificate, see ``OperationsConfig``)."""
        m = self.config.mqtt
        own = bool(self.cfg.tls_cert_file)
        cert = self.cfg.tls_cert_file if own else m.tls_cert_file
        key = self.cfg.tls_key_file if own else m.tls_key_file
        tls: ssl.SSLContext | None = None
        if m.tls:
            tls = ssl.create_default_context(cafile=m.tls_ca_file or None)
            if cert:
                tls.load_cert_chain(cert, key or None)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        return aiomqtt.Client(
            m.host,
            m.port,
            identifier=self.cfg.client_id or f"{m.client_id}-ops"[:128],
            username=m.username or None,
            password=m.password or None,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=m.keepalive_s,
            tls_context=tls,
            timeout=10.0,
        )

    async def _mqtt_loop(self) -> None:
        delay = float(self.config.mqtt.reconnect_min_s)
        while not self._stopping.is_set():
            try:
                async with self._mqtt_client() as client:
                    await client.subscribe(f"{wire.TOPIC_ROOT}/+/+/cmd/result", qos=1)
                    self._client = client
                    self._connected.set()
                    delay = float(self.config.mqtt.reconnect_min_s)
                    log.info("operations_broker_connected", broker=self.config.mqtt.url)
                    async for message in client.messages:
                        if isinstance(message.payload, bytes | bytearray):
                            await self.handle_result(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                if self._connected.is_set():
                    log.warning("operations_broker_lost", error=str(exc))
            finally:
                self._client = None
                self._connected.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, float(self.config.mqtt.reconnect_max_s))

    # ---- the loop -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One round: release, breaker, plans, timeouts, dispatch."""
        now = self.clock()
        can_send = self.signer is not None and self._client is not None
        fleet = self.state.snapshot()  # here, on the event loop: the round runs in the store's thread
        outgoing = await self.store.awrite(lambda tx: self._round(tx, now, can_send, fleet))
        for record, command in outgoing:
            await self._publish(record, command)

    def _round(
        self, tx: Transaction, now: float, can_send: bool, fleet: FleetSnapshot
    ) -> list[tuple[db.CommandRecord, wire.Command]]:
        """One round in the store's thread: reads ``fleet`` (a snapshot), never the live fleet state."""
        conn = db.conn_of(tx)
        db.release_closed(conn, now)
        breaker, tripped = brakes.check_breaker(tx, now, self.cfg, fleet)
        if tripped:
            self.stats["breaker_trips"] += 1
        dispatch.plan(tx, now, self.cfg, fleet)
        dispatch.expire(conn, now, self.cfg)
        return dispatch.dispatch(
            conn,
            now,
            cfg=self.cfg,
            state=fleet,
            signer=self.signer,
            tripped=breaker.state == "tripped",
            can_send=can_send,
        )

    async def _publish(self, rec: db.CommandRecord, command: wire.Command) -> None:
        client = self._client
        topic = wire.topic_for(rec.site, rec.node, "cmd")
        try:
            if client is None:
                raise aiomqtt.MqttError("not connected")
            await client.publish(topic, wire.encode(command), qos=1, retain=False)
            self.stats["commands_sent"] += 1
        except aiomqtt.MqttError as exc:
            why = f"publish failed: {exc}"
            now = self.clock()

            def back(tx: Transaction) -> None:
                conn = db.conn_of(tx)
                db.update_command(conn, rec.cmd_id, state="queued", hold_reason=why[:200])
                db.audit(
                    conn,
                    now,
                    ACTOR,
                    "held",
                    cmd_id=rec.cmd_id,
                    node=rec.node,
                    site=rec.site,
                    op=rec.op,
                    detail=why,
                )

            await self.store.awrite(back)

    # ---- results ------------------------------------------------------------------------------

    async def handle_result(self, topic_text: str, payload: bytes) -> None:
        try:
            topic = wire.parse_topic(topic_text)
            result = wire.decode_command(topic, payload)
        except (wire.TopicError, wire.DecodeError) as exc:
            self.stats["results_invalid"] += 1
            log.warning("operations_result_invalid", topic=topic_text[:200], error=str(exc)[:200])
            return
        if not isinstance(result, wire.CommandResult):
            return
        now = self.clock()
        matched = await self.store.awrite(
            lambda tx: dispatch.apply_result(tx, topic, result, now, self.config.rules)
        )
        self.stats["results_matched" if matched else "results_unmatched"] += 1

    # ---- operator requests (API, CLI) ---------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self.cfg.enabled:
            raise OperationsError(
                409, "remote operations are disabled: set [operations] enabled and signing_key_file"
            )

    async def request(
        self,
        task_id: int,
        op: str,
        actor: str,
        *,
        args: dict[str, str] | None = None,
        approve: bool = False,
        note: str = "",
    ) -> db.CommandRecord:
        """An operator asks for ``op`` on a task's node (``approve``: and approves it at once). An empty
        ``op`` means the operation that carries out the task's action (the board's "Approve and run")."""
        self._require_enabled()
        if op and op not in wire.OPERATIONS:
            raise OperationsError(400, f"unknown operation {op[:64]!r}; known: {', '.join(wire.OPERATIONS)}")
        now = self.clock()
        fleet = self.state.snapshot()

        def work(tx: Transaction) -> str:
            return requests.request(
                tx,
                task_id,
                op,
                actor,
                args=args,
                approve=approve,
                note_text=note,
                now=now,
                cfg=self.cfg,
                state=fleet,
            )

        cmd_id = await self.store.awrite(work)
        return await self.get(cmd_id)

    async def approve(self, cmd_id: str, actor: str, note: str = "") -> db.CommandRecord:
        """Approve a command waiting for approval, or a dry-run proposal: it is queued to run."""
        self._require_enabled()
        now = self.clock()
        await self.store.awrite(lambda tx: requests.approve_id(tx, cmd_id, actor, now, note))
        return await self.get(cmd_id)

    async def deny(self, cmd_id: str, actor: str, note: str = "") -> db.CommandRecord:
        now = self.clock()
        await self.store.awrite(lambda tx: requests.deny(tx, cmd_id, actor, now, note))
        return await self.get(cmd_id)

    async def rearm(self, actor: str, note: str = "") -> db.BreakerRecord:
        """A human re-arms the circuit breaker; its task resolves (its page too)."""
        now = self.clock()
        await self.store.awrite(lambda tx: brakes.rearm(tx, actor, note, now))
        log.warning("operations_circuit_breaker_rearmed", actor=actor)
        return await self.breaker()

    # ---- reads --------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        reader = self._reader
        if reader is None:
            raise OperationsError(503, "operations are not running")
        return await asyncio.to_thread(fn, reader)

    async def get(self, cmd_id: str) -> db.CommandRecord:
        rec: db.CommandRecord | None = await self._read(lambda c: db.get_command(c, cmd_id))
        if rec is None:
            raise OperationsError(404, f"unknown operation {cmd_id[:64]!r}")
        return rec

    async def commands(
        self,
        *,
        states: tuple[str, ...] = (),
        task_id: int | None = None,
        node: str = "",
        site: str = "",
        limit: int = 100,
    ) -> list[db.CommandRecord]:
        result: list[db.CommandRecord] = await self._read(
            lambda c: db.commands(c, states=states, task_id=task_id, node=node, site=site, limit=limit)
        )
        return result

    async def audit_log(
        self, *, cmd_id: str = "", task_id: int | None = None, limit: int = 200
    ) -> list[db.AuditRecord]:
        result: list[db.AuditRecord] = await self._read(
            lambda c: db.audit_entries(c, cmd_id=cmd_id, task_id=task_id, limit=limit)
        )
        return result

    async def breaker(self) -> db.BreakerRecord:
        result: db.BreakerRecord = await self._read(db.breaker)
        return result
