"""Ed25519 signing of commands (``fleetops.wire.Command``): the collector holds the private key, each
agent the public keys it trusts, by key id.

The private key is a PKCS#8 PEM file readable by the collector only (``fleetops-collector ops
keygen`` writes one and prints the public key to put into the agents' ``[operations.keys]``).
"""

from __future__ import annotations

import base64
import os
import stat
import uuid
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetops import wire

__all__ = ["CommandSigner", "SigningKeyError", "generate_key", "public_key_text"]

MAX_TTL_S: Final = 300


class SigningKeyError(ValueError):
    """The signing key cannot be used; the message says why."""


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half as the agents' configuration takes it: 32 raw bytes, base64."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def generate_key(path: Path) -> str:
    """Write a new private key to ``path`` (mode 0600, never overwriting); return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(key)


class CommandSigner:
    """Signs commands with one key. ``clock`` returns Unix time (seconds)."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str) -> None:
        if not key_id or len(key_id) > 64 or not all(c.isalnum() or c in "._-" for c in key_id):
            raise SigningKeyError(f"operations.key_id: {key_id!r} is not a valid key id")
        self._key = key
        self.key_id = key_id

    @classmethod
    def from_file(cls, path: Path, key_id: str) -> CommandSigner:
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"operations.signing_key_file: cannot read {path}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(
                f"operations.signing_key_file: {path} is readable by others (mode "
                f"{st.st_mode & 0o777:04o}); chmod 600"
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"operations.signing_key_file: {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"operations.signing_key_file: {path} is not an Ed25519 key")
        return cls(key, key_id)

    @property
    def public_key(self) -> str:
        return public_key_text(self._key)

    def sign(
        self,
        *,
        site: str,
        node: str,
        op: str,
        args: dict[str, str],
        now: float,
        ttl_s: int = 120,
        cmd_id: str | None = None,
    ) -> wire.Command:
        """A signed command for ``node`` of ``site``, issued ``now``, expiring ``ttl_s`` later."""
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be 1-{MAX_TTL_S}")
        iat = int(now)
        unsigned = wire.Command(
            v=wire.PROTOCOL_VERSION,
            site=site,
            node=node,
            cmd_id=cmd_id or uuid.uuid4().hex,
            op=op,
            args=dict(args),
            iat=iat,
            exp=iat + ttl_s,
            key_id=self.key_id,
            sig="A" * 86,
        )
        return self.resign(unsigned)

    def resign(self, command: wire.Command) -> wire.Command:
        """``command`` with this key's id and a fresh signature over its other fields."""
        import msgspec

        command = msgspec.structs.replace(command, key_id=self.key_id)
        signature = self._key.sign(wire.signing_payload(command))
        sig = base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")
        return msgspec.structs.replace(command, sig=sig)
