"""The ``[store]`` section: where the collector keeps its database."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["StoreConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StoreConfig(_Section, frozen=True):
    path: Annotated[str, msgspec.Meta(min_length=1)] = "/var/lib/fleetops-collector/fleetops.db"
