"""The detector simulator / publisher behind ``sparkmpi-dl stream publish``.

Publishes one scan (start record, frames by frame index to K streams, end record) at a
given frame rate. It never drops a frame: entries are added without ``MAXLEN`` (Redis
trims those silently), and when the unconsumed backlog of a stream reaches the bound
(``max_len``, recorded in ``{prefix}:config``) the publisher waits for the consumer, like a
detector buffer filling up, and says so; the consumer trims what it has committed.
"""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

import numpy as np
from numpy.typing import NDArray

from .records import (DEFAULT_MAX_LEN, DEFAULT_PREFIX, ScanStart, config_key, end_fields,
                      frame_fields, start_fields, stream_keys, stream_of)

if TYPE_CHECKING:
    from recon_env.data import PtychoData

CHUNK = 64  # frames per pipelined round trip


class BacklogTimeout(RuntimeError):
    """The consumer did not take frames for longer than the publisher may wait."""


@dataclass
class PublishOptions:
    """How a scan is published; `stream publish`'s flags (sparkmpi_dl.config)."""

    streams: int = 2
    """streams (topics) the frames are spread over by frame index"""
    rate: float | None = None
    """frames per second (None, on the command line 0: as fast as the broker takes them)"""
    prefix: str = DEFAULT_PREFIX
    """stream name prefix: streams PREFIX:frames:K"""
    max_len: int = DEFAULT_MAX_LEN
    """unconsumed entries per stream at which the publisher waits"""
    backlog_timeout_s: float = 600.0
    """fail if the consumer takes nothing for this long (s) at the bound"""
    progress_every_s: float = 1.0
    """seconds between progress lines"""

    def check(self) -> None:
        if self.streams < 1:
            raise ValueError(f"--streams must be >= 1, got {self.streams}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"--rate must be > 0 frames/s, got {self.rate}")
        if self.max_len < CHUNK:
            raise ValueError(f"--max-len must be >= {CHUNK}, got {self.max_len}")


@dataclass
class Scan:
    """A scan ready to publish: its start record and a way to read frames in chunks."""

    start: ScanStart
    positions: NDArray[np.float64]                          # (F, 2) y, x in object pixels
    frames: Callable[[int, int], NDArray[Any]]              # (first, stop) -> (k, N, N)


def new_scan_id() -> str:
    return time.strftime("scan-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def simulated_scan(sim: dict[str, Any], scan_id: str | None = None) -> Scan:
    """A scan from recon_env's simulator (``sim``: SimulationConfig fields)."""
    from recon_env.simulate import SimulationConfig, simulate

    data = simulate(SimulationConfig(**sim))
    return _scan_from_data(data, scan_id)


def _object_shape(data: PtychoData) -> tuple[int, int]:
    """The object shape (PtychoData sets it when made, so it is never None here)."""
    shape = data.object_shape
    assert shape is not None
    return (shape[0], shape[1])


def _scan_from_data(data: PtychoData, scan_id: str | None) -> Scan:
    start = ScanStart(scan_id or new_scan_id(), data.n_frames, data.frame_shape,
                      str(np.dtype(data.intensities.dtype).name), _object_shape(data),
                      data.energy_ev, data.distance_m, data.detector_pixel_m,
                      data.probe_guess, data.mask)
    frames = data.intensities
    return Scan(start, np.asarray(data.positions), lambda a, b: frames[a:b])


def cxi_scan(path: str, scan_id: str | None = None) -> Scan:
    """A scan read from a CXI file, frames read chunk by chunk as they are published."""
    from recon_env.cxi import frame_count, read_cxi

    total = frame_count(path)
    head = read_cxi(path, (0, min(total, 1)))
    # geometry from all positions: read_cxi(frame_range) keeps the full-object shape, and the
    # positions of all frames come from one small read per chunk below
    start = ScanStart(scan_id or new_scan_id(), total, head.frame_shape,
                      str(np.dtype(head.intensities.dtype).name), _object_shape(head),
                      head.energy_ev, head.distance_m, head.detector_pixel_m,
                      head.probe_guess, head.mask)
    positions = np.empty((total, 2))
    for a in range(0, total, 1024):
        positions[a:a + 1024] = read_cxi(path, (a, min(total, a + 1024))).positions
    return Scan(start, positions, lambda a, b: read_cxi(path, (a, b)).intensities)


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, total, size):
        yield a, min(total, a + size)


class _Progress:
    def __init__(self, total: int, every_s: float, out: TextIO = sys.stdout) -> None:
        self.total, self.every_s, self.out = total, every_s, out
        self.tty = out.isatty()
        self.t0 = self.last = time.monotonic()

    def show(self, done: int, backlog: int, bound: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        text = (f"published {done}/{self.total} frames  {rate:.0f} frames/s  "
                f"backlog {backlog} (bound {bound})")
        if self.tty:
            self.out.write("\r" + text + ("\n" if force else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def prepare_streams(client: Any, opts: PublishOptions) -> list[str]:
    """Record the stream layout; refuse to change K while old streams still hold entries."""
    keys = stream_keys(opts.prefix, opts.streams)
    old = client.hget(config_key(opts.prefix), "streams")
    if old is not None and int(old) != opts.streams:
        old_keys = stream_keys(opts.prefix, int(old))
        pending = sum(client.xlen(k) for k in old_keys)
        if pending:
            raise ValueError(f"prefix {opts.prefix!r} has {int(old)} streams holding {pending} "
                             f"unconsumed entries; publish with --streams {int(old)} or another "
                             f"--prefix")
    client.hset(config_key(opts.prefix), mapping={"streams": opts.streams,
                                                  "max_len": opts.max_len})
    return keys


def publish(client: Any, scan: Scan, opts: PublishOptions,
            out: TextIO = sys.stdout) -> dict[str, Any]:
    """Publish ``scan`` at ``opts.rate``; returns figures (frames, seconds, waits, backlog)."""
    opts.check()
    keys = prepare_streams(client, opts)
    total = scan.start.n_frames
    progress = _Progress(total, opts.progress_every_s, out)
    waiting = int(_lengths(client, keys).sum())
    if waiting:
        out.write(f"note: the streams already hold {waiting} unconsumed entries (an earlier "
                  f"scan?); a consumer reads those first\n")
    client.xadd(keys[0], start_fields(scan.start))
    t0 = time.monotonic()
    waited = 0.0
    max_backlog = 0
    backlog = 0
    done = 0
    # small chunks at low rates, so frames go out evenly (a chunk leaves in one round trip)
    chunk = CHUNK if opts.rate is None else max(1, min(CHUNK, int(opts.rate / 50)))
    for a, b in _chunks(total, chunk):
        frames = scan.frames(a, b)
        if opts.rate is not None:  # frame a is due at t0 + a / rate (+ time spent waiting)
            delay = t0 + waited + a / opts.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        lengths = _lengths(client, keys)
        incoming = np.bincount([stream_of(i, len(keys)) for i in range(a, b)], minlength=len(keys))
        if np.any(lengths + incoming > opts.max_len):
            waited += _wait_for_room(client, keys, incoming, opts, progress, done)
            lengths = _lengths(client, keys)
        backlog = int(lengths.sum())
        max_backlog = max(max_backlog, backlog + int(incoming.sum()))
        pipe = client.pipeline(transaction=False)
        for j in range(a, b):
            y, x = scan.positions[j]
            pipe.xadd(keys[stream_of(j, len(keys))],
                      frame_fields(scan.start.scan, j, y, x, frames[j - a]))
        pipe.execute()
        done = b
        progress.show(done, backlog + int(incoming.sum()), opts.max_len * len(keys))
    if opts.rate is not None:  # the scan ends when its last frame is due
        delay = t0 + waited + total / opts.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    client.xadd(keys[0], end_fields(scan.start.scan, done))
    seconds = time.monotonic() - t0
    backlog = int(_lengths(client, keys).sum())
    progress.show(done, backlog, opts.max_len * len(keys), force=True)
    return {"scan": scan.start.scan, "frames": done, "streams": len(keys), "seconds": seconds,
            "frames_per_s": done / max(seconds, 1e-9), "waited_s": waited,
            "max_backlog": max_backlog, "max_len": opts.max_len}


def _lengths(client: Any, keys: list[str]) -> NDArray[np.int64]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xlen(key)
    return np.asarray(pipe.execute(), dtype=np.int64)


def _wait_for_room(client: Any, keys: list[str], incoming: NDArray[Any], opts: PublishOptions,
                   progress: _Progress, done: int) -> float:
    """Block until every stream has room for its share of the next chunk."""
    t = time.monotonic()
    said = False
    while True:
        lengths = _lengths(client, keys)
        if not np.any(lengths + incoming > opts.max_len):
            return time.monotonic() - t
        waited = time.monotonic() - t
        if not said:
            progress.out.write(f"{'' if not progress.tty else chr(10)}backlog at its bound "
                               f"({int(lengths.max())} of {opts.max_len} entries in a stream): "
                               f"waiting for the consumer\n")
            progress.out.flush()
            said = True
        if waited > opts.backlog_timeout_s:
            raise BacklogTimeout(f"the consumer took no frames for {waited:.0f} s with the "
                                 f"backlog at its bound ({opts.max_len} entries per stream); "
                                 f"published {done} frames, none dropped")
        progress.show(done, int(lengths.sum()), opts.max_len * len(keys))
        time.sleep(0.02)
