"""Wires the collector: store, fleet state, MQTT ingest, pipeline and HTTP API.

In-process use (tests, tools)::

    collector = Collector(config)
    await collector.start()        # returns once the API listens; the broker connects in the background
    ...collector.api_url...        # e.g. http://127.0.0.1:41234
    await collector.stop()         # last batch committed and acknowledged, broker session kept
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from collector.board.queries import BoardReader
from collector.board.routes import register_board
from collector.config import ApiConfig, CollectorConfig, split_host_port
from collector.fleet.state import RECENT_EVENTS_MAX, FleetState
from collector.http.app import create_app
from collector.http.connections import ConnectionGuard, RateLimitedLog, default_limits
from collector.http.operations import register_operations
from collector.ingest.client import MqttIngest
from collector.metrics import MetricsService
from collector.notify.dispatcher import Dispatcher
from collector.operations.service import OperationsService
from collector.pipeline import Pipeline, StoreUnavailable, node_state
from collector.store import Store
from fleetops.xid_catalog import XidCatalog, load_catalog

__all__ = ["Collector"]

log = structlog.get_logger("collector.service")


def api_tls_context(api: ApiConfig) -> ssl.SSLContext | None:
    """The API's HTTPS context (TLS 1.2 or later), or None for plain HTTP."""
    if not api.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(api.tls_cert_file, api.tls_key_file)
    return context


