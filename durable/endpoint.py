"""Where a host's channel listens, and how a caller reaches it: ``Endpoint`` and TLS contexts.

A host listens on a Unix socket and on TCP (its node's IP) and registers one address carrying
both and its node, ``node=<id>;unix=<path>;tcp=<ip>:<port>``; callers on the same node dial the
socket, others (or all, with ``channel="tcp"``) dial TCP.

Guarantees:
- ``Endpoint.parse(str(e)) == e``; a bare ``unix:<path>`` (an address registered before TCP
  existed) parses as a socket on no known node, dialled as is.
- TCP may be TLS (``server_tls``/``client_tls``): peers verify the host's certificate against the
  cluster's one cert file used as the CA, with no hostname check (peers are IPs); clients present
  none (the hello's token admits them).

Does not guarantee: that the address is reachable (a node's IP as Ray reports it); without TLS,
TCP is plain text.

On failure: a cert or key that cannot be loaded raises ``ssl.SSLError``/``OSError`` when the
context is made (at start-up, before anything serves).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one host listens: its node, its Unix socket and its TCP address (``ip:port``)."""

    node: str
    unix: str
    tcp: str

    def __str__(self) -> str:
        return f"node={self.node};unix={self.unix};tcp={self.tcp}"

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        """An address as registered; a bare ``unix:<path>`` is a socket on no known node."""
        if address.startswith("unix:"):
            return cls("", address[5:], "")
        parts = dict(p.partition("=")[::2] for p in address.split(";"))
        return cls(parts.get("node", ""), parts.get("unix", ""), parts.get("tcp", ""))

    def dial(self, node: str, channel: str = "auto") -> str:
        """``unix:<path>`` on the same node unless TCP is forced, else ``tcp:<ip>:<port>``."""
        if self.unix and (not self.tcp or (channel != "tcp" and node and node == self.node)):
            return f"unix:{self.unix}"
        return f"tcp:{self.tcp}"


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """The host's TLS: its cert/key, and clients need not present one (the token admits them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_tls(cert: str) -> ssl.SSLContext:
    """Trust exactly the cluster's cert (it is the CA); no hostname check: peers are IPs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cert)
    return context
