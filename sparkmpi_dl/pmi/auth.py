"""Joining a job: the hello / challenge / HMAC exchange that precedes any PMI traffic.

MPICH's PMI client cannot present a secret, so the launcher (a Spark task or the local
launcher) connects first, proves it knows the job's secret, and only then hands the
authenticated socket to the MPI process through ``PMI_FD``. The client speaks first so that
the server can still tell a plain ``cmd=initack`` PMI client (opt-in mode) from a launcher::

    C: cmd=sparkmpi-hello job=J epoch=E rank=R role=pmi|ctl host=H
    S: cmd=sparkmpi-challenge nonce=N
    C: cmd=sparkmpi-auth mac=HMAC-SHA256(secret, "N|J|E|R|role")
    S: cmd=sparkmpi-ok            (or cmd=sparkmpi-refused reason=... and close)

The nonce makes a captured exchange useless for a later connection.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
from dataclasses import dataclass

from sparkmpi_dl.pmi.wire import Message, WireError, format_v1, parse_v1

HELLO = "sparkmpi-hello"
CHALLENGE = "sparkmpi-challenge"
AUTH = "sparkmpi-auth"
OK = "sparkmpi-ok"
REFUSED = "sparkmpi-refused"
ROLES = ("pmi", "ctl")


class JoinRefused(ConnectionError):
    """The job service refused this rank; the message carries the server's reason."""


@dataclass(frozen=True)
class Hello:
    job: str
    epoch: int
    rank: int
    role: str
    host: str

    @classmethod
    def from_message(cls, msg: Message) -> "Hello":
        role = msg.require("role")
        if role not in ROLES:
            raise WireError(f"unknown role {role!r} (expected one of {ROLES})")
        return cls(msg.require("job"), msg.require_int("epoch"), msg.require_int("rank"),
                   role, msg.get("host") or "unknown")

    def to_bytes(self) -> bytes:
        return format_v1(HELLO, {"job": self.job, "epoch": self.epoch, "rank": self.rank,
                                 "role": self.role, "host": self.host})


def new_secret() -> str:
    """A fresh per-job secret (256 bits, hex)."""
    return secrets.token_hex(32)


def new_nonce() -> str:
    return secrets.token_hex(16)


def mac(secret: str, nonce: str, hello: Hello) -> str:
    text = f"{nonce}|{hello.job}|{hello.epoch}|{hello.rank}|{hello.role}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def mac_matches(secret: str, nonce: str, hello: Hello, presented: str) -> bool:
    """Constant-time check of a presented MAC; any text (non-ASCII included) is just wrong.

    ``hmac.compare_digest`` raises TypeError for a str with non-ASCII characters, so both
    sides are compared as bytes."""
    expected = mac(secret, nonce, hello).encode()
    return hmac.compare_digest(expected, presented.encode("utf-8", "surrogateescape"))


def _read_line(sock: socket.socket, limit: int = 4096) -> str:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise JoinRefused("the job service closed the connection during the handshake")
        data += chunk
        if len(data) > limit:
            raise JoinRefused("the job service sent an oversized handshake line")
    return data.decode(errors="replace")


def join(address: tuple[str, int], secret: str, hello: Hello, timeout: float = 30.0) -> socket.socket:
    """Connect to the job service and authenticate; returns the connected socket.

    The socket is left blocking and without timeout, ready to be handed to MPI as PMI_FD
    (role ``pmi``) or used as the control channel (role ``ctl``).
    """
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(hello.to_bytes())
        reply = parse_v1(_read_line(sock))
        if reply.cmd == REFUSED:
            raise JoinRefused(f"rank {hello.rank}: refused by the job service at "
                              f"{address[0]}:{address[1]}: {reply.get('reason')}")
        if reply.cmd != CHALLENGE:
            raise JoinRefused(f"unexpected handshake reply {reply.cmd!r}")
        sock.sendall(format_v1(AUTH, {"mac": mac(secret, reply.require("nonce"), hello)}))
        reply = parse_v1(_read_line(sock))
        if reply.cmd != OK:
            raise JoinRefused(f"rank {hello.rank}: refused by the job service at "
                              f"{address[0]}:{address[1]}: {reply.get('reason')}")
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise
