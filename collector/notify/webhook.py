"""Generic webhook: the page as JSON, signed with HMAC-SHA256 over ``<timestamp>.<body>``.

Headers: ``X-Fleetops-Timestamp`` (Unix seconds), ``X-Fleetops-Signature: v1=<hex>``,
``Idempotency-Key`` (the same for every retry of one delivery). A receiver recomputes the
signature with the shared secret, rejects timestamps more than 5 minutes off, and drops
repeated idempotency keys (``verify_signature`` does the first two).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar, Final

import msgspec

from collector.notify.delivery import post_json
from collector.notify.page import NotifierBase, Page
from collector.notify.settings import ReceiverSettings

__all__ = ["SCHEMA_VERSION", "WebhookNotifier", "WebhookSettings", "sign", "verify_signature", "webhook_body"]

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


class WebhookSettings(ReceiverSettings, frozen=True, kw_only=True, tag="webhook"):
    """``kind = "webhook"``: any HTTP(S) endpoint and the HMAC key shared with it."""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"secret"})

    #: HMAC-SHA256 key, 16+ characters
    secret: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.secret) < 16:
            raise ValueError(f"secret: receiver {self.name!r} needs an HMAC secret of 16+ characters")


class WebhookNotifier(NotifierBase[WebhookSettings]):
    """``POST <url>`` with the signed page (module docstring)."""

    async def send(self, page: Page) -> None:
        body = msgspec.json.encode(webhook_body(page))
        timestamp = str(int(self.clock()))
        headers = {
            "X-Fleetops-Timestamp": timestamp,
            "X-Fleetops-Signature": sign(self.settings.secret, timestamp, body),
            "Idempotency-Key": page.idempotency_key,
            "User-Agent": "fleetops-collector",
        }
        await post_json(
            self.session,
            self.settings.url,
            None,
            encoded=body,
            headers=headers,
            timeout_s=self.timeout_s,
            now=self.clock,
        )
