"""The ``[export]`` section: how often /metrics renders a node again, and the optional OTLP push."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from fleetops.secrets import shown_url

__all__ = ["ExportConfig", "OtlpExportConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class OtlpExportConfig(_Section, frozen=True):
    """[export.otlp]: push the collector's metrics over OTLP/HTTP (protobuf). Off while ``endpoint``
    is empty: nothing leaves the site unless configured."""

    #: full URL of the OTLP/HTTP metrics endpoint, e.g. http://otel-collector:4318/v1/metrics
    endpoint: str = ""
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    #: extra HTTP headers sent with every export (e.g. an authorization token)
    headers: dict[str, str] = {}

    def __post_init__(self) -> None:
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"endpoint: must be an http:// or https:// URL, got {shown_url(self.endpoint)!r}"
                )
        for name in self.headers:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"headers: {name!r} is not a valid HTTP header name")

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


class ExportConfig(_Section, frozen=True):
    #: a node's series on /metrics are rendered again at most this often; a scrape may show values
    #: up to this old, except a node's liveness, shown at once (0: rendered whenever the node
    #: changed). OTLP exports read current state.
    metrics_refresh_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    otlp: OtlpExportConfig = OtlpExportConfig()
