"""A rendezvous server for Horovod's Gloo controller, and the environment that points at it.

Horovod 0.28.1 in Gloo mode (``HOROVOD_CONTROLLER=gloo``) needs no MPI: each rank reads its
rank, size, local and cross rank/size and hostname from ``HOROVOD_*`` variables and meets
the others through an HTTP key-value store at ``HOROVOD_GLOO_RENDEZVOUS_ADDR:PORT``. Its
C++ client speaks a tiny protocol, one connection per request:

- ``PUT /<scope>/<key>`` with the value as body (a rank's hostname or its pair addresses);
- ``GET /<scope>/<key>``: 200 with the value, or 404 while absent (the client polls);
- ``DELETE /<scope>/<rank>``: the rank is done with ``scope``; once every member of a scope
  whose size is known has said so, the scope's keys are dropped.

Scopes are ``global``, ``local_<hostname>`` and ``cross_<local_rank>`` (plus the same
names with a ``_process_set_hash_<h>`` suffix for process sets). The client cannot present
credentials, so the server binds to one chosen address only, lives only as long as the
job, and refuses malformed paths, oversized keys or values and unknown methods, logging why.
"""
from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,256}$")
MAX_VALUE_BYTES = 1 << 20
MAX_STORE_BYTES = 64 << 20


@dataclass(frozen=True)
class Placement:
    """Where one rank sits: Horovod's local (same host) and cross (same local rank) groups."""

    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int


def placements(hosts: list[str]) -> list[Placement]:
    """Local/cross rank and size of every rank, from each rank's real hostname.

    local_rank counts earlier ranks on the same host; the cross group of local rank L is the
    hosts that have an L-th rank, ordered by first appearance.
    """
    host_order = list(dict.fromkeys(hosts))
    local_rank = [hosts[:r].count(h) for r, h in enumerate(hosts)]
    result = []
    for r, host in enumerate(hosts):
        peers = [h for h in host_order if hosts.count(h) > local_rank[r]]
        result.append(Placement(local_rank[r], hosts.count(host), peers.index(host), len(peers)))
    return result


def gloo_env(rank: int, hosts: list[str], addr: str, port: int,
             iface: str | None = None, timeout_s: int = 30) -> dict[str, str]:
    """The ``HOROVOD_*`` variables that make rank ``rank`` join a Gloo job via ``addr:port``."""
    if not 0 <= rank < len(hosts):
        raise ValueError(f"rank {rank} is outside the job of {len(hosts)} rank(s)")
    p = placements(hosts)[rank]
    env = {
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_RANK": str(rank),
        "HOROVOD_SIZE": str(len(hosts)),
        "HOROVOD_LOCAL_RANK": str(p.local_rank),
        "HOROVOD_LOCAL_SIZE": str(p.local_size),
        "HOROVOD_CROSS_RANK": str(p.cross_rank),
        "HOROVOD_CROSS_SIZE": str(p.cross_size),
        "HOROVOD_HOSTNAME": hosts[rank],
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
    }
    if iface:
        env["HOROVOD_GLOO_IFACE"] = iface
    return env


def scope_sizes(hosts: list[str]) -> dict[str, int]:
    """Members of each rendezvous scope Horovod opens for these hosts."""
    sizes = {"global": len(hosts)}
    for host, p in zip(hosts, placements(hosts)):
        sizes[f"local_{host}"] = p.local_size
        sizes[f"cross_{p.local_rank}"] = p.cross_size
    return sizes


