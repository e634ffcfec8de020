"""Generic webhook: the page as JSON, signed with HMAC-SHA256 over ``<timestamp>.<body>``.

Headers: ``X-Fleetops-Timestamp`` (Unix seconds), ``X-Fleetops-Signature: v1=<hex>``,
``Idempotency-Key`` (the same for every retry of one delivery). A receiver recomputes the
signature with the shared secret, rejects timestamps more than 5 minutes off, and drops
repeated idempotency keys (``verify_signature`` does the first two).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import msgspec

from collector.config import NotifyReceiver
from collector.notify.delivery import post_json
from collector.notify.page import Page

__all__ = ["SCHEMA_VERSION", "WebhookNotifier", "sign", "verify_signature", "webhook_body"]

SCHEMA_VERSION: Final = 1
TOLERANCE_S: Final = 300.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_body(page: Page) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "event": page.event,
        "dedup_key": page.dedup_key,
        "idempotency_key": page.idempotency_key,
        "title": page.title,
        "task": msgspec.to_builtins(page.task),
        "tasks_total": page.tasks_total,
        "nodes": list(page.nodes),
        "group": page.group,
        "links": {"task": page.task_url, "grafana": page.grafana_url},
        "at": page.at,
    }


class WebhookNotifier:
    resends_active = False
    grouped_by_default = True

    def __init__(
        self, receiver: NotifyReceiver, session: aiohttp.ClientSession, *, clock: Callable[[], float]
    ) -> None:
        self.name = receiver.name
        self.url = receiver.url
        self.secret = receiver.secret
        self.timeout_s = receiver.timeout_s
        self.session = session
        self.clock = clock

    async def send(self, page: Page) -> None:
        body = msgspec.json.encode(webhook_body(page))
        timestamp = str(int(self.clock()))
        headers = {
            "X-Fleetops-Timestamp": timestamp,
            "X-Fleetops-Signature": sign(self.secret, timestamp, body),
            "Idempotency-Key": page.idempotency_key,
            "User-Agent": "fleetops-collector",
        }
        await post_json(
            self.session,
            self.url,
            None,
            encoded=body,
            headers=headers,
            timeout_s=self.timeout_s,
            now=self.clock,
        )
