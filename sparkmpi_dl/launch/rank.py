"""One rank, as its launching task sees it: join the job, start the process, report back.

Both launchers (Spark barrier tasks and the local ``mpirun``) call :func:`run_rank`, so the
Spark path and the local reference share every line of rank-side behaviour:

1. join the driver's job service on the control channel, reporting rank and host;
2. receive the rank's environment once every rank has joined;
3. join again as ``role=pmi`` and hand that authenticated socket to MPI as ``PMI_FD``;
4. run the rank as a fresh subprocess (MPI can be initialised once per process, and Spark
   reuses its Python workers), forwarding its output lines to the driver;
5. kill it when the driver says another rank failed or the driver goes away;
6. report the exit status; raise :class:`~sparkmpi_dl.errors.RankProcessFailed` if it was not zero.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sparkmpi_dl.errors import RankProcessFailed
from sparkmpi_dl.pmi.auth import Hello, join
from sparkmpi_dl.pmi.keepalive import keep_alive

KILL_GRACE_S = 3.0
CLOSE_DRAIN_S = 5.0  # at most, for the driver to close its end of the control channel
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RankSpec:
    """Everything a task needs to start its rank; shipped to Spark executors by pickling."""

    address: tuple[str, int]
    secret: str
    job_id: str
    argv: tuple[str, ...] = ()
    payload: bytes | None = None          # cloudpickled (fn, args, kwargs) for function mode
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    env_timeout_s: float = 120.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def exit_status(code: int) -> int:
    """A failed rank's code as a process exit status, as mpiexec reports it: 128 + signal
    for a rank killed by a signal (Popen gives -signal), else the code, never 0."""
    return 128 - code if code < 0 else (code or 1)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launching thread dies, so no rank outlives its task."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class _Control:
    """The task's end of the control channel: JSON lines, writes serialised by a lock."""

    def __init__(self, sock: socket.socket) -> None:
        keep_alive(sock)  # a driver that becomes unreachable stops the rank in seconds
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event) + "\n").encode()
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def receive(self) -> dict[str, Any] | None:
        line = self.reader.readline()
        event: dict[str, Any] | None = json.loads(line) if line else None
        return event

    def close(self) -> None:
        """Half-close, read what the driver still sends until it closes its end too, then
        close. A socket closed with unread data in it (the driver's "kill", sent while this
        rank was finishing) sends a reset, and the driver's kernel then drops what this side
        sent last and the driver had not read yet: a rank's last output lines, its exit."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(CLOSE_DRAIN_S)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading the channel
        except OSError:
            pass
        self.reader.close()
        self.sock.close()


def _rank_argv(spec: RankSpec, workdir: Path) -> tuple[list[str], Path | None]:
    if spec.payload is None:
        return list(spec.argv), None
    payload, result = workdir / "payload.pkl", workdir / "result.pkl"
    payload.write_bytes(spec.payload)
    return [sys.executable, "-m", "sparkmpi_dl.launch.entry", str(payload), str(result)], result


OUTPUT_CHUNK_CHARS = 8192
"""Longer output lines (a progress bar redrawn with \\r, a dumped array) travel in pieces,
well under the job service's 64 KiB line limit."""


def _pump(stream: IO[bytes], name: str, control: _Control, tail: deque[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        if name == "stderr":
            tail.append(line[-OUTPUT_CHUNK_CHARS:])
        for start in range(0, max(len(line), 1), OUTPUT_CHUNK_CHARS):
            control.send({"t": "out", "stream": name, "line": line[start:start + OUTPUT_CHUNK_CHARS]})
    stream.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the rank's process group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_rank(spec: RankSpec, rank: int, epoch: int,
             extra_env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> bytes | None:
    """Run one rank to completion; returns the pickled result in function mode.

    ``pass_fds`` are descriptors the rank inherits under the same numbers (the data plane's
    partition file, named in ``SPARKMPI_DATA`` as ``/dev/fd/N``).

    ``extra_env`` holds what only the task knows (e.g. the GPUs Spark assigned it).
    """
    host = socket.gethostname()
    control = _Control(join(spec.address, spec.secret, Hello(spec.job_id, epoch, rank, "ctl", host)))
    try:
        first = control.receive()
        if first is None or first.get("t") != "env":
            reason = (first or {}).get("reason", "the driver closed the control channel")
            raise RankProcessFailed(rank, 1, f"did not start: {reason}")
        pmi = join(spec.address, spec.secret, Hello(spec.job_id, epoch, rank, "pmi", host))
        pmi_fd = pmi.detach()
        with tempfile.TemporaryDirectory(prefix=f"sparkmpi-rank{rank}-") as tmp:
            argv, result_path = _rank_argv(spec, Path(tmp))
            env = {**os.environ, **spec.env, **(extra_env or {}), **first["env"], "PMI_FD": str(pmi_fd),
                   "PYTHONUNBUFFERED": "1"}
            env.pop("PMI_PORT", None)
            env.pop("PMI_ID", None)
            try:
                proc = subprocess.Popen(argv, env=env, cwd=spec.cwd, pass_fds=(pmi_fd, *pass_fds),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True,
                                        preexec_fn=_die_with_parent)
            except OSError as err:
                control.send({"t": "exit", "code": 127, "reason": f"could not start {argv[0]!r}: {err}"})
                raise RankProcessFailed(rank, 127, f"could not start {argv[0]!r}: {err}") from None
            finally:
                os.close(pmi_fd)
            control.send({"t": "started", "pid": proc.pid, "host": host})
            return _supervise(proc, control, rank, result_path)
    finally:
        control.close()


def _supervise(proc: subprocess.Popen[bytes], control: _Control, rank: int, result_path: Path | None) -> bytes | None:
    tail: deque[str] = deque(maxlen=40)
    pumps = [threading.Thread(target=_pump, args=(s, n, control, tail), daemon=True)
             for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for pump in pumps:
        pump.start()
    kill_reason: list[str] = []

    def watch_driver() -> None:
        try:
            event = control.receive()
        except (OSError, ValueError):
            event = None
        if proc.poll() is not None:
            return
        kill_reason.append((event or {}).get("reason") or "lost contact with the driver")
        _stop(proc)

    threading.Thread(target=watch_driver, daemon=True).start()
    code = proc.wait()
    for pump in pumps:
        pump.join()
    if kill_reason:
        control.send({"t": "exit", "code": code, "killed": True})
        raise RankProcessFailed(rank, code, f"stopped because {kill_reason[0]}")
    control.send({"t": "exit", "code": code, "reason": describe_exit(code)})
    if code != 0:
        raise RankProcessFailed(rank, code, describe_exit(code) + ("\n" + "\n".join(tail) if tail else ""))
    if result_path is None:
        return None
    if not result_path.exists():
        raise RankProcessFailed(rank, 1, "exited 0 but wrote no result")
    return result_path.read_bytes()
