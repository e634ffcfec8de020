"""The ``[api]`` and ``[auth]`` sections: where the API listens, its TLS, connection limits and
scrape token, and the bearer tokens (their SHA-256 only) with their roles."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["ApiConfig", "AuthConfig", "AuthToken", "split_host_port"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``; ``"[::1]:0"`` is accepted too."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} out of range")
    return host.strip("[]"), port


class ApiConfig(_Section, frozen=True):
    listen: str = "127.0.0.1:8080"
    #: HTTPS for the API: a server certificate (chain) and its key, both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: SHA-256 (hex) of a bearer token ``/metrics`` then requires; empty: open, as Prometheus expects
    metrics_token_sha256: Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9a-f]{64})?\Z")] = ""
    #: connections open at once, and from one address; 0: derived from the descriptor limit
    #: (``collector.http.connections.default_limits``, docs/reliability.md)
    max_connections: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    max_connections_per_peer: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    #: a connection that has not sent a whole request head this long after it opened is closed
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    #: an idle keep-alive connection is closed after this long
    keepalive_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 15.0

    def __post_init__(self) -> None:
        try:
            split_host_port(self.listen)
        except ValueError as exc:
            raise ValueError(f"listen: {exc}") from None
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_key_file: tls_cert_file and tls_key_file go together")


_SHA256_HEX = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]


class AuthToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API token: its holder's name, role, and the SHA-256 (hex) of the token itself."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")]
    role: Literal["viewer", "operator"]
    sha256: _SHA256_HEX


class AuthConfig(_Section, frozen=True):
    """API bearer tokens. Without tokens, reads are served to loopback clients only and every
    write is refused."""

    tokens: list[AuthToken] = []

    def __post_init__(self) -> None:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: token names must be unique")
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("tokens: two tokens have the same sha256")
