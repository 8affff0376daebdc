"""What a scan looks like on the wire: Redis stream layout, entry fields, Spark columns.

One scan = a **start** record (scan id, frame count, frame shape and dtype, object
geometry, probe guess and detector mask), then its **frames** (frame ``i`` goes to stream
``i % K``, as the seed sends frames to Kafka topics), then an **end** record (frames
published). Start and end go to stream 0; a publisher adds them before the first and after
the last frame, so any consistent snapshot of the streams that holds a frame also holds
its scan's start record.

Streams: ``{prefix}:frames:{k}`` for k < K; ``{prefix}:config`` (a hash) says K and the
documented backlog bound, so a consumer finds the streams from the prefix alone.

The Spark columns (:data:`SCHEMA`), also the contract for any other streaming DataFrame
fed to the online reconstruction (see README "Live reconstruction"):

=============  ===========  ===========================================================
column         type         meaning
=============  ===========  ===========================================================
stream         string       stream (topic) the entry came from
entry_id       string       its id in that stream (the offset)
kind           string       ``start``, ``frame`` or ``end``
scan           string       scan id (all records of a scan carry it)
frame_index    bigint       frame number in the scan, 0-based (null unless ``frame``)
pos_y, pos_x   double       top-left corner of the frame's window in the object, in
                            object pixels (null unless ``frame``)
shape          array<int>   frame shape, e.g. [128, 128]
dtype          string       NumPy dtype name of ``data`` (little-endian), e.g. float32
data           binary       ``frame``: the frame's bytes, C order; ``start``: an NPZ
                            holding ``probe`` (complex64, optional) and ``mask`` (bool,
                            True = valid pixel, optional); ``end``: empty
meta           string       JSON; ``start``: n_frames, object_shape, energy_ev,
                            distance_m, detector_pixel_m; ``end``: frames_published
=============  ===========  ===========================================================

A fourth kind, ``range``, stands for a run of entries still in the broker: ``stream``, the
last ``entry_id`` of the run, and ``meta`` ``{"url", "after"}`` (the run is the entries
with ``after < id <= entry_id``); the other columns are null. The ``sparkmpi-redis`` source
sends such references with ``payload=reference``, so the frame bytes go from the broker
straight to the rank that uses them instead of through the JVM; the rank reads the run
(:func:`read_range`) before anything else looks at the batch.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
from numpy.typing import NDArray

KINDS = ("start", "frame", "end")
RANGE = "range"
DEFAULT_PREFIX = "sparkmpi"
DEFAULT_MAX_LEN = 2048
"""Default bound on unconsumed entries per stream: the publisher waits at this backlog."""

SCHEMA = ("stream string, entry_id string, kind string, scan string, frame_index bigint, "
          "pos_y double, pos_x double, shape array<int>, dtype string, data binary, "
          "meta string")
COLUMNS = tuple(part.split()[0] for part in SCHEMA.split(", "))
FRAME_DTYPES = ("float32", "float64", "uint16", "uint32", "int32")


def stream_keys(prefix: str, count: int) -> list[str]:
    """The K stream names of a prefix."""
    return [f"{prefix}:frames:{k}" for k in range(count)]


def config_key(prefix: str) -> str:
    return f"{prefix}:config"


def stream_of(index: int, count: int) -> int:
    """Frame ``index`` goes to stream ``index % count``."""
    return index % count


@dataclass
class ScanStart:
    """The start record: everything the reconstruction needs before the first frame."""

    scan: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: str
    object_shape: tuple[int, int]
    energy_ev: float = 8000.0
    distance_m: float = 2.0
    detector_pixel_m: float = 75e-6
    probe: NDArray[Any] | None = field(default=None, repr=False)
    mask: NDArray[Any] | None = field(default=None, repr=False)

    def meta(self) -> dict[str, Any]:
        return {"n_frames": int(self.n_frames), "object_shape": [int(v) for v in self.object_shape],
                "energy_ev": float(self.energy_ev), "distance_m": float(self.distance_m),
                "detector_pixel_m": float(self.detector_pixel_m)}


def pack_arrays(**arrays: NDArray[Any] | None) -> bytes:
    """NPZ bytes of the arrays that are not None."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


def unpack_arrays(blob: bytes) -> dict[str, NDArray[Any]]:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def start_fields(start: ScanStart) -> dict[bytes, bytes]:
    """Redis entry fields of a start record."""
    return {b"kind": b"start", b"scan": start.scan.encode(),
            b"shape": ",".join(map(str, start.frame_shape)).encode(),
            b"dtype": start.dtype.encode(), b"meta": json.dumps(start.meta()).encode(),
            b"data": pack_arrays(probe=None if start.probe is None
                                 else np.asarray(start.probe, np.complex64),
                                 mask=None if start.mask is None else np.asarray(start.mask, bool))}


