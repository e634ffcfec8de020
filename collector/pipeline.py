"""The collector's pipeline: ingest batch → decode → fleet state → rules → store (one transaction)
→ acknowledge. A periodic tick marks silent nodes offline and raises tasks for nodes offline
beyond the grace period — not for silence the collector caused (its own broker connection down)
nor for nodes of a site that went offline together: that is one site task (``collector.liveness``).

Acknowledging a batch, in this order, once its transaction committed: one ``Ack`` per node on
``.../ack`` with the ids of its events in the batch (new and duplicate), so the agents can drop them
from their spools; then the broker's PUBACK for every QoS 1 message. Rebirth requests decided by the
``LinkTracker`` (unknown session, inconsistent inventory) are published after the commit too.

A message of a node name not known yet is taken only if ``collector.fleet.admission`` admits the
new node (``[fleet] max_nodes``, ``new_nodes_per_minute``); otherwise it is rejected, counted as
``node_limit`` or ``node_rate``, before anything about the node is kept."""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar

import structlog

from collector.fleet.admission import Admission
from collector.fleet.settings import FleetConfig, LivenessConfig
from collector.fleet.state import FleetState, NodeChange, NodeState, is_reinstall
from collector.ingest.acks import LinkTracker, ack_messages, rebirth_message
from collector.ingest.budget import frame_series
from collector.ingest.client import InboundMessage, MqttIngest, Rejections, decode_inbound
from collector.ingest.settings import IngestConfig
from collector.liveness import Liveness, write_site_outages
from collector.node_records import node_record, node_state, record_key
from collector.rules import Finding, RuleContext, RuleErrors, evaluate_event, evaluate_node, evaluate_readings
from collector.rules.config import RulesConfig
from collector.store import NodeRecord
from collector.store import StoreInterface as Store
from collector.store import TransactionInterface as Transaction
from collector.store.retry import StoreUnavailable, commit
from collector.tasks.lifecycle import (
    BirthSeen,
    TaskChange,
    apply_work,
    birth_before,
    offline_fingerprint,
    resolve,
)
from fleetops.identity import NodeKey
from fleetops.wire import (
    Birth,
    DecodeError,
    Event,
    Message,
    Telemetry,
    encode,
    topic_for,
)
from fleetops.xid_catalog import XidCatalog

__all__ = ["Pipeline", "StoreUnavailable", "node_record", "node_state"]  # the last three: re-exported

log = structlog.get_logger("collector.pipeline")
T = TypeVar("T")

POLL_S: Final = 0.25  # how long one wait for messages lasts (bounds shutdown latency)


class PipelineSettings(Protocol):
    """The sections of the collector's configuration the pipeline reads (``CollectorConfig`` has them)."""

    @property
    def ingest(self) -> IngestConfig: ...

    @property
    def liveness(self) -> LivenessConfig: ...

    @property
    def fleet(self) -> FleetConfig: ...

    @property
    def rules(self) -> RulesConfig: ...


