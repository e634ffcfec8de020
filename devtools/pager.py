"""A small receiver for the signed webhook, for the demo and local trials: it listens on loopback,
checks each page's signature and timestamp, drops repeated idempotency keys, and hands each page
to a callback (``PageReceiver(secret, on_page)``; ``start()`` returns its URL; ``stop()``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from collector.notify.webhook import verify_signature

__all__ = ["PageReceiver"]

BODY_MAX: Final = 1024 * 1024


class PageReceiver:
    def __init__(self, secret: str, on_page: Callable[[dict[str, Any]], None]) -> None:
        self.secret = secret
        self.on_page = on_page
        self.received = 0
        self.rejected = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Listen on a free loopback port; returns ``http://127.0.0.1:PORT/pages``."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, BODY_MAX))
                ok = verify_signature(
                    receiver.secret,
                    self.headers.get("X-Fleetops-Timestamp", ""),
                    body,
                    self.headers.get("X-Fleetops-Signature", ""),
                    time.time(),
                )
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")
                receiver._take(ok, self.headers.get("Idempotency-Key", ""), body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the callback reports
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="page-receiver", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/pages"

    def _take(self, ok: bool, key: str, body: bytes) -> None:
        with self._lock:
            if not ok:
                self.rejected += 1
                return
            if key in self._seen:
                return
            self._seen.add(key)
            self.received += 1
        try:
            page = json.loads(body)
        except ValueError:
            return
        if isinstance(page, dict):
            self.on_page(page)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