def frame_fields(scan: str, index: int, y: float, x: float, frame: NDArray[Any]) -> dict[bytes, bytes]:
    """Redis entry fields of one frame (little-endian bytes, C order)."""
    arr = np.ascontiguousarray(frame)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return {b"kind": b"frame", b"scan": scan.encode(), b"index": str(int(index)).encode(),
            b"y": repr(float(y)).encode(), b"x": repr(float(x)).encode(),
            b"shape": ",".join(map(str, arr.shape)).encode(), b"dtype": arr.dtype.name.encode(),
            b"data": arr.tobytes()}


def end_fields(scan: str, published: int) -> dict[bytes, bytes]:
    return {b"kind": b"end", b"scan": scan.encode(),
            b"meta": json.dumps({"frames_published": int(published)}).encode()}


def parse_start(scan: str, shape: list[int] | tuple[int, ...], dtype: str, meta: str,
                data: bytes | None) -> ScanStart:
    """A ScanStart from a start row's columns; ValueError names the bad field."""
    try:
        info = json.loads(meta or "{}")
        n_frames = int(info["n_frames"])
        object_shape = tuple(int(v) for v in info["object_shape"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"start record of scan {scan!r}: bad meta ({err})") from None
    if shape is None or len(shape) != 2 or shape[0] != shape[1] or shape[0] < 8:
        raise ValueError(f"start record of scan {scan!r}: frames must be square N x N, got {shape}")
    if dtype not in FRAME_DTYPES:
        raise ValueError(f"start record of scan {scan!r}: dtype {dtype!r} not one of {FRAME_DTYPES}")
    arrays = unpack_arrays(data or b"")
    return ScanStart(scan, n_frames, (int(shape[0]), int(shape[1])), dtype,
                     (object_shape[0], object_shape[1]),
                     float(info.get("energy_ev", 8000.0)), float(info.get("distance_m", 2.0)),
                     float(info.get("detector_pixel_m", 75e-6)),
                     arrays.get("probe"), arrays.get("mask"))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


_N = TypeVar("_N", int, float)


def _number(value: bytes | None, kind: Callable[[bytes], _N]) -> _N | None:
    """A numeric field, None when absent or malformed (the consumer rejects such a frame)."""
    try:
        return None if value is None else kind(value)
    except ValueError:
        return None


def entry_row(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> tuple[Any, ...]:
    """One Redis entry as a row of :data:`SCHEMA`; malformed fields become nulls, never
    errors, so one bad entry cannot stop the stream (the reconstruction rejects it)."""
    shape = _text(fields.get(b"shape"))
    try:
        shape_list = [int(v) for v in shape.split(",")] if shape else None
    except ValueError:
        shape_list = None
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return (stream, eid, _text(fields.get(b"kind")), _text(fields.get(b"scan")),
            _number(fields.get(b"index"), int), _number(fields.get(b"y"), float),
            _number(fields.get(b"x"), float), shape_list, _text(fields.get(b"dtype")),
            fields.get(b"data", b""), _text(fields.get(b"meta")))


READ_CHUNK = 256
"""Entries per XRANGE call: 16 MiB of 64 KiB frames, a few milliseconds of the broker's time."""


def id_pair(entry_id: str) -> tuple[int, int]:
    """'1700000000000-3' -> (1700000000000, 3): entry ids compare as such pairs."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def read_range(client: Any, stream: str, after: str, to: str,
               chunk: int = READ_CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """Rows (:func:`entry_row`) of the entries of ``stream`` with ``after < id <= to``, in
    chunks of at most ``chunk`` entries, in stream order."""
    if id_pair(to) <= id_pair(after):
        return
    low = "(" + after
    while True:
        entries = client.xrange(stream, min=low, max=to, count=chunk)
        if not entries:
            return
        yield [entry_row(stream, eid, fields) for eid, fields in entries]
        last = entries[-1][0]
        last = last.decode() if isinstance(last, bytes) else str(last)
        if last == to or len(entries) < chunk:
            return
        low = "(" + last


def parse_range(stream: str, entry_id: str, meta: str | None) -> tuple[str, str, str, str]:
    """(stream, after, to, broker url) of a ``range`` row (see :func:`range_row`)."""
    ref = json.loads(meta or "{}")
    return stream, ref["after"], entry_id, ref["url"]


def range_row(stream: str, after: str, to: str, url: str) -> tuple[Any, ...]:
    """A ``range`` row of :data:`SCHEMA`: the entries ``after < id <= to`` of ``stream``."""
    return (stream, to, RANGE, None, None, None, None, None, None, None,
            json.dumps({"url": url, "after": after}))