class _Store:
    """Scoped key-value data with per-scope completion tracking; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, bytes]] = {}
        self.done: dict[str, set[str]] = {}
        self.sizes: dict[str, int] = {}
        self.nbytes = 0

    def reset(self, sizes: dict[str, int]) -> None:
        with self.lock:
            self.data, self.done, self.sizes, self.nbytes = {}, {}, dict(sizes), 0

    def put(self, scope: str, key: str, value: bytes) -> str | None:
        """Store a value; returns a refusal reason instead when over the memory cap."""
        with self.lock:
            old = self.data.get(scope, {}).get(key, b"")
            if self.nbytes - len(old) + len(value) > MAX_STORE_BYTES:
                return f"store full ({MAX_STORE_BYTES} bytes)"
            self.data.setdefault(scope, {})[key] = value
            self.nbytes += len(value) - len(old)
        return None

    def get(self, scope: str, key: str) -> bytes | None:
        with self.lock:
            return self.data.get(scope, {}).get(key)

    def finish(self, scope: str, rank: str) -> None:
        """A rank is done with a scope: drop the scope once all its known members are."""
        with self.lock:
            size = self.sizes.get(scope) or self.sizes.get(scope.split("_process_set_hash_")[0])
            if size is None:  # unknown scope: only this rank's own entry can go
                value = self.data.get(scope, {}).pop(rank, b"")
                self.nbytes -= len(value)
                return
            finished = self.done.setdefault(scope, set())
            finished.add(rank)
            if len(finished) >= size:
                self.nbytes -= sum(len(v) for v in self.data.pop(scope, {}).values())
                del self.done[scope]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, as Horovod's client does
    timeout = 10
    server: "_HTTPServer"

    def _scope_key(self) -> tuple[str, str] | None:
        parts = self.path.split("/")
        if len(parts) != 3 or parts[0] or not all(_NAME.match(p) for p in parts[1:]):
            self._refuse(400, f"malformed path {self.path[:80]!r} (want /<scope>/<key>)")
            return None
        return parts[1], parts[2]

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _refuse(self, status: int, reason: str) -> None:
        log.warning("gloo rendezvous: refused %s from %s: %s", self.command,
                    self.client_address[0], reason)
        self._reply(status)

    def do_GET(self) -> None:
        if (sk := self._scope_key()) is not None:
            value = self.server.store.get(*sk)
            self._reply(404) if value is None else self._reply(200, value)

    def do_PUT(self) -> None:
        if (sk := self._scope_key()) is None:
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(411, "missing or bad Content-Length")
        if not 0 <= length <= MAX_VALUE_BYTES:
            return self._refuse(413, f"value of {length} bytes (limit {MAX_VALUE_BYTES})")
        try:
            value = self.rfile.read(length)
        except OSError as err:
            return self._refuse(408, f"body not received: {err}")
        if len(value) != length:
            return self._refuse(400, f"body of {len(value)} bytes, announced {length}")
        reason = self.server.store.put(*sk, value)
        self._refuse(507, reason) if reason else self._reply(200)

    def do_DELETE(self) -> None:
        if (sk := self._scope_key()) is not None:
            self.server.store.finish(*sk)
            self._reply(200)

    def _unsupported(self) -> None:
        self._refuse(405, f"method {self.command} not supported")

    do_POST = do_HEAD = do_PATCH = do_OPTIONS = _unsupported

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("gloo rendezvous: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    store: _Store

    def server_bind(self) -> None:
        # HTTPServer's own server_bind does a reverse DNS lookup (getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class GlooRendezvous:
    """The job's rendezvous server; ``env_provider`` hands each rank its Horovod variables.

    Use as a context manager around the job. A rank asking for its environment a second
    time means a new attempt of the job (e.g. a retried Spark stage): the store is cleared
    so no rank meets a dead peer's address.
    """

    def __init__(self, bind: str = "127.0.0.1", port: int = 0, iface: str | None = None,
                 timeout_s: int = 30) -> None:
        if bind in ("", "0.0.0.0", "::"):
            raise ValueError("bind the rendezvous to one address, not all interfaces "
                             f"({bind!r}): its clients cannot authenticate")
        self.bind, self.port, self.iface, self.timeout_s = bind, port, iface, timeout_s
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._hosts: list[str] | None = None
        self._issued: set[int] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("rendezvous server is not running")
        return self.bind, self._httpd.server_address[1]

    def start(self) -> "GlooRendezvous":
        server_class = _HTTPServer6 if ":" in self.bind else _HTTPServer
        self._httpd = server_class((self.bind, self.port), _Handler)
        self._httpd.store = _Store()
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="gloo-rendezvous", daemon=True)
        self._thread.start()
        log.info("gloo rendezvous listening on %s:%d", *self.address)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "GlooRendezvous":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env_provider(self, rank: int, hosts: list[str]) -> dict[str, str]:
        """Environment provider ``(rank, hosts) -> env`` for the project's launchers."""
        with self._lock:
            if hosts != self._hosts or rank in self._issued:
                self._httpd.store.reset(scope_sizes(hosts))  # type: ignore[union-attr]
                self._hosts, self._issued = list(hosts), set()
            self._issued.add(rank)
        addr, port = self.address
        return gloo_env(rank, hosts, addr, port, self.iface, self.timeout_s)
