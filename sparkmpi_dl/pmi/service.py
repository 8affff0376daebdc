"""The job service the driver hosts: PMI for the MPI processes, a control channel for tasks.

One TCP port serves both kinds of connection. Each starts with the authenticated hello of
``auth.py``; ``role=pmi`` connections then speak PMI (``session.py``) and are handed to MPI
as ``PMI_FD``; ``role=ctl`` connections carry JSON lines between the launching task and the
driver: the rank's environment (sent once every rank has reported its host), its output
lines, its exit status, and the order to kill the rank when another one failed.

With ``allow_plain_pmi=True`` a bare MPICH client started with ``PMI_PORT``/``PMI_ID`` may
join without a secret (for MPI programs started outside the project's launchers).

The port is open to anyone who can reach it, so what an unauthenticated peer can cost is
bounded: at most ``max_unauthenticated`` connections may wait in the handshake (a newer one
pushes out the oldest, so a flood cannot lock out a rank that answers at once), and refusals
go to a bounded, rate-limited :class:`~sparkmpi_dl.pmi.refusals.RefusalLog`.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Coroutine

from sparkmpi_dl.pmi import auth
from sparkmpi_dl.pmi.keepalive import keep_alive
from sparkmpi_dl.pmi.mapping import local_ranks
from sparkmpi_dl.pmi.refusals import RefusalLog
from sparkmpi_dl.pmi.session import PmiSession, ProtocolViolation
from sparkmpi_dl.errors import FailureReport
from sparkmpi_dl.pmi.state import EpochState
from sparkmpi_dl.pmi.wire import MAX_MESSAGE_BYTES, Message, WireError, format_v1, parse_v1

log = logging.getLogger("sparkmpi_dl.pmi")

EnvProvider = Callable[[int, list[str]], dict[str, str]]
"""(rank, hosts) -> extra environment for that rank; hosts[r] is the host of rank r."""
OutputSink = Callable[[int, str, str], None]
"""(rank, stream, line) for every output line a rank prints."""

HANDSHAKE_TIMEOUT_S = 10.0
CTL_LINE_LIMIT = 1 << 20
MIN_UNAUTHENTICATED = 128
"""Default cap on connections waiting in the handshake: this, or 4 per rank if more."""
NO_FINALIZE_GRACE_S = 5.0
"""How long a rank whose PMI connection closed before MPI_Finalize has to report its exit."""
TIMEOUT_EXIT_CODE = 124
"""Exit code of a job ended by its timeout (as GNU timeout reports one)."""
PLAIN_PMI_REFUSAL = ("plain PMI_PORT clients are not enabled for this job: ranks started by "
                     "sparkmpi-dl mpirun/spark-run get an authenticated PMI_FD; a job service "
                     "for programs started elsewhere needs JobService(..., allow_plain_pmi=True)")


def base_rank_env(job: str, epoch: int, rank: int, hosts: list[str]) -> dict[str, str]:
    """The environment contract every rank gets (PMI_FD is added by the launching task)."""
    size = len(hosts)
    local_rank, local_size = local_ranks(hosts)[rank]
    return {
        "PMI_RANK": str(rank), "PMI_SIZE": str(size), "PMIX_RANK": str(rank),
        "PMI_HOSTNAME": hosts[rank],
        "MPI_LOCALRANKID": str(local_rank), "MPI_LOCALNRANKS": str(local_size),  # as Hydra sets
        "SPARKMPI_JOB": job, "SPARKMPI_EPOCH": str(epoch),
        "SPARKMPI_RANK": str(rank), "SPARKMPI_SIZE": str(size),
        "SPARKMPI_LOCAL_RANK": str(local_rank), "SPARKMPI_LOCAL_SIZE": str(local_size),
        "SPARKMPI_HOST": hosts[rank],
    }


def check_bind_host(host: str, allow_wildcard: bool) -> None:
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified and not allow_wildcard:
        raise ValueError(f"refusing to bind the job service to {host!r} (all interfaces): "
                         "pass the driver's address, or allow_wildcard=True if you mean it")


@dataclass
class JobOutcome:
    """How an epoch ended: its first failure, or None when every rank exited 0."""

    epoch: int
    failure: FailureReport | None


class JobService:
    """Hosts one job's PMI service and control channel in a background event loop."""

    def __init__(self, size: int, *, host: str = "127.0.0.1", port: int = 0,
                 secret: str | None = None, job_id: str | None = None,
                 env_provider: EnvProvider | None = None, output: OutputSink | None = None,
                 allow_plain_pmi: bool = False, allow_wildcard: bool = False,
                 start_timeout: float = 60.0,
                 on_failure: Callable[[FailureReport], None] | None = None,
                 timeout: float | None = None, max_unauthenticated: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"a job needs at least one rank, got size={size}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"a job timeout must be a positive number of seconds, got {timeout!r}")
        check_bind_host(host, allow_wildcard)
        self.size, self.host, self.port = size, host, port
        self.secret = secret or auth.new_secret()
        self.job_id = job_id or f"smpi-{uuid.uuid4().hex[:10]}"
        self.env_provider, self.output = env_provider, output
        self.allow_plain_pmi, self.start_timeout = allow_plain_pmi, start_timeout
        self.on_failure = on_failure
        self.timeout = timeout
        self.max_unauthenticated = max_unauthenticated or max(MIN_UNAUTHENTICATED, 4 * size)
        self.published_names: dict[str, str] = {}
        self.refusals = RefusalLog(log, f"job {self.job_id}")
        self._pending: OrderedDict[asyncio.Task[Any], object] = OrderedDict()  # task -> peer
        self._expired: FailureReport | None = None
        self.epochs: dict[int, EpochState] = {}
        self.current: EpochState | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sparkmpi-job-service",
                                        daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finished = threading.Event()

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> "JobService":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)
        log.info("job %s: service for %d ranks on %s:%d", self.job_id, self.size, self.host, self.port)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port,
                                                  limit=MAX_MESSAGE_BYTES, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.timeout is not None:
            self._spawn(self._job_deadline(self.timeout))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self) -> None:
        """Close the port and every connection; safe to call twice."""
        if not self._thread.is_alive():
            return
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.refusals.flush()

    def __enter__(self) -> "JobService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> JobOutcome | None:
        """Block until the current epoch finished (all exited, or a failure); None on timeout."""
        if not self._finished.wait(timeout):
            return None
        return self.outcome()

    def outcome(self) -> JobOutcome | None:
        state = self.current
        if state is None:
            return JobOutcome(-1, self._expired) if self._expired else None
        return JobOutcome(state.epoch, state.failure or self._expired)

    def abort(self, reason: str) -> None:
        """Stop every rank of the current epoch (e.g. on Ctrl-C)."""
        state = self.current
        if state is not None:
            asyncio.run_coroutine_threadsafe(self.fail(state, -1, reason, 130), self._loop).result(10)

    def rank_processes(self) -> dict[int, tuple[str, int]]:
        """(host, pid) of each rank's process in the current epoch, as its task reported."""
        return dict(self.current.processes) if self.current else {}

    def failure_of(self, epoch: int | None = None) -> FailureReport | None:
        state = self.current if epoch is None else self.epochs.get(epoch)
        return state.failure if state and state.failure else self._expired

    # ---- epochs --------------------------------------------------------------------
    def _epoch(self, epoch: int) -> EpochState | None:
        """The state for `epoch`, starting it if it is new; None for a stale epoch."""
        if self.current is not None and epoch < self.current.epoch:
            return None
        if self.current is None or epoch > self.current.epoch:
            if self.current is not None:
                self._abandon(self.current)
            state = EpochState(epoch, f"{self.job_id}-e{epoch}", self.size)
            self.epochs[epoch] = state
            self.current = state
            self._finished.clear()
            self._spawn(self._start_deadline(state))
        return self.current

    def _abandon(self, state: EpochState) -> None:
        log.info("job %s: epoch %d replaced by a retry; closing its connections", self.job_id, state.epoch)
        for conn in list(state.ctl.values()) + list(state.pmi.values()):
            conn.writer.close()

    async def _start_deadline(self, state: EpochState) -> None:
        """Fail the epoch if not every rank has joined within start_timeout."""
        if await state.wait_for(lambda: len(state.ctl) == state.size or state.failure is not None
                                or (state.all_hosts_known and not state.ctl), self.start_timeout):
            return
        missing = sorted(set(range(state.size)) - set(state.ctl))
        await self.fail(state, missing[0] if missing else -1,
                        f"did not join within {self.start_timeout:.0f} s "
                        f"(joined {len(state.ctl)} of {state.size}; missing ranks {missing})", 1)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- failure -------------------------------------------------------------------
    async def _job_deadline(self, timeout: float) -> None:
        """End the job, whatever it is doing, once it has run for ``timeout`` seconds."""
        await asyncio.sleep(timeout)
        state = self.current
        if state is not None and state.finished:
            return
        reason = f"timed out after {timeout:g} s (the job's timeout); every rank was stopped"
        self._expired = FailureReport(-1, reason, TIMEOUT_EXIT_CODE)
        if state is not None:
            await self.fail(state, -1, reason, TIMEOUT_EXIT_CODE)
            return
        log.error("job %s: %s (no rank had joined)", self.job_id, reason)  # e.g. tasks never scheduled
        self._finished.set()
        if self.on_failure is not None:
            self._loop.run_in_executor(None, self.on_failure, self._expired)

    async def fail(self, state: EpochState, rank: int, reason: str, exit_code: int) -> None:
        """Record the epoch's first failure and stop every other rank of it.

        ``rank`` is -1 for a failure of the whole job (timeout, interruption)."""
        if state.failure is not None:
            return
        tail = tuple(state.stderr_tail(rank)) if rank >= 0 else ()
        state.failure = FailureReport(rank, reason, exit_code, tail)
        what = f"rank {rank} {reason}" if rank >= 0 else reason
        log.error("job %s epoch %d: %s", self.job_id, state.epoch, what)
        for other, channel in state.ctl.items():
            if other != rank:
                await channel.send({"t": "kill", "reason": what})
        for session in state.pmi.values():
            session.writer.close()
        self._finished.set()
        await state.notify()
        if self.on_failure is not None:
            self._loop.run_in_executor(None, self.on_failure, state.failure)

    def _refuse_reason(self, hello: auth.Hello, state: EpochState | None) -> str | None:
        if self._expired is not None:
            return f"the job is over: {self._expired.reason}"
        if hello.job != self.job_id:
            return f"unknown job {hello.job!r}"
        if state is None:
            return f"stale epoch {hello.epoch} (current is {self.current.epoch if self.current else '?'})"
        if not 0 <= hello.rank < self.size:
            return f"rank {hello.rank} is outside 0..{self.size - 1}"
        table = state.ctl if hello.role == "ctl" else state.pmi
        if hello.rank in table:
            return f"rank {hello.rank} already joined (role {hello.role}) in epoch {hello.epoch}"
        if state.failure is not None:
            return f"epoch {hello.epoch} already failed: {state.failure.reason}"
        return None

    # ---- connections ---------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection callback runs as a task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        peer = writer.get_extra_info("peername")
        self._admit(task, peer)
        try:
            first = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT_S)
            msg = parse_v1(first.decode(errors="replace"))
            if msg.cmd == auth.HELLO:
                await self._join(msg, reader, writer, peer)
            elif msg.cmd == "initack" and self.allow_plain_pmi:
                await self._join_plain(msg, reader, writer, peer)
            elif msg.cmd == "initack":
                await self._refuse(writer, peer, PLAIN_PMI_REFUSAL)
            else:
                await self._refuse(writer, peer, f"expected {auth.HELLO}, got cmd={msg.cmd}")
        except asyncio.TimeoutError:
            await self._refuse(writer, peer, f"handshake not completed within {HANDSHAKE_TIMEOUT_S:.0f} s")
        except (WireError, UnicodeError) as err:
            await self._refuse(writer, peer, f"malformed handshake: {err}")
        except (ValueError, asyncio.LimitOverrunError):
            await self._refuse(writer, peer, f"handshake line longer than {MAX_MESSAGE_BYTES} bytes")
        except ProtocolViolation as err:
            self.refusals.record(f"closed: {err}", peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # peer went away, pushed out by newer connections, or the service is stopping
        except Exception as err:  # a bug must not pass silently: refuse, record and show it
            log.error("job %s: error serving %s", self.job_id, peer, exc_info=True)
            await self._refuse(writer, peer, f"internal error: {type(err).__name__}: {err}")
        finally:
            self._pending.pop(task, None)
            writer.close()

    def _admit(self, task: asyncio.Task[Any], peer: object) -> None:
        """Count a new unauthenticated connection; past the cap, drop the oldest one waiting.

        Dropping the oldest (not refusing the newest) keeps the service usable in a flood:
        a rank's launcher completes its handshake within milliseconds of connecting."""
        self._pending[task] = peer
        while len(self._pending) > self.max_unauthenticated:
            oldest, oldest_peer = self._pending.popitem(last=False)
            self.refusals.record(f"dropped: more than {self.max_unauthenticated} connections "
                                 "were waiting to authenticate", oldest_peer)
            oldest.cancel()

    def _authenticated(self) -> None:
        """The current connection proved itself (or is a permitted plain client): uncounted."""
        task = asyncio.current_task()
        if task is not None:
            self._pending.pop(task, None)

    async def _refuse(self, writer: asyncio.StreamWriter, peer: object, reason: str) -> None:
        self.refusals.record(reason, peer)
        try:
            writer.write(format_v1(auth.REFUSED, {"reason": reason}))
            await writer.drain()
        except ConnectionError:
            pass

    async def _join(self, msg: Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    peer: object) -> None:
        hello = auth.Hello.from_message(msg)
        nonce = auth.new_nonce()
        writer.write(format_v1(auth.CHALLENGE, {"nonce": nonce}))
        await writer.drain()
        answer = parse_v1((await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT_S)).decode(errors="replace"))
        if answer.cmd != auth.AUTH or not auth.mac_matches(self.secret, nonce, hello, answer.get("mac") or ""):
            await self._refuse(writer, peer, f"rank {hello.rank}: wrong or missing job secret")
            return
        self._authenticated()
        if self._expired is not None:
            await self._refuse(writer, peer, f"the job is over: {self._expired.reason}")
            return
        state = self._epoch(hello.epoch)
        reason = self._refuse_reason(hello, state)
        if reason or state is None:
            await self._refuse(writer, peer, reason or f"stale epoch {hello.epoch}")
            return
        writer.write(format_v1(auth.OK))
        await writer.drain()
        if hello.role == "ctl":
            await self._serve_ctl(state, hello, reader, writer)
        else:
            await self._serve_pmi(state, hello.rank, hello.host, reader, writer)

    async def _join_plain(self, msg: Message, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter, peer: object) -> None:
        rank = msg.require_int("pmiid")
        self._authenticated()
        state = self._epoch(self.current.epoch if self.current else 0)
        assert state is not None  # the current epoch is never stale
        reason = self._refuse_reason(auth.Hello(self.job_id, state.epoch, rank, "pmi", "?"), state)
        if reason:
            await self._refuse(writer, peer, reason)
            return
        host = peer[0] if isinstance(peer, tuple) else "localhost"
        session = PmiSession(self, state, rank, host, reader, writer)
        await session._initack(msg)
        await self._serve_pmi(state, rank, host, reader, writer, session)

    async def _serve_pmi(self, state: EpochState, rank: int, host: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, session: PmiSession | None = None) -> None:
        session = session or PmiSession(self, state, rank, host, reader, writer)
        state.pmi[rank] = session
        if rank not in state.hosts:
            state.hosts[rank] = host
            await state.notify()
        try:
            await session.serve()
        except ProtocolViolation as err:
            self.refusals.record(f"rank {rank}: PMI connection closed: {err}")
        except ConnectionError:
            pass
        if session.finalized or state.failure is not None:
            return
        if rank not in state.ctl:
            # A plain PMI client has no control channel: a lost connection is its only signal.
            await self.fail(state, rank, "lost its PMI connection before MPI_Finalize", 1)
        elif session.active:
            await self._await_exit_after_pmi_loss(state, rank)

    async def _await_exit_after_pmi_loss(self, state: EpochState, rank: int) -> None:
        """An MPI process left its PMI connection without MPI_Finalize: it has exited or is
        exiting. Its task's exit report says how (see _on_ctl_event); if none comes, the
        rank is gone from MPI all the same, and ranks still in MPI would wait for it forever."""
        if await state.wait_for(lambda: rank in state.exits or state.failure is not None,
                                NO_FINALIZE_GRACE_S):
            return
        others = state.still_in_mpi(rank)
        if others and state.failure is None and state is self.current:
            await self.fail(state, rank, "closed its PMI connection without calling MPI_Finalize "
                            f"while ranks {others} were still in the job", 1)

    async def _serve_ctl(self, state: EpochState, hello: auth.Hello, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        channel = CtlChannel(writer)
        if (sock := writer.get_extra_info("socket")) is not None:
            keep_alive(sock)  # a worker host that goes silent fails the job in seconds
        state.ctl[hello.rank] = channel
        state.hosts[hello.rank] = hello.host
        await state.notify()
        if len(state.ctl) == state.size and not state.env_sent:
            state.env_sent = True
            await self._send_environments(state)
        exited = False
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, OSError):  # OSError: ETIMEDOUT from keepalive
                break
            except asyncio.LimitOverrunError:
                await reader.read(CTL_LINE_LIMIT)
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("job %s: rank %d sent a malformed control line", self.job_id, hello.rank)
                continue
            exited |= await self._on_ctl_event(state, hello.rank, event)
        if not exited and state.failure is None and state is self.current:
            await self.fail(state, hello.rank, f"lost contact with its launching task on host "
                            f"{hello.host} (executor died, task killed or host down)", 1)

    async def _send_environments(self, state: EpochState) -> None:
        hosts = state.host_list()
        for rank, channel in state.ctl.items():
            env = base_rank_env(self.job_id, state.epoch, rank, hosts)
            if self.env_provider is not None:
                try:
                    env.update({k: str(v) for k, v in self.env_provider(rank, hosts).items()})
                except Exception as err:  # the provider is user-extensible code
                    await self.fail(state, rank, f"environment provider failed: {err!r}", 1)
                    return
            await channel.send({"t": "env", "env": env})

    async def _on_ctl_event(self, state: EpochState, rank: int, event: dict[str, Any]) -> bool:
        kind = event.get("t")
        if kind == "out":
            stream, line = event.get("stream", "stdout"), str(event.get("line", ""))
            if stream == "stderr":
                state.stderr_tail(rank).append(line)
            if self.output is not None:
                self.output(rank, stream, line)
            return False
        if kind == "started":
            state.processes[rank] = (str(event.get("host")), int(event.get("pid", -1)))
            return False
        if kind == "exit":
            code = int(event.get("code", 1))
            state.exits[rank] = code
            if code != 0 and not event.get("killed"):
                await self.fail(state, rank, event.get("reason") or f"exited with code {code}", code)
            elif not event.get("killed") and self._left_mpi_early(state, rank):
                # As Hydra does: a rank that used PMI and is gone without MPI_Finalize leaves
                # the ranks still in MPI blocked forever, so exit code 0 is not success.
                await self.fail(state, rank, "exited with code 0 without calling MPI_Finalize "
                                f"while ranks {state.still_in_mpi(rank)} were still in the job", 1)
            elif state.finished:
                self._finished.set()
            await state.notify()
            return True
        log.warning("job %s: rank %d sent unknown control event %r", self.job_id, rank, kind)
        return False

    @staticmethod
    def _left_mpi_early(state: EpochState, rank: int) -> bool:
        session = state.pmi.get(rank)
        return (session is not None and session.active and not session.finalized
                and bool(state.still_in_mpi(rank)))


class CtlChannel:
    """The driver's end of one task's control connection."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def send(self, event: dict[str, Any]) -> None:
        try:
            self.writer.write((json.dumps(event) + "\n").encode())
            await self.writer.drain()
        except ConnectionError:
            pass

