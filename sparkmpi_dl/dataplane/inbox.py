"""The rank's side of resident ranks: a data inbox, and the feed of deliveries.

A resident rank (:class:`sparkmpi_dl.dataplane.persistent.ResidentRanks`) runs
``fn(feed, *args)`` once, for the whole life of the job, and loops over ``feed``::

    def serve(feed):
        frames = []
        for delivery in feed:                  # one per ResidentRanks.feed(df, message)
            frames.append(delivery.table)      # this rank's partitions of df (pyarrow.Table)
            delivery.reply({"rows": delivery.table.num_rows})
        return len(frames)                     # ResidentRanks.close() returns these

Two channels, both TCP and both authenticated with the job's token:

* **data**: the rank listens; each Spark task of a feed job connects and streams its
  partition as Arrow IPC (header line ``{"token", "seq", "part"}`` first), and gets a one-byte
  acknowledgement once the rank holds all of it. The feed job ends only after every
  partition is acknowledged, so the data is in the ranks before the driver says "go".
* **control**: the rank connects to the driver and receives, per feed, ``{"seq", "parts",
  "message", "schema"}``; it answers with the reply. EOF from the driver ends the feed.

A Spark task retried after a failure sends the same ``(seq, part)`` again, which replaces
the earlier copy: delivery is idempotent.
"""
from __future__ import annotations

import hmac
import json
import pickle
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

ACK = b"\x01"
_LEN = struct.Struct("!Q")
PART_WAIT_S = 60.0
"""How long a delivery waits for a partition the driver says was acknowledged (a guard only:
acknowledged data is already here)."""


def send_message(sock: socket.socket, obj: Any) -> None:
    """One length-prefixed pickle (the peers are the job's own processes, authenticated)."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(body)) + body)


def recv_message(sock: socket.socket) -> Any:
    """The next message, or raise EOFError when the peer closed the connection."""
    (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    return pickle.loads(_recv_exact(sock, size))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EOFError("connection closed")
        got += n
    return bytes(buf)


def empty_table(schema_bytes: bytes | None) -> pa.Table:
    if not schema_bytes:
        return pa.table({})
    return pa.ipc.read_schema(pa.py_buffer(schema_bytes)).empty_table()


@dataclass
class Delivery:
    """One ``ResidentRanks.feed`` call as this rank sees it."""

    seq: int
    table: pa.Table | None
    """This rank's partitions of the fed DataFrame, concatenated in partition order (an empty
    table with the DataFrame's schema when none fell to this rank); None when the feed carried
    no data; for an RDD, the list of this rank's records."""
    message: Any
    """The driver's message for this feed (any picklable value)."""
    _feed: "Feed"

    def reply(self, value: Any) -> None:
        """Send this rank's answer; ``feed`` returns every rank's, ordered by rank."""
        self._feed._reply(self.seq, value)


class Inbox:
    """The data listener: partitions that feed tasks push to this rank, by (seq, part)."""

    def __init__(self, token: str, host: str = "") -> None:
        self.token = token
        self._server = socket.create_server((host, 0))
        self._parts: dict[tuple[int, int], Any] = {}
        self._ready = threading.Condition()
        threading.Thread(target=self._accept, name="inbox-accept", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._receive, args=(conn,), daemon=True).start()

    def _receive(self, conn: socket.socket) -> None:
        with conn:
            try:
                reader = conn.makefile("rb")
                header = json.loads(reader.readline(4096) or b"{}")
                if not hmac.compare_digest(str(header.get("token", "")), self.token):
                    return  # not this job's task: drop it without a word
                if header.get("kind") == "records":
                    value: Any = pickle.load(reader)
                else:
                    value = pa.ipc.open_stream(reader).read_all()
            except (OSError, ValueError, EOFError, pa.ArrowInvalid, pickle.UnpicklingError):
                return  # the task sees no acknowledgement and fails; Spark retries it
            with self._ready:
                self._parts[(int(header["seq"]), int(header["part"]))] = value
                self._ready.notify_all()
            conn.sendall(ACK)

    def take(self, seq: int, parts: list[int], schema: bytes | None, kind: str) -> Any:
        """This rank's share of feed ``seq``: the listed partitions in order, removed."""
        with self._ready:
            if not self._ready.wait_for(lambda: all((seq, p) in self._parts for p in parts),
                                        timeout=PART_WAIT_S):
                missing = [p for p in parts if (seq, p) not in self._parts]
                raise RuntimeError(f"feed {seq}: partitions {missing} were acknowledged but "
                                   f"never arrived at this rank")
            values = [self._parts.pop((seq, p)) for p in parts]
        if kind == "records":
            return [record for value in values for record in value]
        if not values:
            return empty_table(schema)
        return values[0] if len(values) == 1 else pa.concat_tables(values)

    def close(self) -> None:
        self._server.close()


class Feed:
    """What a resident rank iterates over: one :class:`Delivery` per feed, until close."""

    def __init__(self, control: socket.socket, inbox: Inbox) -> None:
        self._control = control
        self._inbox = inbox
        self._pending: int | None = None

    def __iter__(self) -> Iterator[Delivery]:
        while True:
            if self._pending is not None:
                raise RuntimeError(f"feed {self._pending}: reply() was not called before "
                                   f"taking the next delivery")
            try:
                order = recv_message(self._control)
            except (EOFError, OSError):
                return  # the driver closed the job (or is gone: the job ends either way)
            if order.get("close"):
                return
            seq = int(order["seq"])
            kind = order.get("kind", "none")
            table = None if kind == "none" else self._inbox.take(seq, order["parts"],
                                                                 order.get("schema"), kind)
            self._pending = seq
            yield Delivery(seq, table, order.get("message"), self)

    def _reply(self, seq: int, value: Any) -> None:
        if self._pending != seq:
            raise RuntimeError(f"feed {seq}: reply() called twice or out of order")
        send_message(self._control, {"seq": seq, "reply": value})
        self._pending = None


def serve_rank(fn: Any, address: tuple[str, int], token: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """The resident rank's body: open the inbox, say hello to the driver, run ``fn(feed)``.

    The inbox is announced at the address this host uses to reach the driver: an interface
    the cluster's other hosts (where the feed tasks run) can reach too."""
    from mpi4py import MPI

    try:
        control = socket.create_connection(address, timeout=60)
    except ConnectionRefusedError:  # closed before this rank came up: nothing to serve
        print(f"resident rank: the driver at {address[0]}:{address[1]} refused the "
              f"connection (closed before this rank started?)", file=sys.stderr, flush=True)
        return None
    control.settimeout(None)
    control.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    inbox = Inbox(token)
    send_message(control, {"token": token, "rank": MPI.COMM_WORLD.rank,
                           "data": (control.getsockname()[0], inbox.port)})
    try:
        return fn(Feed(control, inbox), *args, **kwargs)
    finally:
        inbox.close()
        control.close()
