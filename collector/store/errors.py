"""The store's one error type, shared by every backend."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(RuntimeError):
    """The database could not be opened or migrated."""
