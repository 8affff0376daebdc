"""Resident ranks: one MPI job that lives across many Spark jobs and is fed data by each.

``sparkmpi_dl.run(fn, data=df)`` starts a fresh MPI job per DataFrame: right for one big
input, too slow for a stream of small ones (every micro-batch would pay the rank launch,
the imports and ``MPI_Init``, seconds each). :class:`ResidentRanks` starts the ranks once, as
Spark barrier tasks holding ``num_proc`` slots, and then each :meth:`ResidentRanks.feed`
call runs an ordinary Spark job over the DataFrame whose tasks push partition ``p`` to rank
``p % num_proc`` (Arrow IPC over TCP, see :mod:`sparkmpi_dl.dataplane.inbox`), and returns
every rank's reply. The ranks keep their memory (a model, a reconstruction, GPU buffers)
between feeds::

    def serve(feed):                          # runs once per rank, for the job's life
        total = 0.0
        for delivery in feed:
            total += delivery.table.column("x").to_numpy().sum()
            delivery.reply(MPI.COMM_WORLD.allreduce(total))
        return total

    with ResidentRanks(serve, 2, spark=spark) as ranks:
        ranks.feed(df1)            # -> [reply of rank 0, reply of rank 1]
        ranks.feed(df2)
    # leaving the block closes the feed; ranks.results holds each rank's return value

The feed jobs need task slots besides the ranks' own: the cluster must offer ``num_proc + 1``
slots at least (``local[N+2]`` locally). On a local master with fewer slots (``local[*]`` on
a small machine), ``placement="auto"`` runs the ranks as local MPI processes beside Spark
instead (:func:`sparkmpi_dl.run_local`: the same host, the same PMI service, no slot
held), and says so. A rank that fails ends the job as
``sparkmpi_dl.run`` would, and the next ``feed`` raises :class:`ResidentRanksFailed` naming
it, within seconds.
"""
from __future__ import annotations

import secrets
import select
import socket
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import pyarrow as pa
from pyspark import RDD, SparkContext, TaskContext
from pyspark.sql import DataFrame, SparkSession

from sparkmpi_dl.dataplane.inbox import ACK, recv_message, send_message, serve_rank
from sparkmpi_dl.errors import SparkMPIError

ACK_SCHEMA = "part long, rows long"
POLL_S = 0.5

_T = TypeVar("_T")


class ResidentRanksFailed(SparkMPIError, RuntimeError):
    """The resident job ended (a rank failed, exited or timed out), or a feed could not be
    delivered; the message says which, the job's own :class:`JobFailed` is its cause."""


