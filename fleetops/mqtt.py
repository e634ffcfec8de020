"""MQTT endpoint settings shared by the agent (``[mqtt]`` in agent.toml) and the collector (``[mqtt]`` in
collector.toml): the broker URL, parsed once into scheme, host, port and whether TLS is on, and the
keepalive. Each program's section extends :class:`MqttEndpoint` with its own fields (credentials,
TLS files, reconnect and queue limits).

URLs are ``mqtt://host[:port]`` (plain, default port 1883) or ``mqtts://host[:port]`` (TLS, default
8883); an IPv6 host is written in brackets (``mqtts://[::1]:8883``). Credentials never go in the URL
(URLs are logged; see ``fleetops.secrets``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec

from fleetops.secrets import shown_url, url_has_credentials

__all__ = ["DEFAULT_PORTS", "MqttEndpoint", "MqttUrl", "TlsFiles", "parse_mqtt_url"]

DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}
_FORM: Final = "mqtt://host:port or mqtts://host:port"


class MqttUrl(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed broker URL."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"


@functools.lru_cache(maxsize=64)
def parse_mqtt_url(url: str) -> MqttUrl:
    """``"mqtts://broker:8883"`` → ``MqttUrl(scheme="mqtts", host="broker", port=8883)``.

    Raises ValueError saying what is wrong (never echoing credentials, nor more of the value than
    a scheme, host and port).
    """
    if url_has_credentials(url):
        raise ValueError("must not contain credentials; set username and password instead")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"must be {_FORM}, got {shown_url(url)!r}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"must be {_FORM}, got {shown_url(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {shown_url(url)!r} (1-65535)") from None
    if not parts.hostname:
        raise ValueError(f"no host in {shown_url(url)!r}")
    if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be {_FORM}, got {shown_url(url)!r}")
    scheme: Literal["mqtt", "mqtts"] = "mqtts" if parts.scheme == "mqtts" else "mqtt"
    return MqttUrl(scheme=scheme, host=parts.hostname, port=port or DEFAULT_PORTS[scheme])


class TlsFiles(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PEM files for a TLS connection: the CA bundle to verify the server, and a client certificate
    with its key (both or neither)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class MqttEndpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the broker is. A section that defines ``__post_init__`` calls ``super().__post_init__()``."""

    url: str = "mqtt://localhost:1883"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30

    def __post_init__(self) -> None:
        try:
            parse_mqtt_url(self.url)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None

    @property
    def endpoint(self) -> MqttUrl:
        return parse_mqtt_url(self.url)

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def tls_enabled(self) -> bool:
        return self.endpoint.tls
