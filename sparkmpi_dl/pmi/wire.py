"""PMI wire formats: PMI-1 text lines and PMI-2 length-prefixed frames.

PMI-1 (what MPICH's simple PMI client speaks by default) is one line per message::

    cmd=put kvsname=kvs_1 key=hostname[0] value=node1\n

Values end at a space; a backslash escapes the next character. PMI-2 frames are a
6-character, space-padded decimal length followed by ``cmd=NAME;key=value;...;`` (no
escapes, no newline). A PMI-2 client starts with one PMI-1 ``cmd=init pmi_version=2`` line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
"""Longest message accepted; MPICH's own client never sends more than its PMIU_MAXLINE."""

V2_LENGTH_DIGITS = 6


class WireError(ValueError):
    """A message that cannot be parsed; the text says what is wrong with it."""


@dataclass
class Message:
    """One PMI message: the command and its attributes, in order."""

    cmd: str
    attrs: dict[str, str] = field(default_factory=dict)
    version: int = 1

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def require(self, key: str) -> str:
        try:
            return self.attrs[key]
        except KeyError:
            raise WireError(f"cmd={self.cmd} lacks the attribute {key!r}") from None

    def require_int(self, key: str) -> int:
        value = self.require(key)
        try:
            return int(value)
        except ValueError:
            raise WireError(f"cmd={self.cmd}: {key}={value!r} is not an integer") from None


def _is_key_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_-/"


def parse_v1(line: str) -> Message:
    """Parse one PMI-1 line (without or with its trailing newline)."""
    text = line.rstrip("\n")
    if not text.startswith("cmd="):
        raise WireError(f"a PMI-1 message must start with 'cmd=', got {text[:40]!r}")
    attrs: dict[str, str] = {}
    cmd = ""
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and _is_key_char(text[i]):
            i += 1
        key = text[start:i]
        if not key:
            raise WireError(f"expected a key at column {i} of {text[:60]!r}")
        value = ""
        if i < n and text[i] == "=":
            i += 1
            chars: list[str] = []
            while i < n and text[i] != " ":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            value = "".join(chars)
        elif i < n and text[i] != " ":
            raise WireError(f"invalid character {text[i]!r} after key {key!r}")
        if key == "cmd":
            cmd = value
        else:
            attrs[key] = value
    if not cmd:
        raise WireError("empty command name")
    return Message(cmd, attrs, version=1)


def _escape_v1(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ").replace("\n", "\\ ")


def format_v1(cmd: str, attrs: dict[str, object] | None = None) -> bytes:
    parts = [f"cmd={cmd}"]
    for key, value in (attrs or {}).items():
        parts.append(f"{key}={_escape_v1(str(value))}")
    return (" ".join(parts) + "\n").encode()


def parse_v2_body(body: str) -> Message:
    """Parse the part of a PMI-2 frame after its 6-character length."""
    if not body.startswith("cmd="):
        raise WireError(f"a PMI-2 frame must start with 'cmd=', got {body[:40]!r}")
    attrs: dict[str, str] = {}
    cmd = ""
    for item in body.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not key or not all(_is_key_char(c) for c in key):
            raise WireError(f"invalid key {key[:40]!r} in PMI-2 frame")
        if key == "cmd":
            cmd = value
        else:
            attrs[key] = value if sep else ""
    if not cmd:
        raise WireError("empty command name")
    return Message(cmd, attrs, version=2)


def format_v2(cmd: str, attrs: dict[str, object] | None = None) -> bytes:
    body = f"cmd={cmd};" + "".join(f"{k}={v};" for k, v in (attrs or {}).items())
    for ch in body:
        if ch == "\n":
            raise WireError("PMI-2 values cannot contain newlines")
    data = body.encode()
    if len(data) >= 10**V2_LENGTH_DIGITS:
        raise WireError(f"PMI-2 frame of {len(data)} bytes is too long")
    return f"{len(data):{V2_LENGTH_DIGITS}d}".encode() + data


def format_reply(version: int, cmd: str, attrs: dict[str, object] | None = None) -> bytes:
    return format_v1(cmd, attrs) if version == 1 else format_v2(cmd, attrs)
