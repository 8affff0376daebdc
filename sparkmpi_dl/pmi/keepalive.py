"""TCP keepalive on control channels, so a host that vanishes is noticed in seconds.

A crashed process closes its sockets and the peer sees it at once; a host that loses power
or its network sends nothing, and an idle connection to it would look healthy forever.
The kernel probes an idle keepalive connection and, when the probes go unanswered, fails
it with ETIMEDOUT: after ``IDLE_S + INTERVAL_S * PROBES`` seconds of silence (15 s).
"""
from __future__ import annotations

import socket

IDLE_S, INTERVAL_S, PROBES = 5, 2, 5


def keep_alive(sock: socket.socket) -> None:
    """Turn on keepalive probing of ``sock`` with the short timings above (where supported)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", IDLE_S), ("TCP_KEEPINTVL", INTERVAL_S),
                        ("TCP_KEEPCNT", PROBES)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
