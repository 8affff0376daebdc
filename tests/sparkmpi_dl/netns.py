"""Separate hosts on one machine for tests: network namespaces joined by a private bridge.

Every :class:`Host` is a network namespace with one address on a bridge. The bridge lives
in a namespace of its own, so nothing is added to (or left in) this machine's network.
Commands run on a host through :meth:`Host.command`, which also gives the process tree
its own hostname (a UTS namespace) and an ``/etc/hosts`` naming every host of the network
(a bind mount in a private mount namespace): MPICH and Spark then see distinct machines,
as they would on a real cluster. Names carry this process's pid and a random tag, so
parallel runs never collide, and namespaces a dead run left behind are removed.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

NAME_PREFIX = "smpitest"
_STALE = re.compile(rf"^{NAME_PREFIX}-(\d+)-")
_HOST_SETUP = 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"'


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def unavailable_reason() -> str | None:
    """Why this machine cannot make network namespaces for a test (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare", "mount", "hostname", "ss"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (iproute2 / util-linux)"
    probe = f"{NAME_PREFIX}-{os.getpid()}-probe{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError) as err:
        return f"cannot create a network namespace here: {err}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("netns", "exec", probe, "unshare", "--uts", "--mount", "true")
    except (RuntimeError, OSError) as err:
        return f"cannot build hosts in a network namespace here: {err}"
    finally:
        _ip("netns", "del", probe)
    return None


def netns_pids(netns: str) -> list[int]:
    """Processes living in the namespace ``netns`` (empty if it is gone)."""
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def kill_netns_processes(netns: str, timeout: float = 15.0) -> None:
    """SIGKILL every process in ``netns`` and wait until none is left."""
    deadline = time.monotonic() + timeout
    while pids := netns_pids(netns):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in namespace {netns} survived SIGKILL")
        time.sleep(0.05)


def remove_stale_namespaces() -> None:
    """Delete namespaces of this helper whose creating process no longer exists."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            kill_netns_processes(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@dataclass(frozen=True)
class Host:
    """One pretend machine: a network namespace, its address and its hostname."""

    netns: str
    hostname: str
    address: str
    hosts_file: Path

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host: in its namespace, under its hostname and /etc/hosts."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--mount",
                "sh", "-c", _HOST_SETUP, "sh", str(self.hosts_file), self.hostname, *argv]

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run a short tool (ss, ip) in this host's namespace and return its output."""
        proc = subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} on {self.hostname} failed: {proc.stderr.strip()}")
        return proc.stdout

    def pids(self) -> list[int]:
        return netns_pids(self.netns)

    def crash(self) -> None:
        """Take the host down as a crash would: every process on it SIGKILLed at once."""
        kill_netns_processes(self.netns)


class Network:
    """Hosts on one bridge, 10.77.<subnet>.<n>/24; :meth:`close` removes all of it."""

    def __init__(self, names: Sequence[str], workdir: Path) -> None:
        self.tag = f"{NAME_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.subnet = f"10.77.{secrets.randbelow(254) + 1}"
        self.switch = f"{self.tag}-sw"
        hosts_file = Path(workdir) / "hosts"
        self.hosts = {name: Host(f"{self.tag}-{name}", f"{name}-{self.tag[len(NAME_PREFIX) + 1:]}",
                                 f"{self.subnet}.{10 + i}", hosts_file)
                      for i, name in enumerate(names)}
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(
            f"{h.address} {h.hostname}\n" for h in self.hosts.values()))
        self._made: list[str] = []

    def create(self) -> "Network":
        remove_stale_namespaces()
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts.values()):
            self._add_netns(host.netns)
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
        return self

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def close(self) -> None:
        """Kill every process on every host, then delete the namespaces (and so the veths)."""
        errors = []
        for name in reversed(self._made):
            try:
                kill_netns_processes(name)
            except RuntimeError as err:
                errors.append(str(err))
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self._made.clear()
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> "Network":
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
