"""Remote operations on the collector: plans, approvals, the queue, signing, dispatch, results.

Every ``tick_s``, in one store transaction:

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
from typing import Any, Final

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import CollectorConfig
from collector.fleet.state import FleetState
from collector.operations import db
from collector.operations.policy import (
    Disruption,
    admission,
    blast_radius_hold,
    breaker_verdict,
    default_args,
    plan_for,
    verifies_task,
)
from collector.operations.signing import CommandSigner
from collector.rules.actions import Action
from collector.rules.base import TaskLocation
from collector.store import Store, TaskRecord, Transaction
from collector.store.operations_schema import LIVE_STATES
from collector.tasks.lifecycle import TaskError, request_resolve
from collector.tasks.transition import create, transition
from fleetops import wire

__all__ = ["BREAKER_FINGERPRINT", "OperationsError", "OperationsService"]

log = structlog.get_logger("collector.operations")

ACTOR: Final = "collector (operations)"
POLICY: Final = "policy"
BREAKER_FINGERPRINT: Final = "fleet|automation|circuit_breaker"
_ANSWER_GRACE_S: Final = 30.0
_FINAL: Final = frozenset(("succeeded", "failed", "timed_out", "rejected", "denied", "expired"))


class OperationsError(ValueError):
    """A request that cannot be applied; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _describe(op: str, args: dict[str, str]) -> str:
    return op + "".join(f" {k}={v}" for k, v in sorted(args.items()))


def _history(tx: Transaction, task: TaskRecord, at: float, actor: str, reason: str) -> None:
    transition(tx, task, actor=actor, change="operation", reason=reason[:2000], at=at)