class Pipeline:
    """Consumes the ingest queue until ``stop()``; one store transaction per batch, then acks."""

    def __init__(
        self,
        *,
        config: PipelineSettings,
        ingest: MqttIngest,
        store: Store,
        state: FleetState,
        catalog: XidCatalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.store = store
        self.state = state
        self.catalog = catalog
        self.clock = clock
        self.rejections = Rejections()
        #: takes on new node names within ``[fleet]``'s caps
        self.admission = Admission(config.fleet)
        #: the collector's own view: its broker connection, the sites' outages
        self.liveness = Liveness(config.liveness)
        #: rule exceptions per rule (a rule that raises is skipped; its subject is still stored)
        self.rule_errors = RuleErrors()
        #: per-node link facts: clock skew, event sequence gaps, rebirth requests
        self.links = LinkTracker()
        #: counters: messages_<channel>, batches, events_new, events_duplicate, tasks_<change>, acks,
        #: event_acks_published, rebirths_requested
        self.stats: Counter[str] = Counter()
        #: called with the task changes of every committed batch or tick (the pager is woken this way)
        self.task_listeners: list[Callable[[list[TaskChange]], None]] = []
        #: called with (site, message, now) for every accepted message, after fleet state applied it
        self.message_observers: list[Callable[[str, Message, float], None]] = []
        #: called with the seconds from taking a batch to acknowledging it after its commit
        self.ack_observers: list[Callable[[float], None]] = []
        self._stopping = False
        self._next_tick = time.monotonic()
        self._next_review = 0.0  # collector clock: when the open tasks are next reviewed
        #: node -> the key of its record as last written (see ``collector.node_records.record_key``)
        self._written: dict[NodeKey, tuple[object, ...]] = {}

    # ---- loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Batches until ``stop()``. A batch is prepared (decoded, applied to fleet state, run
        through the rules) while the previous one is being committed; batches still commit and are
        acknowledged one after the other, in order."""
        batch_max = self.config.ingest.batch_max
        inflight: asyncio.Task[list[TaskChange]] | None = None
        try:
            while not self._stopping:
                if inflight is None:
                    batch = await self.ingest.batch(batch_max, POLL_S)
                else:
                    batch = self.ingest.take(batch_max)
                if batch:
                    commit = self._prepare(batch)
                    if inflight is not None:
                        await inflight
                    inflight = asyncio.create_task(commit(), name="collector-commit")
                elif inflight is not None:
                    await inflight
                    inflight = None
                if time.monotonic() >= self._next_tick:
                    if inflight is not None:
                        await inflight
                        inflight = None
                    self._next_tick = time.monotonic() + self.config.liveness.tick_s
                    await self.tick()
        finally:
            if inflight is not None:
                await inflight

    def stop(self) -> None:
        """Finish the batch in flight and return from ``run()``."""
        self._stopping = True

    # ---- one batch ----------------------------------------------------------------------------

    def _context(self, node: NodeState | None, now: float) -> RuleContext:
        liveness = self.liveness
        return RuleContext(
            now=now,
            catalog=self.catalog,
            node=node,
            offline_grace_s=self.config.liveness.offline_grace_s,
            config=self.config.rules,
            fleet=self.state.nodes,
            errors=self.rule_errors,
            judging_offline=node is not None and liveness.judging(node.key, now),
            offline_counts_from=liveness.counts_from(node.site) if node is not None else now,
        )

    async def process(self, batch: list[InboundMessage]) -> list[TaskChange]:
        """One batch: prepare it, commit it, acknowledge it."""
        return await self._prepare(batch)()

    def _prepare(self, batch: list[InboundMessage]) -> Callable[[], Coroutine[Any, Any, list[TaskChange]]]:
        """Decode, apply to fleet state and run the rules (here, on the event loop); returns the
        commit: one store transaction, then the acknowledgements. The transaction runs in the
        store's thread and reads only what is prepared here (never the live fleet state)."""
        taken = time.monotonic()
        now = self.clock()
        max_bytes = self.config.ingest.max_payload_bytes
        max_series = self.config.ingest.max_series_per_node
        touched: set[NodeKey] = set()
        events: list[tuple[Event, str, list[Finding]]] = []
        changes: list[NodeChange] = []
        rebirths: list[tuple[str, str, str]] = []
        births: list[BirthSeen] = []
        framed: set[NodeKey] = set()
        for msg in batch:
            decoded = decode_inbound(msg, max_bytes)
            if isinstance(decoded, DecodeError):
                if decoded.reason == "elsewhere":
                    self.stats[f"messages_{decoded.detail}"] += 1
                else:
                    self.rejections.note(decoded.reason, decoded.detail, msg.topic)
                continue
            topic, message = decoded
            if isinstance(message, Telemetry) and (series := frame_series(message)) > max_series:
                self.rejections.note("series_budget", f"{series} series > {max_series}", msg.topic)
                continue
            if not self._admitted(NodeKey(topic.site, message.node), msg.topic, now):
                continue
            try:
                reason = self.links.observe(topic.site, message, now, retained=msg.retained)
                if reason is not None:
                    rebirths.append((topic.site, message.node, reason))
                if isinstance(message, Birth):
                    before = self.state.get(topic.site, message.node)
                    births.append(birth_before(before, message.node, topic.site))
                    if before is not None and is_reinstall(before, message):
                        log.warning(
                            "node_reinstalled",
                            node=message.node,
                            site=topic.site,
                            previous_session=before.session,
                            session=message.session,
                            previous_boot_id=before.boot_id,
                            boot_id=message.boot_id,
                        )
                redelivered = isinstance(message, Event) and self._redelivered(topic.site, message)
                changes.extend(self.state.apply(topic.site, message, now, retained=msg.retained))
                for observe in self.message_observers:
                    observe(topic.site, message, now)
                if isinstance(message, Event) and redelivered:
                    # seen already: stored (the store counts it a duplicate) and acknowledged again,
                    # never evaluated again
                    events.append((message, topic.site, []))
                elif isinstance(message, Event):
                    # the evaluator guards each rule: whatever the rules do, the event is stored
                    # and acknowledged
                    context = self._context(self.state.get(topic.site, message.node), now)
                    events.append((message, topic.site, evaluate_event(message, context)))
                elif isinstance(message, Telemetry):
                    framed.add(NodeKey(topic.site, message.node))
            except Exception as exc:  # a bug must not stop ingest: count it, log it (rate-limited)
                self.rejections.note("internal_error", repr(exc), msg.topic)
                continue
            self.stats[f"messages_{topic.channel}"] += 1
            touched.add(NodeKey(topic.site, message.node))
        for change in changes:
            log.info("node_" + change.kind, node=change.node, site=change.site, reason=change.reason)
        records, seen = self._node_writes(touched, now)
        back_online = [c for c in changes if c.kind == "online"]
        readings_findings: list[Finding] = []
        for key in sorted(framed):
            node = self.state.nodes[key]
            try:
                readings_findings.extend(evaluate_readings(node, self._context(node, now)))
            except Exception as exc:  # a rule bug must not stop ingest
                self.rejections.note("internal_error", repr(exc), str(key))
        # births read the node as this batch left it, whatever later batches do meanwhile
        born = {
            seen.key: copy.copy(self.state.nodes[seen.key]) for seen in births if seen.key in self.state.nodes
        }

        def write(tx: Transaction) -> tuple[list[TaskChange], int, int]:
            out: list[TaskChange] = []
            new = duplicate = 0
            for record in records:
                tx.upsert_node(record)
            if seen:
                tx.touch_nodes(seen)
            fresh: list[Finding] = []
            for event, site, findings in events:
                if not tx.insert_event(event, site, now):
                    duplicate += 1
                    continue
                new += 1
                fresh.extend(findings)
            out.extend(
                apply_work(
                    tx,
                    nodes=born,
                    at=now,
                    cfg=self.config.rules,
                    births=births,
                    findings=[*fresh, *readings_findings],
                )
            )
            for change in back_online:
                resolved = resolve(
                    tx,
                    offline_fingerprint(change.site, change.node),
                    now,
                    f"node back online ({change.reason} received)",
                )
                if resolved is not None:
                    out.append(resolved)
            return out, new, duplicate

        async def commit() -> list[TaskChange]:
            task_changes, new, duplicate = await self._write(write)
            self._publish_acks([(site, event) for event, site, _ in events], now)
            self._publish_rebirths(rebirths, now)
            self.ingest.ack(batch)
            for observe_ack in self.ack_observers:
                observe_ack(time.monotonic() - taken)
            self.stats["batches"] += 1
            self.stats["events_new"] += new
            self.stats["events_duplicate"] += duplicate
            self.stats["acks"] += sum(1 for m in batch if m.qos > 0)
            self._log_tasks(task_changes)
            return task_changes

        return commit

    async def tick(self) -> list[TaskChange]:
        """Liveness: silent nodes go offline; nodes offline beyond the grace get a task."""
        now = self.clock()
        ingest = self.ingest
        lively = self.liveness.tick(self.state, connected=ingest.connected, connects=ingest.connects, now=now)
        changes = lively.changes
        for change in changes:
            log.info("node_offline", node=change.node, site=change.site, reason=change.reason)
        findings: list[Finding] = []
        touched = {c.key for c in changes}
        for node in self.state.nodes.values():
            for finding in evaluate_node(node, self._context(node, now)):
                findings.append(finding)
                if finding.fault == "offline":
                    node.offline_task_raised = True
                touched.add(node.key)
        review_due = now >= self._next_review
        if review_due:
            self._next_review = now + self.config.rules.review_interval_s
        if not touched and not review_due and not lively.has_work:
            return []
        records, seen = self._node_writes(touched, now)
        outages = dict(self.liveness.vantage.outages)

        def write(tx: Transaction) -> list[TaskChange]:
            for record in records:
                tx.upsert_node(record)
            if seen:
                tx.touch_nodes(seen)
            sites = write_site_outages(tx, lively, outages, now, review=review_due)
            return sites + apply_work(
                tx,
                nodes=self.state.nodes,
                at=now,
                cfg=self.config.rules,
                findings=findings,
                review_due=review_due,
            )

        task_changes = await self._write(write)
        self._log_tasks(task_changes)
        return task_changes

    # ---- helpers ------------------------------------------------------------------------------

    def _redelivered(self, site: str, event: Event) -> bool:
        """An event this process already took (in this batch or an earlier one): the rules see an
        event once. An older one, no longer remembered, is evaluated, and its findings dropped when
        the store finds its id (only the findings of events stored as new reach the tasks)."""
        node = self.state.get(site, event.node)
        return node is not None and node.remembers(event.id)

    def _node_writes(
        self, touched: set[NodeKey], now: float
    ) -> tuple[list[NodeRecord], list[tuple[float | None, float, str, str]]]:
        """Whole records for the nodes whose persisted fields changed (or that were not written by
        this process yet), ``last_seen`` updates for the rest."""
        records: list[NodeRecord] = []
        seen: list[tuple[float | None, float, str, str]] = []
        for node_key in sorted(touched):
            state = self.state.nodes[node_key]
            key = record_key(state)
            if self._written.get(node_key) != key:
                records.append(node_record(state, now))
                self._written[node_key] = key
            else:
                seen.append((state.last_seen, now, node_key.site, node_key.node))
        return records, seen

    def _admitted(self, key: NodeKey, topic: str, now: float) -> bool:
        """A known node, or a new one within ``[fleet]``'s caps; else the message is rejected."""
        if key in self.state.nodes:
            return True
        refused = self.admission.admit(known=len(self.state.nodes), now=now)
        if refused is None:
            return True
        fleet = self.config.fleet
        detail = (
            f"{len(self.state.nodes)} nodes known ([fleet] max_nodes = {fleet.max_nodes})"
            if refused == "node_limit"
            else f"more than {fleet.new_nodes_burst} new nodes at once ([fleet] new_nodes_per_minute = "
            f"{fleet.new_nodes_per_minute}, new_nodes_burst = {fleet.new_nodes_burst})"
        )
        self.rejections.note(refused, detail, topic)
        return False

    def _publish_acks(self, committed: list[tuple[str, Event]], now: float) -> None:
        for site, node, ack in ack_messages(committed, now):
            if self.ingest.publish(topic_for(site, node, "ack"), encode(ack)):
                self.stats["event_acks_published"] += 1
            else:
                self.stats["event_acks_unsent"] += 1

    def _publish_rebirths(self, rebirths: list[tuple[str, str, str]], now: float) -> None:
        for site, node, reason in rebirths:
            self.ingest.publish(topic_for(site, node, "rebirth"), encode(rebirth_message(node, reason, now)))
            self.stats["rebirths_requested"] += 1
            log.info("rebirth_requested", node=node, site=site, reason=reason)

    async def _write(self, fn: Callable[[Transaction], T]) -> T:
        """Commit ``fn`` (``collector.store.retry``): nothing is acknowledged before it commits."""
        return await commit(self.store, fn, self.stats, stopping=lambda: self._stopping)

    def _log_tasks(self, changes: list[TaskChange]) -> None:
        if changes:
            for listener in self.task_listeners:
                listener(changes)
        for change in changes:
            self.stats[f"tasks_{change.change}"] += 1
            if change.change == "repeated":
                continue  # counted on the task itself; not a lifecycle change
            log.info(
                f"task_{change.change}",
                task_id=change.task_id,
                node=change.node,
                action=change.action,
                severity=change.severity,
                summary=change.summary,
            )
