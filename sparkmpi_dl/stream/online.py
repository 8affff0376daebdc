"""Intake of a micro-batch on an MPI rank: which records of this rank's partition are used.

Every rank gets its partition of the micro-batch as a ``pyarrow.Table`` (columns of
:data:`sparkmpi_dl.stream.records.SCHEMA`); the functions here (collective over the ranks
where they take ``world``):

1. take the scan's start record (already known, or the first valid one by rank order);
2. check each frame (scan, index, shape, dtype, size, position, finite values) and reject
   bad ones with a logged reason, counted, never fatal;
3. drop frames already used (in an earlier batch, or earlier in this one on any rank):
   every frame index is used exactly once;
4. find end-of-scan records and the last entry id read from each stream.

What a rank then does with its frames is :mod:`sparkmpi_dl.stream.rank`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from .records import RANGE, ScanStart, parse_range, parse_start, read_range
from .state import StateDir, save_npz

MAX_REJECT_LINES = 10  # per rank and batch; the rest are counted

Columns = dict[str, list[Any]]
"""A partition as column name -> the column's values (see :func:`columns`)."""
Log = Callable[[str], None]


_NAMES = ("stream", "entry_id", "kind", "scan", "frame_index", "pos_y", "pos_x", "shape",
          "dtype", "data", "meta")  # the order of records.SCHEMA


def columns(table: Any) -> Columns:
    """Column lists of the partition; ``range`` rows (references to entries still in the
    broker) are replaced by the entries they stand for, read from the broker here."""
    if table is None or table.num_rows == 0:
        return {name: [] for name in _NAMES}
    kinds = table.column("kind").to_pylist()
    if RANGE not in kinds:
        return {name: table.column(name).to_pylist() for name in table.column_names}
    cols: Columns = {name: [] for name in _NAMES}
    small = {name: table.column(name).to_pylist() for name in _NAMES}  # references: tiny
    for i, kind in enumerate(kinds):
        if kind != RANGE:
            for name in _NAMES:
                cols[name].append(small[name][i])
            continue
        stream, after, to, url = parse_range(small["stream"][i], small["entry_id"][i], small["meta"][i])
        read = range_columns([(stream, after, to)], url)
        for name in _NAMES:
            cols[name].extend(read[name])
    return cols


def range_columns(ranges: list[tuple[str, str, str]], url: str) -> Columns:
    """Column lists of the entries ``(stream, after, to)`` stand for, read from ``url``."""
    cols: Columns = {name: [] for name in _NAMES}
    for stream, after, to in ranges:
        for rows in read_range(_broker(url), stream, after, to):
            for name, values in zip(_NAMES, zip(*rows)):
                cols[name].extend(values)
    return cols


_clients: dict[str, Any] = {}


def _broker(url: str) -> Any:
    """One client per broker for the life of the rank (a connection, not one per batch)."""
    if url not in _clients:
        from .broker import connect

        _clients[url] = connect(url)
    return _clients[url]


def _start_meta(start: ScanStart) -> dict[str, Any]:
    return {**start.meta(), "scan": start.scan, "frame_shape": list(start.frame_shape),
            "dtype": start.dtype}


def start_from_state(sd: StateDir, meta: dict[str, Any]) -> ScanStart:
    arrays = dict(np.load(sd.start_file)) if sd.start_file.exists() else {}
    return ScanStart(meta["scan"], int(meta["n_frames"]), tuple(meta["frame_shape"]),
                     meta["dtype"], tuple(meta["object_shape"]), meta["energy_ev"],
                     meta["distance_m"], meta["detector_pixel_m"], arrays.get("probe"),
                     arrays.get("mask"))


def take_start(world: Any, cols: Columns, known: ScanStart | None, sd: StateDir,
               log: Log) -> tuple[ScanStart | None, int, dict[str, Any] | None]:
    """The scan's start record (``known``, or the first valid one in this batch by rank
    order, whose probe and mask its owner saves to the state folder).

    Returns (start, other-scan start records seen here, new start metadata or None)."""
    rank = world.rank
    mine = []
    for i, kind in enumerate(cols["kind"]):
        if kind == "start":
            try:
                mine.append(parse_start(cols["scan"][i], cols["shape"][i], cols["dtype"][i],
                                        cols["meta"][i], cols["data"][i]))
            except ValueError as err:
                log(f"rejected start record (stream {cols['stream'][i]} entry "
                    f"{cols['entry_id'][i]}): {err}")
    if known is not None:
        start = known
        others = sum(1 for s in mine if s.scan != start.scan)
        for s in mine:
            if s.scan != start.scan:
                log(f"ignoring start record of scan {s.scan!r}: this reconstruction is of "
                    f"scan {start.scan!r}")
        return start, others, None
    owners = world.allgather(len(mine))
    owner = next((r for r, n in enumerate(owners) if n), None)
    if owner is None:
        return None, 0, None
    start = world.bcast(mine[0] if rank == owner else None, root=owner)
    if rank == owner:
        save_npz(sd.start_file, **{k: v for k, v in (("probe", start.probe), ("mask", start.mask))
                                   if v is not None})
    others = sum(1 for s in mine if s.scan != start.scan)
    return start, others, _start_meta(start)


