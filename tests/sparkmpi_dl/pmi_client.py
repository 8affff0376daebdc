"""A minimal PMI client over a real socket, for driving the job service in tests."""
from __future__ import annotations

import socket

from sparkmpi_dl.pmi.auth import Hello, join
from sparkmpi_dl.pmi.wire import Message, format_v1, format_v2, parse_v1, parse_v2_body


class PmiClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.file = sock.makefile("rb")

    @classmethod
    def joined(cls, service, rank: int, epoch: int = 0, role: str = "pmi",
               secret: str | None = None, host: str = "hostA") -> "PmiClient":
        hello = Hello(service.job_id, epoch, rank, role, host)
        return cls(join(service.address, secret or service.secret, hello, timeout=10))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, cmd: str, **attrs) -> Message:
        self.send_raw(format_v1(cmd, attrs))
        return self.read()

    def call2(self, cmd: str, **attrs) -> Message:
        self.send_raw(format_v2(cmd, attrs))
        return self.read2()

    def read(self) -> Message:
        line = self.file.readline()
        if not line:
            raise ConnectionError("closed")
        return parse_v1(line.decode())

    def read2(self) -> Message:
        head = self.file.read(6)
        if len(head) < 6:
            raise ConnectionError("closed")
        return parse_v2_body(self.file.read(int(head.decode().strip())).decode())

    def close(self) -> None:
        self.file.close()
        self.sock.close()