class ResidentRanks:
    """``num_proc`` MPI ranks running ``fn(feed, *args, **kwargs)`` until :meth:`close`."""

    def __init__(self, fn: Callable[..., Any], num_proc: int, *, args: Sequence[Any] = (),
                 kwargs: dict[str, Any] | None = None,
                 spark: SparkSession | SparkContext | None = None, master: str | None = None,
                 bind_host: str | None = None, start_timeout: float = 120.0,
                 timeout: float | None = None, env: dict[str, str] | None = None,
                 output: Any = None, placement: str = "auto", slot_wait_s: float = 15.0) -> None:
        from sparkmpi_dl.launch.spark import (NotEnoughSlots, _driver_host, available_slots,
                                              spark_context)

        if num_proc < 1:
            raise ValueError(f"ResidentRanks needs num_proc >= 1, got {num_proc}")
        if placement not in ("auto", "tasks", "local"):
            raise ValueError(f"placement must be 'auto', 'tasks' or 'local', not {placement!r}")
        self.sc = spark_context(spark, master)
        assert self.sc.master is not None  # every running SparkContext has one
        local_master = self.sc.master.startswith("local")
        # a cluster's executors register a while after the application starts
        deadline = time.monotonic() + (0.0 if local_master else slot_wait_s)
        slots = available_slots(self.sc)
        while slots < num_proc + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            slots = available_slots(self.sc)
        if placement == "auto":
            placement = "tasks" if slots >= num_proc + 1 or not local_master else "local"
            if placement == "local":
                print(f"sparkmpi-dl: {self.sc.master} offers {slots} task slots, too few for "
                      f"{num_proc} resident ranks and the jobs that feed them: the ranks run "
                      f"as local MPI processes beside Spark", flush=True)
        if placement == "tasks" and slots < num_proc + 1:
            raise NotEnoughSlots(
                f"{num_proc} resident ranks need {num_proc + 1} task slots ({num_proc} held by "
                f"the ranks, at least 1 for the jobs that feed them) but {self.sc.master} offers "
                f"{slots}: use local[{num_proc + 2}] (or more executors), or fewer ranks")
        self.placement = placement
        self.num_proc = num_proc
        self.start_timeout = start_timeout
        self.results: list[Any] | None = None
        self.last_feed: dict[str, float] = {}
        """Where the last feed's time went: ``deliver_s`` (the Spark job that pushed the
        partitions to the ranks), ``ranks_s`` (from "go" to the last rank's reply)."""
        self._token = secrets.token_hex(16)
        self._server = socket.create_server((_driver_host(self.sc, bind_host), 0))
        self._address = self._server.getsockname()[:2]
        self._ranks: list[socket.socket] = []
        self._data: list[tuple[str, int]] = []
        self._seq = 0
        self._error: BaseException | None = None
        self._closed = False
        self._connect_lock = threading.Lock()
        self._feed_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run_job, name="sparkmpi-resident-ranks", daemon=True,
            args=(fn, tuple(args), dict(kwargs or {}), timeout, env, output))
        self._thread.start()

    # ------------------------------------------------------------ the MPI job
    def _run_job(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 timeout: float | None, env: dict[str, str] | None, output: Any) -> None:
        from sparkmpi_dl.launch.local import run_local
        from sparkmpi_dl.launch.spark import run

        rank_args = (fn, self._address, self._token, args, kwargs)
        try:
            if self.placement == "tasks":
                self.results = run(serve_rank, self.num_proc, spark=self.sc, env=env,
                                   output=output, args=rank_args,
                                   start_timeout=self.start_timeout, timeout=timeout)
            else:
                self.results = run_local(serve_rank, self.num_proc, env=env, output=output,
                                         args=rank_args, start_timeout=self.start_timeout,
                                         timeout=timeout)
        except BaseException as err:  # noqa: BLE001 - reported by the next feed/close
            self._error = err
        finally:
            self._server.close()  # nothing more will connect; wakes a waiting accept

    def _failure(self, what: str) -> ResidentRanksFailed:
        """The job's own error (a rank's traceback) once its thread has ended."""
        self._thread.join(timeout=30)
        err = self._error
        if err is None:
            return ResidentRanksFailed(f"resident ranks: {what}")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        failed = ResidentRanksFailed(f"resident ranks failed ({what}): {first}")
        failed.__cause__ = err
        return failed

    def wait_ready(self) -> None:
        """Return once every rank has started and connected (the first feed waits anyway);
        raises :class:`ResidentRanksFailed` if the job ends or ``start_timeout`` passes."""
        with self._connect_lock:
            self._connect()

    def _connect(self) -> None:
        if len(self._ranks) == self.num_proc:
            return
        deadline = time.monotonic() + self.start_timeout
        hellos: dict[int, tuple[socket.socket, tuple[str, int]]] = {}
        while len(hellos) < self.num_proc:
            if not self._thread.is_alive():
                raise self._failure(f"the job ended before every rank connected to "
                                    f"{self._address[0]}:{self._address[1]}")
            if time.monotonic() > deadline:
                raise ResidentRanksFailed(f"resident ranks: only {len(hellos)} of {self.num_proc} "
                                          f"ranks connected within {self.start_timeout:.0f} s")
            ready, _, _ = select.select([self._server], [], [], POLL_S)
            if not ready:
                continue
            try:
                conn, _ = self._server.accept()
                conn.settimeout(30)
                hello = recv_message(conn)
                conn.settimeout(None)
            except (OSError, EOFError, ValueError):
                continue
            if not isinstance(hello, dict) or hello.get("token") != self._token:
                conn.close()
                continue
            hellos[int(hello["rank"])] = (conn, tuple(hello["data"]))
        self._ranks = [hellos[r][0] for r in range(self.num_proc)]
        self._data = [hellos[r][1] for r in range(self.num_proc)]

    # ------------------------------------------------------------ feeding
    def feed(self, data: DataFrame | RDD[Any] | None = None, message: Any = None) -> list[Any]:
        """Hand ``data``'s partitions to the ranks (partition p to rank p % num_proc) with
        ``message``; every rank's reply, ordered by rank. ``data=None`` sends the message only."""
        with self._feed_lock:  # one feed at a time: replies are matched by order
            return self._feed(data, message)

    def _feed(self, data: DataFrame | RDD[Any] | None, message: Any) -> list[Any]:
        if self._closed:
            raise ResidentRanksFailed("resident ranks: feed() after close()")
        self.wait_ready()
        started = time.monotonic()
        self._seq += 1
        seq, n = self._seq, self.num_proc
        order: dict[str, Any] = {"seq": seq, "message": message, "kind": "none", "parts": []}
        acks: list[int] = []
        if isinstance(data, DataFrame):
            from sparkmpi_dl.dataplane.driver import arrow_schema

            schema = arrow_schema(data)
            order.update(kind="table", schema=schema.serialize().to_pybytes())
            rows = data.mapInArrow(_table_sender(seq, self._data, self._token, schema), ACK_SCHEMA)
            acks = [row.part for row in self._spark_job(rows.collect)]
        elif isinstance(data, RDD):
            order["kind"] = "records"
            sender = _record_sender(seq, self._data, self._token)
            acks = self._spark_job(data.mapPartitionsWithIndex(sender).collect)
        elif data is not None:
            raise TypeError(f"feed() takes a DataFrame, an RDD or None, not {type(data).__name__}")
        delivered = time.monotonic()
        for rank, conn in enumerate(self._ranks):
            self._send(conn, {**order, "parts": sorted(p for p in acks if p % n == rank)})
        replies = [self._receive(rank, seq) for rank in range(n)]
        self.last_feed = {"deliver_s": delivered - started, "ranks_s": time.monotonic() - delivered}
        return replies

    def _spark_job(self, action: Callable[[], list[_T]]) -> list[_T]:
        if not self._thread.is_alive():
            raise self._failure("before the feed")
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - a dead rank makes its feed task fail
            if not self._thread.is_alive():
                raise self._failure("during the feed") from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ResidentRanksFailed(f"resident ranks: the feed job failed: {first}") from None

    def _send(self, conn: socket.socket, order: dict[str, Any]) -> None:
        try:
            send_message(conn, order)
        except OSError:
            raise self._failure("a rank closed its connection") from None

    def _receive(self, rank: int, seq: int) -> Any:
        conn = self._ranks[rank]
        while True:
            ready, _, _ = select.select([conn], [], [], POLL_S)
            if ready:
                break
            if not self._thread.is_alive():
                raise self._failure(f"rank {rank} did not answer feed {seq}")
        try:
            answer = recv_message(conn)
        except (EOFError, OSError):
            raise self._failure(f"rank {rank} did not answer feed {seq}") from None
        if answer.get("seq") != seq:
            raise ResidentRanksFailed(f"resident ranks: rank {rank} answered feed "
                                      f"{answer.get('seq')} while feed {seq} was due")
        return answer["reply"]

    # ------------------------------------------------------------ the end
    def close(self, timeout: float | None = None) -> list[Any]:
        """End every rank's feed and wait for ``fn`` to return; its return values by rank."""
        if not self._closed:
            self._closed = True
            for conn in self._ranks:
                try:
                    send_message(conn, {"close": True})
                except OSError:
                    pass
            # ranks never accepted (no feed came) see their connection reset or refused,
            # which ends their feed as a close would
            self._server.close()
        self._thread.join(timeout)
        for conn in self._ranks:
            conn.close()
        if self._thread.is_alive():
            raise ResidentRanksFailed(f"resident ranks: still running {timeout} s after close()")
        if self._error is not None or self.results is None:
            raise self._failure("at close")
        return self.results

    def __enter__(self) -> "ResidentRanks":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:  # already failing: end the feed without waiting for, or raising, more
            self._closed = True
            self._server.close()
            for conn in self._ranks:
                conn.close()


