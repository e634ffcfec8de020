"""API authentication: bearer tokens with roles, kept in the configuration as SHA-256 hashes.

* ``viewer`` tokens may read; ``operator`` tokens may also change tasks.
* The configuration holds ``sha256`` (hex) of each token, never the token itself; a file holding
  token hashes must not be readable by group or others (``collector.config`` refuses it).
* Without any token configured, reads are served to loopback clients only and every write is
  refused: a fresh install is not an open door, and a local operator can still look.

``authorize`` is pure: it takes the ``Authorization`` header and the peer address, returns the
``Principal`` or an ``AuthFailure`` (401: who are you; 403: you may not).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Final, Literal

import msgspec

from collector.http.settings import AuthConfig

__all__ = ["AuthFailure", "Principal", "authorize", "hash_token", "new_token"]

Role = Literal["viewer", "operator", "local"]
_MAX_TOKEN: Final = 512


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking: a token's name and role, or ``local`` (no tokens configured, loopback)."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How the task history names this principal."""
        return f"{self.name} ({self.role})"


class AuthFailure(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal[401, 403]
    reason: str


def hash_token(token: str) -> str:
    """The value to put in ``[[auth.tokens]] sha256``: SHA-256 of the token's UTF-8 bytes, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token if 0 < len(token) <= _MAX_TOKEN else None


def authorize(
    config: AuthConfig, header: str | None, remote: str | None, *, write: bool
) -> Principal | AuthFailure:
    """Decide one request."""
    if not config.tokens:
        if write:
            return AuthFailure(
                status=403,
                reason="changes are disabled: no API tokens are configured ([auth] tokens in collector.toml)",
            )
        if not _loopback(remote):
            return AuthFailure(
                status=403,
                reason="without API tokens configured, the API answers loopback clients only",
            )
        return Principal(name="local", role="local")
    token = _bearer(header)
    if token is None:
        reason = (
            "missing bearer token" if not header else "malformed Authorization header: use 'Bearer <token>'"
        )
        return AuthFailure(status=401, reason=reason)
    digest = hash_token(token)
    match = None
    for entry in config.tokens:
        if hmac.compare_digest(entry.sha256, digest):
            match = entry
    if match is None:
        return AuthFailure(status=401, reason="unknown or revoked token")
    if write and match.role != "operator":
        return AuthFailure(
            status=403, reason=f"token {match.name!r} has role {match.role}: changes need an operator"
        )
    return Principal(name=match.name, role=match.role)
