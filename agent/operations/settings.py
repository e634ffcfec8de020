"""The ``[operations]`` section of the agent's configuration: remote operations are off unless
enabled, with the collector's public keys, the operations this node allows and the hook that
carries out each one (``agent.operations.commands`` verifies, ``agent.operations.hooks`` runs)."""

from __future__ import annotations

import base64
from typing import Annotated

import msgspec

from agent.operations.hooks import HookSpec

__all__ = ["OperationsSection"]


class OperationsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Remote operations (``agent/operations/commands.py``): off unless enabled, with the collector's public
    keys, the operations this node allows and the hook that carries out each one."""

    enabled: bool = False
    #: key id → Ed25519 public key (32 bytes, base64), as ``fleetops-collector ops keygen`` prints it
    keys: dict[str, str] = {}
    allow: list[str] = []
    max_skew_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    max_ttl_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 300.0
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4
    hooks: dict[str, HookSpec] = {}

    def public_keys(self) -> dict[str, bytes]:
        return {key_id: base64.b64decode(text, validate=True) for key_id, text in self.keys.items()}
