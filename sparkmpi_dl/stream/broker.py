"""The embedded message broker: a real ``redis-server`` on a free loopback port.

Redis Streams play the part Kafka topics play in the seed papers (ordered, persistent,
addressed by entry ids). Nothing here is needed when the user has a Redis of their own
(``--broker redis://HOST:PORT``); otherwise :func:`resolve` finds the broker an earlier
``sparkmpi-dl stream ...`` command started (recorded in ``broker.json`` under the broker
home) or starts one there, with AOF persistence on, so ``stream publish`` and
``stream recon`` meet without being told where. :func:`stop` stops only a broker this
project started (the record holds its pid and the server confirms it).

Broker home: ``$SPARKMPI_BROKER_HOME``, else ``~/.cache/sparkmpi-dl/broker``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

RECORD = "broker.json"
DEFAULT_PORT = 6379


class BrokerError(RuntimeError):
    """The broker cannot be reached, started or stopped; the message is one line."""


@dataclass
class Broker:
    """A Redis server in use: its URL, and (when this project started it) pid and folder."""

    url: str
    pid: int | None = None
    data_dir: str | None = None
    started_here: bool = False  # started by this process (stop it when done)

    def client(self, **kwargs: Any) -> Any:
        return connect(self.url, **kwargs)

    def stop(self) -> None:
        """Stop the server if this project started it; a user's own Redis is left alone."""
        if self.pid is not None:
            _shutdown(self)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            self.stop()


def broker_home() -> Path:
    """Where the embedded broker keeps its record, AOF files and log."""
    env = os.environ.get("SPARKMPI_BROKER_HOME")
    return Path(env) if env else Path.home() / ".cache" / "sparkmpi-dl" / "broker"


def parse_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST:PORT[/DB]`` -> (host, port, db); ValueError names what is wrong."""
    parsed = urlparse(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        raise ValueError(f"broker URL must look like redis://HOST:PORT, got {url!r}")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError as err:
        raise ValueError(f"broker URL {url!r}: bad port ({err})") from None
    path = parsed.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"broker URL {url!r}: the path must be a database number")
    return parsed.hostname, port, int(path or 0)


def connect(url: str, timeout_s: float = 5.0, check: bool = True, retries: int = 3) -> Any:
    """A ``redis.Redis`` client for ``url``; with ``check``, fail in one line if unreachable."""
    try:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
    except ImportError:
        raise BrokerError("the Python package 'redis' is missing: pip install redis "
                          "(or 'pip install sparkmpi-dl[stream]')") from None
    host, port, db = parse_url(url)
    client = redis.Redis(host=host, port=port, db=db, socket_connect_timeout=timeout_s,
                         socket_timeout=max(timeout_s, 30.0),
                         retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries))
    if check:
        try:
            client.ping()
        except redis.RedisError as err:
            raise BrokerError(f"cannot reach the broker at {url}: {err}") from None
    return client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(data_dir: str | Path, port: int | None = None, timeout_s: float = 15.0) -> Broker:
    """Start ``redis-server`` on 127.0.0.1 (a free port unless given) with AOF in ``data_dir``.

    The server runs in its own session, so it outlives the command that started it
    (``stream publish`` leaves it for ``stream recon``); call ``Broker.stop()`` to end it.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise BrokerError("redis-server is not installed: run scripts/setup.sh "
                          "(apt-get install -y redis-server), or pass --broker redis://HOST:PORT")
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a free port can be taken between the probe and the bind
        chosen = port or _free_port()
        log = data / "redis.log"
        argv = [exe, "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(data),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--daemonize", "no", "--logfile", str(log), "--protected-mode", "yes"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        broker = Broker(f"redis://127.0.0.1:{chosen}", proc.pid, str(data), started_here=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                connect(broker.url, timeout_s=1.0, retries=0).ping()
                broker._proc = proc  # type: ignore[attr-defined]  # reaped by stop()
                return broker
            except BrokerError:
                time.sleep(0.05)
        if proc.poll() is None:
            _kill(proc.pid)
            proc.wait()
            raise BrokerError(f"redis-server on port {chosen} did not answer within "
                              f"{timeout_s:.0f} s (log: {log})")
        proc.wait()
        if port is not None or attempt == 2:
            raise BrokerError(f"redis-server exited at start (code {proc.returncode}): "
                              f"{_tail(log)} (log: {log})")
    raise AssertionError("unreachable")


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "empty log"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _server_pid(url: str) -> int | None:
    try:
        return int(connect(url, timeout_s=1.0, retries=0).info("server")["process_id"])
    except Exception:  # noqa: BLE001 - unreachable or not a Redis: no pid
        return None


def _shutdown(broker: Broker, timeout_s: float = 10.0) -> None:
    pid = broker.pid
    if pid is None or not _alive(pid):
        return
    if _server_pid(broker.url) == pid:
        try:  # SHUTDOWN flushes the AOF; the connection drops when it succeeds
            connect(broker.url, timeout_s=2.0, retries=0).shutdown(nosave=True)
        except Exception:  # noqa: BLE001 - redis-py raises ConnectionError on success
            pass
    proc = getattr(broker, "_proc", None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _alive(pid):
            return
        time.sleep(0.05)
    _kill(pid)
    if proc is not None:
        proc.wait()


def record(broker: Broker, home: Path | None = None) -> Path:
    """Write ``broker.json`` so later commands find this broker."""
    path = (home or broker_home()) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in asdict(broker).items() if k != "started_here"}
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def find_recorded(home: Path | None = None) -> Broker | None:
    """The recorded broker if it is still running (same pid behind the same port)."""
    path = (home or broker_home()) / RECORD
    try:
        data = json.loads(path.read_text())
        broker = Broker(str(data["url"]), data.get("pid"), data.get("data_dir"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if broker.pid is None or _server_pid(broker.url) != broker.pid:
        return None
    return broker


def resolve(url: str | None, *, start_if_missing: bool = True,
            say: Callable[[str], None] = print) -> Broker:
    """The broker a command should use: ``url`` if given, else the recorded one, else a
    new embedded one (started, recorded, and left running for the next command)."""
    if url:
        parse_url(url)
        connect(url)
        return Broker(url)
    home = broker_home()
    found = find_recorded(home)
    if found is not None:
        return found
    if not start_if_missing:
        raise BrokerError(f"no broker given and none recorded in {home / RECORD}: "
                          "pass --broker redis://HOST:PORT or run 'sparkmpi-dl stream broker start'")
    broker = start(home / "data")
    record(broker, home)
    broker.started_here = False  # it serves later commands; 'stream broker stop' ends it
    say(f"started broker {broker.url} (data {broker.data_dir}; "
        f"stop it with: sparkmpi-dl stream broker stop)")
    return broker


def stop_recorded(home: Path | None = None) -> Broker | None:
    """Stop the recorded broker (if running) and remove the record; returns what was stopped."""
    home = home or broker_home()
    broker = find_recorded(home)
    if broker is not None:
        _shutdown(broker)
    try:
        (home / RECORD).unlink()
    except FileNotFoundError:
        pass
    return broker