def _check_frame(cols: Columns, i: int, start: ScanStart | None) -> tuple[str, str] | None:
    """(reason key, message) if frame row i cannot be used, else None."""
    if start is None:
        return "no_start", f"no start record for scan {cols['scan'][i]!r} before this frame"
    index, shape, dtype = cols["frame_index"][i], cols["shape"][i], cols["dtype"][i]
    n = start.frame_shape[0]
    if index is None:
        return "index", "frame_index missing"
    if not 0 <= index < start.n_frames:
        return "index", f"frame_index {index} outside 0..{start.n_frames - 1}"
    if list(shape or []) != list(start.frame_shape):
        return "shape", f"shape {list(shape or [])} != {list(start.frame_shape)} of the scan"
    if dtype != start.dtype:
        return "dtype", f"dtype {dtype!r} != {start.dtype!r} of the scan"
    expected = n * n * np.dtype(dtype).itemsize
    if len(cols["data"][i] or b"") != expected:
        return "size", f"{len(cols['data'][i] or b'')} bytes of data, expected {expected}"
    y, x = cols["pos_y"][i], cols["pos_x"][i]
    if y is None or x is None or not (np.isfinite(y) and np.isfinite(x)):
        return "position", "position missing or not finite"
    oy, ox = start.object_shape
    if round(y) < 0 or round(x) < 0 or round(y) + n > oy or round(x) + n > ox:
        return "position", f"window at ({y:g}, {x:g}) outside the object {oy}x{ox}"
    return None


def accept_frames(world: Any, cols: Columns, start: ScanStart | None, used: NDArray[np.bool_] | None,
                   log: Log) -> dict[str, Any]:
    """Valid, not yet used frames of this rank's partition, after a global duplicate check."""
    rejected: dict[str, int] = {}
    lines = 0
    candidates: list[int] = []
    other_scans = 0
    for i, kind in enumerate(cols["kind"]):
        if kind != "frame":
            if kind not in ("start", "end"):
                rejected["kind"] = rejected.get("kind", 0) + 1
                log(f"rejected entry {cols['entry_id'][i]} of stream {cols['stream'][i]}: "
                    f"unknown kind {kind!r}")
            continue
        if start is not None and cols["scan"][i] != start.scan:
            other_scans += 1
            continue
        bad = _check_frame(cols, i, start)
        if bad is None:
            assert start is not None  # _check_frame rejects every frame before a start
            frame = np.frombuffer(cols["data"][i], dtype=start.dtype)
            if not np.all(np.isfinite(frame)):
                bad = ("non_finite", "frame holds NaN or inf")
        if bad is not None:
            rejected[bad[0]] = rejected.get(bad[0], 0) + 1
            lines += 1
            if lines <= MAX_REJECT_LINES:
                log(f"rejected frame {cols['frame_index'][i]} (stream {cols['stream'][i]} "
                    f"entry {cols['entry_id'][i]}): {bad[1]}")
            continue
        candidates.append(i)
    if lines > MAX_REJECT_LINES:
        log(f"... and {lines - MAX_REJECT_LINES} more rejected frames in this batch")
    indices = np.asarray([cols["frame_index"][i] for i in candidates], dtype=np.int64)
    every = world.allgather(indices)
    # a frame index is taken by its first occurrence in (rank, row) order, if not used before
    offset = sum(len(v) for v in every[:world.rank])
    combined = np.concatenate(every) if every else np.zeros(0, np.int64)
    first = np.zeros(len(combined), bool)
    if len(combined):
        _, where = np.unique(combined, return_index=True)
        first[where] = True
        if used is not None:
            first &= ~used[combined]
    keep = first[offset:offset + len(indices)]
    rows = [i for i, k in zip(candidates, keep) if k]
    return {"rows": rows, "rejected": rejected, "duplicates": int((~keep).sum()),
            "other_scans": other_scans, "taken": combined[first]}


def end_records(cols: Columns, scan: str | None) -> list[dict[str, Any]]:
    out = []
    for i, kind in enumerate(cols["kind"]):
        if kind == "end" and (scan is None or cols["scan"][i] == scan):
            try:
                meta = json.loads(cols["meta"][i] or "{}")
            except ValueError:
                meta = {}
            out.append({"scan": cols["scan"][i], **meta,
                        "end_ms": entry_ms(cols["entry_id"][i])})
    return out


def last_ids(cols: Columns) -> dict[str, str]:
    """The last entry id read from each stream (entries arrive in stream order)."""
    return {stream: eid for stream, eid in zip(cols["stream"], cols["entry_id"])}


def entry_ms(entry_id: str | None) -> int | None:
    """Publication time of a Redis entry (its id is ``<unix ms>-<seq>``), None otherwise."""
    try:
        return int(str(entry_id).split("-", 1)[0])
    except ValueError:
        return None


def select_device(backend: str) -> None:
    """One GPU per rank (local rank modulo device count), before any CUDA call."""
    if backend != "cupy":
        return
    import cupy

    local = next((int(os.environ[k]) for k in ("MPI_LOCALRANKID", "PMI_RANK", "PMIX_RANK")
                  if k in os.environ), 0)
    cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()