class Collector:
    """The collector process in one object: ``start()``, ``stop()``, ``wait()``."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        clock: Callable[[], float] = time.time,
        catalog: XidCatalog | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = Store(config.store.path)
        self.state = FleetState(
            silent_after_intervals=config.liveness.silent_after_intervals,
            rules=config.rules,
        )
        self.ingest = MqttIngest(config.mqtt, queue_max=config.ingest.queue_max)
        self.pipeline = Pipeline(
            config=config,
            ingest=self.ingest,
            store=self.store,
            state=self.state,
            catalog=catalog or load_catalog(),
            clock=clock,
        )
        self.metrics = MetricsService(config, self.state, self.pipeline, self.ingest, self.store, clock=clock)
        self.notify = Dispatcher(config.notify, config.store.path, clock=clock)
        # a committed task change is paged now, not at the dispatcher's next poll
        self.pipeline.task_listeners.append(lambda _changes: self.notify.wake())
        self.board_reader = BoardReader(config.store.path)
        self.operations = OperationsService(config, self.store, self.state, clock=clock)
        self.api_url = ""
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._previous_exception_handler: (
            Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
        ) = None
        self.log_limiter = RateLimitedLog()
        total, per_peer = default_limits()
        api = config.api
        self.connections = ConnectionGuard(
            max_connections=api.max_connections or total,
            max_per_peer=min(api.max_connections_per_peer or per_peer, api.max_connections or total),
            header_timeout_s=api.header_timeout_s,
            counts=self.metrics.metrics.api_connections,
            limiter=self.log_limiter,
        )
        self._pipeline_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: the broker is connected and the store takes writes."""
        if not self.ingest.connected:
            return False, "broker not connected"
        if not await self.store.aread(self.store.writable):
            return False, "store not writable"
        return True, ""

    async def start(self) -> None:
        await asyncio.to_thread(self.store.open)
        await self._restore_nodes()
        host, port = split_host_port(self.config.api.listen)
        app = create_app(
            state=self.state,
            store=self.store,
            ready=self.ready,
            auth=self.config.auth,
            rules=self.config.rules,
            clock=self.clock,
        )
        await self.metrics.start(app)
        await asyncio.to_thread(self.board_reader.open)
        await self.notify.open()
        register_board(
            app, state=self.state, store=self.store, reader=self.board_reader, pages=self.notify.db.deliveries
        )
        register_operations(app, self.operations)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self.config.api.keepalive_timeout_s
        )
        await self._runner.setup()
        await self._listen(host, port)
        bound = self._server.sockets[0].getsockname() if self._server is not None else (host, port)
        bound_host = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        scheme = "https" if self.config.api.tls_cert_file else "http"
        self.api_url = f"{scheme}://{bound_host}:{bound[1]}"
        await self.notify.start(board_url=f"{self.api_url}/board/")
        await self.ingest.start()
        await self.operations.start()
        self._pipeline_task = asyncio.create_task(self._run_pipeline(), name="collector-pipeline")
        log.info(
            "api_listening",
            url=self.api_url,
            db=str(self.store.path),
            broker=self.config.mqtt.url,
            nodes_restored=len(self.state.nodes),
        )

    async def _restore_nodes(self) -> None:
        """Fleet state from the store: the ``[fleet] max_nodes`` nodes seen last, so that a store
        grown beyond the cap (by a flood of made-up names, before the cap) keeps start-up bounded."""
        cap = self.config.fleet.max_nodes
        records = await self.store.aread(lambda: self.store.list_nodes(cap))
        for record in records:
            self.state.restore(node_state(record))
        if len(records) >= cap:
            stored = await self.store.aread(self.store.count_nodes)
            if stored > cap:
                log.warning("nodes_not_restored", stored=stored, restored=len(records), max_nodes=cap)
        await self._restore_event_memory()

    async def _restore_event_memory(self) -> None:
        """The rules' memory of each node's recent events (XID repeats, a hang's peers), from the
        events stored within the rules' longest window: a restart forgets no repeat, and a
        redelivered event is still known as one."""
        keys = list(self.state.nodes)
        since = self.clock() - self.config.rules.event_memory_s
        memory, damaged = await self.store.aread(
            lambda: self.store.recent_events(keys, since, RECENT_EVENTS_MAX)
        )
        for key, events in memory.items():
            self.state.nodes[key].recent_events.extend(events)
        if memory or damaged:
            log.info(
                "event_memory_restored",
                nodes=len(memory),
                events=sum(len(e) for e in memory.values()),
                unreadable=damaged,
                window_s=self.config.rules.event_memory_s,
            )

    async def _listen(self, host: str, port: int) -> None:
        """Serve the API on a listening socket whose connections are bounded
        (``collector.http.connections``); the event loop's own errors are rate-limited in the log."""
        loop = asyncio.get_running_loop()
        self._previous_exception_handler = loop.get_exception_handler()
        loop.set_exception_handler(self.log_limiter.loop_exception_handler())
        assert self._runner is not None
        assert self._runner.server is not None
        tls = api_tls_context(self.config.api)
        sock = self.connections.listen(host, port)
        try:
            self._server = await loop.create_server(
                self.connections.protocol_factory(self._runner.server),
                sock=sock,
                ssl=tls,
                ssl_handshake_timeout=self.config.api.header_timeout_s if tls is not None else None,
            )
        except BaseException:
            sock.close()
            raise

    async def _run_pipeline(self) -> None:
        try:
            await self.pipeline.run()
        except StoreUnavailable as exc:
            log.error("pipeline_stopped_store_unavailable", error=str(exc))
        finally:
            self._stopped.set()

    async def wait(self) -> None:
        """Until the pipeline ends (after ``stop()``)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop taking messages, finish and commit the batch in flight, acknowledge it, disconnect."""
        self.ingest.pause()
        self.pipeline.stop()
        if self._pipeline_task is not None:
            await self._pipeline_task
            self._pipeline_task = None
        await self.operations.stop()
        await self.ingest.stop()
        await self.metrics.stop()
        if self._server is not None:
            self._server.close()  # no new connections; the runner's cleanup closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server = None
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(self._previous_exception_handler)
        await self.notify.stop()
        await asyncio.to_thread(self.board_reader.close)
        await asyncio.to_thread(self.store.close)
        log.info("collector_stopped", rejected=dict(self.pipeline.rejections.counts))
