"""The ``[liveness]`` section: when a silent node counts as offline."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["LivenessConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class LivenessConfig(_Section, frozen=True):
    silent_after_intervals: Annotated[float, msgspec.Meta(ge=1, le=100)] = 3.0
    offline_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 120.0
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
