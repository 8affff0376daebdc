"""Starting Spark standalone daemons for tests: spark-class from the venv, logs to files."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

BIN = os.path.dirname(sys.executable)
MASTER_READY = "I have been elected leader"
WORKER_READY = "Successfully registered with master"


def free_port() -> int:
    """A TCP port free on loopback right now (for daemons sharing this machine's network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_spark_class(args: Sequence[str], log_path: Path | str, env: dict[str, str],
                      prefix: Sequence[str] = ()) -> subprocess.Popen:
    """Run ``spark-class ARGS`` (a master or worker) in its own process group, logging to a file.

    ``prefix`` wraps the command, e.g. to start it inside a network namespace.
    """
    with open(log_path, "w") as log:
        return subprocess.Popen(list(prefix) + [os.path.join(BIN, "spark-class"), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for_log(path: Path | str, text: str, timeout: float,
                 proc: subprocess.Popen | None = None) -> None:
    """Wait until ``text`` appears in the log at ``path``; fail early if ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{path} never showed {text!r}: the process exited with "
                               f"{proc.returncode}:\n" + open(path).read()[-2000:])
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout} s:\n" + open(path).read()[-2000:])


def stop_process_groups(procs: Sequence[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGTERM each process's group, then SIGKILL the groups still there after ``grace`` s."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