class OperationsService:
    """Owns the operations loop and its MQTT connection; the API and CLI call its methods."""

    def __init__(
        self,
        config: CollectorConfig,
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
                await asyncio.wait_for(self._stopping.wait(), timeout=self.cfg.tick_s)

    # ---- MQTT ---------------------------------------------------------------------------------

    def _mqtt_client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        tls: ssl.SSLContext | None = None
        if m.tls:
            tls = ssl.create_default_context(cafile=m.tls_ca_file or None)
            if m.tls_cert_file:
                tls.load_cert_chain(m.tls_cert_file, m.tls_key_file or None)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        return aiomqtt.Client(
            m.host,
            m.port,
            identifier=f"{m.client_id}-ops"[:128],
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
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, float(self.config.mqtt.reconnect_max_s))

    # ---- the loop -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One round: release, breaker, plans, timeouts, dispatch."""
        now = self.clock()
        can_send = self.signer is not None and self._client is not None
        outgoing = await self.store.awrite(lambda tx: self._round(tx, now, can_send))
        for record, command in outgoing:
            await self._publish(record, command)

    def _round(
        self, tx: Transaction, now: float, can_send: bool
    ) -> list[tuple[db.CommandRecord, wire.Command]]:
        conn = db.conn_of(tx)
        db.release_closed(conn, now)
        breaker = self._check_breaker(tx, now)
        self._plan(tx, now)
        self._expire(conn, now)
        return self._dispatch(conn, now, tripped=breaker.state == "tripped", can_send=can_send)

    def _check_breaker(self, tx: Transaction, now: float) -> db.BreakerRecord:
        conn = db.conn_of(tx)
        current = db.breaker(conn)
        if current.state == "tripped":
            return current
        since = max(now - self.cfg.breaker_window_s, current.changed_at)
        unhealthy = db.unhealthy_nodes(conn, since, exclude_prefix="fleet|")
        fleet = [n for n in self.state.nodes.values()]
        reason = breaker_verdict(unhealthy, len(fleet), self.cfg)
        if reason is None:
            return current
        sites = Counter(n.site for n in fleet if n.node in unhealthy)
        site = sites.most_common(1)[0][0] if sites else (fleet[0].site if fleet else "fleet")
        faults = [fp.split("|")[-1] for fp in self._recent_faults(conn, since)]
        action = _breaker_action(faults)
        task_id = create(
            tx,
            actor=ACTOR,
            reason=reason,
            at=now,
            fingerprint=BREAKER_FINGERPRINT,
            node="fleet",
            component="automation",
            fault="circuit_breaker",
            rule="operations.circuit_breaker",
            action=action.value,
            severity="critical",
            summary=f"Automation stopped: {reason}"[:500],
            runbook=(
                "Too many nodes turned unhealthy at once for a per-node fault (a cooling or power failure, "
                "a bad driver or firmware rollout?). fleetops stopped every remote operation: nothing is "
                "drained, reset or rebooted until a human re-arms it. Find the common cause first, then "
                "re-arm: `fleetops-collector ops rearm` or POST /api/v1/operations/breaker/rearm."
            ),
            location=TaskLocation(site=site),
            evidence=[{"at": now, "unhealthy_nodes": sorted(unhealthy)[:200], "fleet_size": len(fleet)}],
            action_source="rule",
            auto_resolve=False,
            scope="fleet",
        ).id
        db.set_breaker(conn, "tripped", now, ACTOR, reason, task_id)
        db.audit(conn, now, ACTOR, "breaker_tripped", task_id=task_id, detail=reason)
        log.error("operations_circuit_breaker_tripped", reason=reason, task_id=task_id)
        self.stats["breaker_trips"] += 1
        return db.breaker(conn)

    @staticmethod
    def _recent_faults(conn: sqlite3.Connection, since: float) -> list[str]:
        rows = conn.execute(
            "SELECT fingerprint FROM task_faults WHERE first_at >= ? AND fingerprint NOT LIKE 'fleet|%'",
            (since,),
        )
        return [r[0] for r in rows]

    def _plan(self, tx: Transaction, now: float) -> None:
        conn = db.conn_of(tx)
        for task in tx.open_tasks():
            if task.fingerprint == BREAKER_FINGERPRINT:
                continue
            plan = plan_for(task.id, task.action, task.location.accelerator_index, self.cfg)
            if plan is None or db.has_command(conn, task.id, plan.op):
                continue
            cmd_id = _new_id()
            what = _describe(plan.op, plan.args)
            node = self.state.nodes.get(task.node)
            rack = (
                node.location.rack if node is not None and node.location is not None else task.location.rack
            )
            site = node.site if node is not None else task.location.site
            state = "queued" if plan.automatic else "dry_run"
            db.insert_command(
                conn,
                cmd_id=cmd_id,
                task_id=task.id,
                node=task.node,
                site=site,
                rack=rack,
                op=plan.op,
                args=plan.args,
                state=state,
                requested_by=POLICY,
                at=now,
                approved_by=POLICY if plan.automatic else "",
                reason=plan.why,
            )
            db.audit(
                conn,
                now,
                POLICY,
                "queued" if plan.automatic else "dry_run",
                cmd_id=cmd_id,
                task_id=task.id,
                node=task.node,
                op=plan.op,
                detail=plan.why,
            )
            if plan.automatic:
                _history(tx, task, now, ACTOR, f"operation {what} queued by policy ({plan.why})")
            else:
                _history(
                    tx,
                    task,
                    now,
                    ACTOR,
                    f"dry run: would run {what} on {task.node} ({plan.why}); approve operation {cmd_id} "
                    "to run it",
                )

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        for rec in db.commands(conn, states=("pending_approval", "queued"), oldest_first=True):
            since = rec.approved_at if rec.approved_at is not None else rec.requested_at
            if now - since > self.cfg.queue_max_age_s:
                db.update_command(conn, rec.cmd_id, state="expired", finished_at=now)
                db.audit(
                    conn,
                    now,
                    ACTOR,
                    "expired",
                    cmd_id=rec.cmd_id,
                    task_id=rec.task_id,
                    node=rec.node,
                    op=rec.op,
                    detail=f"waited more than {self.cfg.queue_max_age_s:g} s ({rec.hold_reason})",
                )
        for rec in db.commands(conn, states=("sent", "accepted"), oldest_first=True):
            if rec.state == "sent" and rec.expires_at is not None and now > rec.expires_at + _ANSWER_GRACE_S:
                why = "no answer from the agent before the command expired"
            elif (
                rec.state == "accepted"
                and rec.sent_at is not None
                and now > rec.sent_at + self.cfg.result_timeout_s
            ):
                why = f"no result within {self.cfg.result_timeout_s:g} s of acceptance"
            else:
                continue
            db.update_command(conn, rec.cmd_id, state="timed_out", finished_at=now, reason=why)
            db.audit(
                conn,
                now,
                ACTOR,
                "timed_out",
                cmd_id=rec.cmd_id,
                task_id=rec.task_id,
                node=rec.node,
                op=rec.op,
                detail=why,
            )

    def _dispatch(
        self, conn: sqlite3.Connection, now: float, *, tripped: bool, can_send: bool
    ) -> list[tuple[db.CommandRecord, wire.Command]]:
        queued = db.commands(conn, states=("queued",), oldest_first=True)
        if not queued:
            return []
        busy = {r.node for r in db.commands(conn, states=("sent", "accepted"))}
        disrupted = db.disrupted(conn, self.cfg.disruptive)
        site_sizes = Counter(n.site for n in self.state.nodes.values())
        out: list[tuple[db.CommandRecord, wire.Command]] = []
        for rec in queued:
            node = self.state.nodes.get(rec.node)
            hold: str | None = None
            if tripped:
                hold = "circuit breaker tripped: operations stopped until re-armed"
            elif not can_send:
                hold = (
                    "not connected to the broker" if self.signer is not None else "remote operations disabled"
                )
            elif node is None or node.status != "online":
                hold = f"node {rec.node} is not online"
            elif rec.node in busy:
                hold = f"another operation is running on {rec.node}"
            elif rec.op in self.cfg.disruptive:
                candidate = Disruption(node=rec.node, site=rec.site, rack=rec.rack)
                hold = blast_radius_hold(candidate, disrupted, site_sizes, self.cfg)
            if hold is not None:
                if hold != rec.hold_reason:
                    db.update_command(conn, rec.cmd_id, hold_reason=hold)
                    db.audit(
                        conn,
                        now,
                        ACTOR,
                        "held",
                        cmd_id=rec.cmd_id,
                        task_id=rec.task_id,
                        node=rec.node,
                        op=rec.op,
                        detail=hold,
                    )
                continue
            assert self.signer is not None
            command = self.signer.sign(
                node=rec.node, op=rec.op, args=rec.args, now=now, ttl_s=self.cfg.ttl_s, cmd_id=rec.cmd_id
            )
            db.update_command(
                conn, rec.cmd_id, state="sent", sent_at=now, expires_at=float(command.exp), hold_reason=""
            )
            db.audit(
                conn,
                now,
                ACTOR,
                "sent",
                cmd_id=rec.cmd_id,
                task_id=rec.task_id,
                node=rec.node,
                op=rec.op,
                detail=f"{_describe(rec.op, rec.args)} signed with {command.key_id}, expires {command.exp}",
            )
            busy.add(rec.node)
            if rec.op in self.cfg.disruptive:
                disrupted.append(Disruption(node=rec.node, site=rec.site, rack=rec.rack))
            out.append((rec, command))
        return out

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
                db.audit(conn, now, ACTOR, "held", cmd_id=rec.cmd_id, node=rec.node, op=rec.op, detail=why)

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
        matched = await self.store.awrite(lambda tx: self._apply_result(tx, topic, result, now))
        self.stats["results_matched" if matched else "results_unmatched"] += 1

    def _apply_result(
        self, tx: Transaction, topic: wire.Topic, result: wire.CommandResult, now: float
    ) -> bool:
        conn = db.conn_of(tx)
        rec = db.get_command(conn, result.cmd_id) if result.cmd_id else None
        if rec is None or rec.node != topic.node or rec.site != topic.site:
            return False
        if result.outcome == "accepted":
            if rec.state == "sent":
                db.update_command(conn, rec.cmd_id, state="accepted")
                db.audit(
                    conn,
                    now,
                    f"agent {rec.node}",
                    "accepted",
                    cmd_id=rec.cmd_id,
                    task_id=rec.task_id,
                    node=rec.node,
                    op=rec.op,
                )
            return True
        if rec.state in _FINAL and rec.state != "timed_out":
            return True  # a duplicate answer
        db.update_command(
            conn,
            rec.cmd_id,
            state=result.outcome,
            finished_at=now,
            exit_code=result.exit_code,
            duration_s=result.duration_s,
            output=result.output,
            output_truncated=result.output_truncated,
            reason=result.reason,
        )
        summary = f"{_describe(rec.op, rec.args)} {result.outcome} on {rec.node}"
        if result.outcome == "rejected":
            summary += f": the agent refused it ({result.reason})"
        else:
            summary += f" (exit {result.exit_code}, {result.duration_s or 0:.1f} s)"
            last = result.output.strip().splitlines()[-1:] if result.output.strip() else []
            if last:
                summary += f": {last[0][:300]}"
        db.audit(
            conn,
            now,
            f"agent {rec.node}",
            result.outcome,
            cmd_id=rec.cmd_id,
            task_id=rec.task_id,
            node=rec.node,
            op=rec.op,
            detail=summary,
        )
        task = tx.get_task(rec.task_id) if rec.task_id is not None else None
        if task is not None:
            _history(tx, task, now, ACTOR, f"operation {rec.cmd_id}: {summary}")
            if result.outcome == "succeeded" and task.is_open and verifies_task(rec.op, task.action):
                with contextlib.suppress(TaskError):
                    request_resolve(
                        tx,
                        task.id,
                        ACTOR,
                        now,
                        f"{rec.op} succeeded (operation {rec.cmd_id})",
                        self.config.rules,
                    )
        log.info("operation_finished", cmd_id=rec.cmd_id, node=rec.node, op=rec.op, outcome=result.outcome)
        return True

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

        def work(tx: Transaction) -> str:
            conn = db.conn_of(tx)
            task = tx.get_task(task_id)
            if task is None:
                raise OperationsError(404, f"unknown task {task_id}")
            if not task.is_open:
                raise OperationsError(409, f"task {task_id} is {task.state}")
            nonlocal op
            if not op:
                plan = plan_for(task.id, task.action, task.location.accelerator_index, self.cfg)
                if plan is None:
                    raise OperationsError(
                        409, f"no remote operation carries out {task.action} for task {task_id}"
                    )
                op = plan.op
            given = {**default_args(op, task.id, task.location.accelerator_index), **(args or {})}
            problem = wire.check_arguments(op, given)
            if problem is not None:
                raise OperationsError(400, problem)
            live = [r for r in db.commands(conn, states=LIVE_STATES, task_id=task_id) if r.op == op]
            if live:
                if approve and live[0].state == "pending_approval":
                    self._approve(tx, live[0], actor, now, note)
                    return live[0].cmd_id
                raise OperationsError(409, f"operation {live[0].cmd_id} ({op}) is already {live[0].state}")
            proposed = [r for r in db.commands(conn, states=("dry_run",), task_id=task_id) if r.op == op]
            if approve and proposed and proposed[0].args == given:
                self._approve(tx, proposed[0], actor, now, note)  # the dry run becomes the real thing
                return proposed[0].cmd_id
            decision = admission(op, approve, self.cfg)
            node = self.state.nodes.get(task.node)
            cmd_id = _new_id()
            db.insert_command(
                conn,
                cmd_id=cmd_id,
                task_id=task.id,
                node=task.node,
                site=node.site if node is not None else task.location.site,
                rack=node.location.rack
                if node is not None and node.location is not None
                else task.location.rack,
                op=op,
                args=given,
                state=decision.state,
                requested_by=actor,
                at=now,
                approved_by=actor if decision.state == "queued" else "",
                reason=decision.why,
            )
            what = _describe(op, given)
            db.audit(
                conn,
                now,
                actor,
                "requested",
                cmd_id=cmd_id,
                task_id=task.id,
                node=task.node,
                op=op,
                detail=f"{what}: {decision.why}" + (f"; {note}" if note else ""),
            )
            _history(
                tx,
                task,
                now,
                actor,
                f"asked for operation {cmd_id}: {what} ({decision.why})" + (f"; {note}" if note else ""),
            )
            return cmd_id

        cmd_id = await self.store.awrite(work)
        return await self.get(cmd_id)

    def _approve(self, tx: Transaction, rec: db.CommandRecord, actor: str, now: float, note: str) -> None:
        conn = db.conn_of(tx)
        if rec.state not in ("pending_approval", "dry_run"):
            raise OperationsError(409, f"operation {rec.cmd_id} is {rec.state}")
        if rec.task_id is not None:
            task = tx.get_task(rec.task_id)
            if task is None or not task.is_open:
                raise OperationsError(409, f"the task of operation {rec.cmd_id} is closed")
            live = [r for r in db.commands(conn, states=LIVE_STATES, task_id=rec.task_id) if r.op == rec.op]
            if any(r.cmd_id != rec.cmd_id for r in live):
                raise OperationsError(409, f"another {rec.op} operation is already on its way for this task")
        try:
            db.update_command(conn, rec.cmd_id, state="queued", approved_by=actor, approved_at=now)
        except sqlite3.IntegrityError:
            raise OperationsError(409, f"another {rec.op} operation is already on its way") from None
        db.audit(
            conn,
            now,
            actor,
            "approved",
            cmd_id=rec.cmd_id,
            task_id=rec.task_id,
            node=rec.node,
            op=rec.op,
            detail=note,
        )
        if rec.task_id is not None:
            task = tx.get_task(rec.task_id)
            assert task is not None
            _history(
                tx,
                task,
                now,
                actor,
                f"approved operation {rec.cmd_id}: {_describe(rec.op, rec.args)}"
                + (f"; {note}" if note else ""),
            )

    async def approve(self, cmd_id: str, actor: str, note: str = "") -> db.CommandRecord:
        """Approve a command waiting for approval, or a dry-run proposal: it is queued to run."""
        self._require_enabled()
        now = self.clock()

        def work(tx: Transaction) -> None:
            rec = db.get_command(db.conn_of(tx), cmd_id)
            if rec is None:
                raise OperationsError(404, f"unknown operation {cmd_id[:64]!r}")
            self._approve(tx, rec, actor, now, note)

        await self.store.awrite(work)
        return await self.get(cmd_id)

    async def deny(self, cmd_id: str, actor: str, note: str = "") -> db.CommandRecord:
        now = self.clock()

        def work(tx: Transaction) -> None:
            conn = db.conn_of(tx)
            rec = db.get_command(conn, cmd_id)
            if rec is None:
                raise OperationsError(404, f"unknown operation {cmd_id[:64]!r}")
            if rec.state not in ("pending_approval", "dry_run", "queued"):
                raise OperationsError(409, f"operation {cmd_id} is {rec.state}")
            db.update_command(conn, cmd_id, state="denied", finished_at=now, reason=note or "denied")
            db.audit(
                conn,
                now,
                actor,
                "denied",
                cmd_id=cmd_id,
                task_id=rec.task_id,
                node=rec.node,
                op=rec.op,
                detail=note,
            )

        await self.store.awrite(work)
        return await self.get(cmd_id)

    async def rearm(self, actor: str, note: str = "") -> db.BreakerRecord:
        """A human re-arms the circuit breaker; its task resolves (its page too)."""
        now = self.clock()

        def work(tx: Transaction) -> None:
            conn = db.conn_of(tx)
            current = db.breaker(conn)
            if current.state != "tripped":
                raise OperationsError(409, "the circuit breaker is not tripped")
            reason = f"re-armed by {actor}" + (f": {note}" if note else "")
            task = tx.get_task(current.task_id) if current.task_id is not None else None
            if task is not None and task.is_open:
                transition(
                    tx,
                    task,
                    to_state="resolved",
                    actor=actor,
                    change="resolved",
                    reason=reason,
                    at=now,
                    resolution="rearmed",
                    resolved_at=now,
                    updated_at=now,
                )
            db.set_breaker(conn, "armed", now, actor, note, current.task_id)
            db.audit(conn, now, actor, "breaker_rearmed", task_id=current.task_id, detail=note)

        await self.store.awrite(work)
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
        self, *, states: tuple[str, ...] = (), task_id: int | None = None, node: str = "", limit: int = 100
    ) -> list[db.CommandRecord]:
        result: list[db.CommandRecord] = await self._read(
            lambda c: db.commands(c, states=states, task_id=task_id, node=node, limit=limit)
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


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _breaker_action(faults: list[str]) -> Action:
    """The check a fleet-wide incident most likely calls for, from the faults that tripped it."""
    counts = Counter(
        "cooling"
        if any(w in f for w in ("thermal", "temperature", "slowdown", "hot"))
        else "power"
        if "power" in f
        else "other"
        for f in faults
    )
    top = counts.most_common(1)[0][0] if counts else "other"
    return {"cooling": Action.CHECK_COOLING, "power": Action.CHECK_POWER}.get(top, Action.INSPECT_HARDWARE)
