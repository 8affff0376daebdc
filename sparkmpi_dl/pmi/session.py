"""One MPI process's PMI conversation: PMI-1 lines, or PMI-2 frames after a v2 init.

Every request gets a reply. A command the service does not implement gets an error reply
naming it, because a PMI client waits for an answer forever.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Protocol

from sparkmpi_dl.pmi.mapping import process_mapping
from sparkmpi_dl.pmi.refusals import RefusalLog
from sparkmpi_dl.pmi.state import EpochState
from sparkmpi_dl.pmi.wire import (MAX_MESSAGE_BYTES, V2_LENGTH_DIGITS, Message, WireError,
                                  format_reply, parse_v1, parse_v2_body)

log = logging.getLogger("sparkmpi_dl.pmi")

KVSNAME_MAX, KEYLEN_MAX, VALLEN_MAX = 256, 64, 1024
HOSTS_WAIT_S = 60.0
NOT_SUPPORTED_SPAWN = ("dynamic process creation (MPI_Comm_spawn) is not supported by "
                       "sparkmpi_dl: launch all ranks up front")


class ProtocolViolation(Exception):
    """The peer sent something that ends the conversation (oversized or unframeable)."""


class SessionHost(Protocol):
    """What a session needs from the job service that owns it (JobService provides it; the
    Protocol keeps this module from importing the service, which imports this one)."""

    published_names: dict[str, str]  # MPI_Publish_name: service name -> port
    refusals: RefusalLog

    async def fail(self, state: EpochState, rank: int, reason: str, exit_code: int) -> None:
        ...


class PmiSession:
    """Serves one rank's PMI connection until finalize, disconnect or job failure."""

    def __init__(self, service: SessionHost, state: EpochState, rank: int, host: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.service, self.state, self.rank, self.host = service, state, rank, host
        self.reader, self.writer = reader, writer
        self.version = 1
        self.finalized = False
        self.active = False
        """The process has spoken PMI: it is an MPI process, and must finalize before leaving."""
        self._handlers: dict[str, Callable[[Message], Awaitable[None]]] = {
            # PMI-1
            "init": self._init, "initack": self._initack, "get_maxes": self._maxes,
            "get_appnum": self._appnum, "get_universe_size": self._universe,
            "get_my_kvsname": self._kvsname, "put": self._put, "get": self._get,
            "barrier_in": self._barrier, "finalize": self._finalize, "abort": self._abort,
            "publish_name": self._publish, "unpublish_name": self._unpublish,
            "lookup_name": self._lookup, "spawn": self._spawn,
            # PMI-2
            "fullinit": self._fullinit, "job-getid": self._kvsname, "kvs-put": self._put,
            "kvs-get": self._get, "kvs-fence": self._barrier, "info-getjobattr": self._get,
            "info-putnodeattr": self._put_node_attr, "info-getnodeattr": self._get_node_attr,
            "name-publish": self._publish, "name-unpublish": self._unpublish,
            "name-lookup": self._lookup,
        }

    # ---- framing -------------------------------------------------------------------
    async def read_message(self) -> Message | None:
        """Next request, or None at end of stream."""
        try:
            if self.version == 2:
                head = await self.reader.readexactly(V2_LENGTH_DIGITS)
                try:
                    length = int(head.decode().strip())
                except ValueError:
                    raise ProtocolViolation(f"bad PMI-2 length field {head!r}") from None
                if not 0 < length <= MAX_MESSAGE_BYTES:
                    raise ProtocolViolation(f"PMI-2 frame of {length} bytes (limit {MAX_MESSAGE_BYTES})")
                return parse_v2_body((await self.reader.readexactly(length)).decode(errors="replace"))
            line = await self.reader.readline()
        except asyncio.IncompleteReadError:
            return None
        except (asyncio.LimitOverrunError, ValueError) as err:
            if isinstance(err, WireError):
                raise
            await self._discard_rest_of_line()
            raise WireError(f"line longer than {MAX_MESSAGE_BYTES} bytes refused") from None
        if not line:
            return None
        text = line.decode(errors="replace")
        if text.startswith("mcmd="):
            return await self._read_multiline(text)
        return parse_v1(text)

    async def _discard_rest_of_line(self) -> None:
        """After an oversized line, skip to its end so the next request parses cleanly."""
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as err:
                await self.reader.readexactly(err.consumed)
            except asyncio.IncompleteReadError:
                return

    async def _read_multiline(self, first: str) -> Message:
        """PMI-1 spawn arrives as ``mcmd=spawn`` followed by key=value lines up to ``endcmd``."""
        total = len(first)
        while True:
            line = await self.reader.readline()
            total += len(line)
            if not line or total > MAX_MESSAGE_BYTES:
                raise ProtocolViolation("unterminated or oversized mcmd message")
            if line.strip() == b"endcmd":
                return Message(first.strip()[len("mcmd="):], {}, version=1)

    async def reply(self, cmd: str, attrs: dict[str, object] | None = None,
                    request: Message | None = None) -> None:
        attrs = {k: v for k, v in (attrs or {}).items() if v is not None and v != ""}
        if request is not None and request.get("thrid"):
            attrs["thrid"] = request.get("thrid")
        log.debug("PMI rank %d -> %s %s", self.rank, cmd, attrs)
        self.writer.write(format_reply(self.version, cmd, attrs))
        await self.writer.drain()

    def _response(self, request: Message, v1_name: str) -> str:
        return v1_name if self.version == 1 else f"{request.cmd}-response"

    async def error(self, request: Message | None, text: str, cmd: str | None = None) -> None:
        log.warning("PMI rank %s (epoch %s): %s", self.rank, self.state.epoch, text)
        key = "msg" if self.version == 1 else "errmsg"
        name = cmd or ("error" if self.version == 1 or request is None else f"{request.cmd}-response")
        await self.reply(name, {"rc": -1, key: text}, request)

    # ---- main loop -----------------------------------------------------------------
    async def serve(self) -> None:
        while True:
            try:
                msg = await self.read_message()
            except WireError as err:
                self.service.refusals.append(f"rank {self.rank}: {err}")
                await self.error(None, f"malformed message: {err}")
                continue
            if msg is None:
                return
            self.active = True
            log.debug("PMI rank %d <- %s %s", self.rank, msg.cmd, msg.attrs)
            handler = self._handlers.get(msg.cmd)
            if handler is None:
                await self.error(msg, f"unknown PMI command {msg.cmd!r}")
                continue
            try:
                await handler(msg)
            except WireError as err:
                await self.error(msg, str(err))
            if self.finalized and self.version == 2:
                return

    # ---- handlers ------------------------------------------------------------------
    async def _init(self, msg: Message) -> None:
        version = msg.require_int("pmi_version")
        if version not in (1, 2):
            await self.reply("response_to_init", {"rc": -1, "msg": f"PMI version {version} not supported"})
            return
        sub = 1 if version == 1 else 0
        await self.reply("response_to_init", {"pmi_version": version, "pmi_subversion": sub, "rc": 0})
        self.version = version

    async def _initack(self, msg: Message) -> None:
        await self.reply("initack", {"rc": 0})
        for key, value in (("size", self.state.size), ("rank", self.rank), ("debug", 0)):
            await self.reply("set", {key: value})

    async def _fullinit(self, msg: Message) -> None:
        await self.reply("fullinit-response", {"rank": self.rank, "size": self.state.size,
                                               "appnum": 0, "pmiverbose": 0, "rc": 0}, msg)

    async def _maxes(self, msg: Message) -> None:
        await self.reply("maxes", {"kvsname_max": KVSNAME_MAX, "keylen_max": KEYLEN_MAX,
                                   "vallen_max": VALLEN_MAX, "rc": 0})

    async def _appnum(self, msg: Message) -> None:
        await self.reply("appnum", {"appnum": 0, "rc": 0})

    async def _universe(self, msg: Message) -> None:
        await self.reply("universe_size", {"size": self.state.size, "rc": 0})

    async def _kvsname(self, msg: Message) -> None:
        if self.version == 1:
            await self.reply("my_kvsname", {"kvsname": self.state.kvsname, "rc": 0})
        else:
            await self.reply("job-getid-response", {"jobid": self.state.kvsname, "rc": 0}, msg)

    async def _put(self, msg: Message) -> None:
        key, value = msg.require("key"), msg.require("value")
        if len(key) > KEYLEN_MAX or len(value) > VALLEN_MAX:
            await self.error(msg, f"key or value too long (limits {KEYLEN_MAX}/{VALLEN_MAX})",
                             self._response(msg, "put_result"))
            return
        self.state.kvs[key] = value
        await self.reply(self._response(msg, "put_result"), {"rc": 0}, msg)

    async def _get(self, msg: Message) -> None:
        key = msg.require("key")
        name = self._response(msg, "get_result")
        if key == "PMI_process_mapping":
            if not await self.state.wait_for(lambda: self.state.all_hosts_known, HOSTS_WAIT_S):
                await self.error(msg, "hosts of all ranks not known in time", name)
                return
            value: str | None = process_mapping(self.state.host_list())
        elif key == "universeSize":
            value = str(self.state.size)
        else:
            value = self.state.kvs.get(key)
        if value is None:
            if self.version == 1:
                await self.reply(name, {"rc": -1, "msg": f"key {key} not found", "found": "FALSE"})
            else:
                await self.reply(name, {"found": "FALSE", "rc": 0}, msg)
            return
        await self.reply(name, {"value": value, "found": "TRUE", "rc": 0}, msg)

    async def _put_node_attr(self, msg: Message) -> None:
        self.state.node_attrs.setdefault(self.host, {})[msg.require("key")] = msg.require("value")
        await self.state.notify()
        await self.reply("info-putnodeattr-response", {"rc": 0}, msg)

    async def _get_node_attr(self, msg: Message) -> None:
        key = msg.require("key")
        attrs = self.state.node_attrs.setdefault(self.host, {})
        if (msg.get("wait") or "FALSE").upper() == "TRUE":
            await self.state.wait_for(lambda: key in attrs, HOSTS_WAIT_S)
        if key in attrs:
            await self.reply("info-getnodeattr-response", {"found": "TRUE", "value": attrs[key], "rc": 0}, msg)
        else:
            await self.reply("info-getnodeattr-response", {"found": "FALSE", "rc": 0}, msg)

    async def _barrier(self, msg: Message) -> None:
        self.state.barrier[self.rank] = (self, msg)
        if len(self.state.barrier) == self.state.size:
            waiting, self.state.barrier = self.state.barrier, {}
            for session, request in waiting.values():
                await session.reply(session._response(request, "barrier_out"), {"rc": 0}, request)

    async def _finalize(self, msg: Message) -> None:
        self.finalized = True
        self.state.finalized.add(self.rank)
        await self.reply(self._response(msg, "finalize_ack"), {"rc": 0}, msg)

    async def _abort(self, msg: Message) -> None:
        code = int(msg.get("exitcode") or 1)
        text = msg.get("message") or "(no message)"
        await self.service.fail(self.state, self.rank, f"called MPI_Abort (exit code {code}): {text}", code)

    async def _publish(self, msg: Message) -> None:
        service = msg.get("service") or msg.require("name")
        port = msg.require("port")
        name = self._response(msg, "publish_result")
        if service in self.service.published_names:
            await self.error(msg, f"service name {service!r} is already published", name)
            return
        self.service.published_names[service] = port
        await self.reply(name, {"rc": 0}, msg)

    async def _unpublish(self, msg: Message) -> None:
        service = msg.get("service") or msg.require("name")
        name = self._response(msg, "unpublish_result")
        if self.service.published_names.pop(service, None) is None:
            await self.error(msg, f"service name {service!r} is not published", name)
            return
        await self.reply(name, {"rc": 0}, msg)

    async def _lookup(self, msg: Message) -> None:
        service = msg.get("service") or msg.require("name")
        name = self._response(msg, "lookup_result")
        port = self.service.published_names.get(service)
        if port is None:
            await self.error(msg, f"service name {service!r} is not published", name)
            return
        await self.reply(name, {"port": port, "rc": 0}, msg)

    async def _spawn(self, msg: Message) -> None:
        await self.error(msg, NOT_SUPPORTED_SPAWN, self._response(msg, "spawn_result"))