def _connect_rank(address: tuple[str, int], header: bytes) -> socket.socket:
    sock = socket.create_connection(address, timeout=120)
    sock.sendall(header)
    return sock


def _await_ack(sock: socket.socket, what: str) -> None:
    sock.shutdown(socket.SHUT_WR)
    if sock.recv(1) != ACK:
        raise RuntimeError(f"{what}: the rank did not acknowledge the data")


def _header(token: str, seq: int, part: int, kind: str) -> bytes:
    import json

    return (json.dumps({"token": token, "seq": seq, "part": part, "kind": kind}) + "\n").encode()


def _table_sender(seq: int, ranks: list[tuple[str, int]], token: str,
                  schema: pa.Schema) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The feed task: stream this partition's Arrow batches to its rank, then acknowledge."""
    def task(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        assert context is not None  # set in every Spark task
        part = context.partitionId()
        rows = 0
        with _connect_rank(ranks[part % len(ranks)], _header(token, seq, part, "table")) as sock:
            with sock.makefile("wb") as out, pa.ipc.new_stream(out, schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            _await_ack(sock, f"feed {seq} partition {part}")
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [rows]},
                                         schema=pa.schema([("part", pa.int64()), ("rows", pa.int64())]))
    return task


def _record_sender(seq: int, ranks: list[tuple[str, int]],
                   token: str) -> Callable[[int, Iterable[Any]], Iterator[int]]:
    def task(part: int, records: Iterable[Any]) -> Iterator[int]:
        import pickle

        with _connect_rank(ranks[part % len(ranks)], _header(token, seq, part, "records")) as sock:
            with sock.makefile("wb") as out:
                pickle.dump(list(records), out, protocol=pickle.HIGHEST_PROTOCOL)
            _await_ack(sock, f"feed {seq} partition {part}")
        yield part
    return task
