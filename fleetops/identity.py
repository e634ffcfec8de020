"""A node's identity: its site and its name, together.

Node names repeat across sites (``dc1/gpu-r01-n05`` and ``dc2/gpu-r01-n05`` are two machines), so
everything that remembers a node (the collector's fleet state, its store keys, fingerprints,
operations, the API's routes) keys it by ``NodeKey(site, node)``, never by the name alone. The site
of a message is the one in its topic, which the broker's ACL ties to the sender's certificate.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["NodeKey"]


class NodeKey(NamedTuple):
    """``(site, node)``; written ``site/node`` (the form of a node certificate's common name)."""

    site: str
    node: str

    def __str__(self) -> str:
        return f"{self.site}/{self.node}"
