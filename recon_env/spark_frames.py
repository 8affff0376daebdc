"""A CXI scan as a Spark DataFrame of frames, read by Spark tasks (not by the driver).

``read_cxi_frames(spark, path, num_partitions)`` plans one Spark task per partition; task p
opens the file itself and reads its own contiguous slice of frames (the same balanced
split as ``--ranks N``: :func:`recon_env.engine.frame_range`) with h5py, through
:func:`recon_env.cxi.read_cxi`, so every check and conversion of the MPI path applies.
The driver reads only the small metadata (:func:`read_geometry`, which checks the layout).

Columns (names and units as the streaming source's, :mod:`sparkmpi_dl.stream.records`):

=============  ============  ==========================================================
column         type          meaning
=============  ============  ==========================================================
frame_index    bigint        frame number in the scan, 0-based
pos_y, pos_x   double        top-left corner of the frame's window in the object, in
                             object pixels (CXI translations in metres converted and
                             shifted to >= 0 exactly as ``read_cxi`` does)
frame          array<float>  the frame's H*W intensities, C order, float32, detector
                             mask applied (masked pixels are 0)
=============  ============  ==========================================================

A rank of ``sparkmpi_dl.run(fn, data=frames)`` turns its partition back into engine input
with :func:`frames_to_data` (``column_as_array``: one contiguous ``(rows, H, W)`` view of the
partition, no per-row loop). The streaming source carries the frame as ``data`` (binary)
instead of ``frame``; ``column_as_array`` reads either.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from .cxi import read_cxi
from .data import PtychoData
from .engine import frame_range
from .errors import NegativeIntensityWarning

if TYPE_CHECKING:  # pyspark and pyarrow load only where Spark is used
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

FRAME_SCHEMA = "frame_index bigint, pos_y double, pos_x double, frame array<float>"
COLUMNS = ("frame_index", "pos_y", "pos_x", "frame")
BATCH_BYTES = 32 << 20
"""Largest Arrow record batch a reading task yields (frames are read this many at a time)."""


@dataclass(frozen=True)
class ScanGeometry:
    """The scan's metadata (small: a few arrays of one frame's size), read on the driver and
    sent to every rank with the job, so that the frames alone travel through Spark."""

    source: str
    n_frames: int
    frame_size: int
    energy_ev: float
    distance_m: float
    detector_pixel_m: float
    object_shape: tuple[int, int]
    mask: np.ndarray | None
    probe_guess: np.ndarray | None
    truth_object: np.ndarray | None
    truth_probe: np.ndarray | None


def read_geometry(path: str | os.PathLike) -> ScanGeometry:
    """The metadata of a CXI scan; CXIFormatError (one line, naming the HDF5 path) if bad.

    Reads one frame only, to run ``read_cxi``'s checks of the file's layout here, on the
    driver, before any Spark task starts."""
    path = os.path.abspath(os.fspath(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NegativeIntensityWarning)  # the ranks report them
        first = read_cxi(path, (0, 1))
    assert first.object_shape is not None  # PtychoData.__post_init__ sets it
    rows, cols = first.object_shape
    return ScanGeometry(source=path, n_frames=int(first.meta["total_frames"]),
                        frame_size=int(first.frame_shape[0]), energy_ev=first.energy_ev,
                        distance_m=first.distance_m, detector_pixel_m=first.detector_pixel_m,
                        object_shape=(int(rows), int(cols)), mask=first.mask,
                        probe_guess=first.probe_guess, truth_object=first.truth_object,
                        truth_probe=first.truth_probe)


class SliceReader:
    """The ``mapInArrow`` function of :func:`read_cxi_frames`: for each partition id it
    receives, read that partition's frames from the file and yield them as record batches."""

    def __init__(self, path: str, total: int, num_partitions: int, frames_per_batch: int) -> None:
        self.path, self.total, self.num_partitions = path, total, num_partitions
        self.frames_per_batch = frames_per_batch

    def __call__(self, batches: Iterable["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        for batch in batches:
            for part in batch.column("id").to_pylist():
                yield from self.read(*frame_range(self.total, int(part), self.num_partitions))

    def read(self, start: int, stop: int) -> Iterator["pa.RecordBatch"]:
        """Frames [start, stop), ``frames_per_batch`` at a time."""
        while start < stop:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NegativeIntensityWarning)  # the ranks report them
                chunk = read_cxi(self.path, (start, min(stop, start + self.frames_per_batch)))
            yield frames_batch(np.arange(start, start + chunk.n_frames), chunk.positions,
                               chunk.intensities)
            start += chunk.n_frames


def frames_batch(indices: np.ndarray, positions: np.ndarray, frames: np.ndarray) -> "pa.RecordBatch":
    """One record batch of :data:`FRAME_SCHEMA` from (F,) indices, (F, 2) (y, x) positions in
    object pixels and (F, H, W) frames; the frames' buffer is wrapped, not copied per row."""
    import pyarrow as pa

    values = np.ascontiguousarray(frames, dtype=np.float32).reshape(-1)
    per_row = int(np.prod(frames.shape[1:]))
    offsets = pa.array(np.arange(len(frames) + 1, dtype=np.int32) * per_row, pa.int32())
    frame = pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))
    positions = np.asarray(positions, dtype=np.float64)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.asarray(indices, dtype=np.int64)), pa.array(positions[:, 0]),
         pa.array(positions[:, 1]), frame], names=list(COLUMNS))


def read_cxi_frames(spark: "SparkSession", path: str | os.PathLike,
                    num_partitions: int | None = None) -> "DataFrame":
    """A DataFrame of the scan's frames (:data:`FRAME_SCHEMA`), read by Spark tasks.

    Partition p holds frames ``frame_range(n_frames, p, num_partitions)`` in order (default:
    Spark's default parallelism, at most one partition per frame). Every executor must see
    the file at ``path`` (made absolute here). Lazy: the file is read when the DataFrame is
    computed, e.g. inside the barrier stage of ``sparkmpi_dl.run(fn, data=frames)``, so the
    frames go from each task's h5py read straight into its rank, never through the driver.
    """
    geometry = read_geometry(path)  # CXIFormatError (one line) for a malformed file
    total = geometry.n_frames
    parts = num_partitions if num_partitions is not None else min(
        total, spark.sparkContext.defaultParallelism)
    if parts < 1:
        raise ValueError(f"num_partitions must be >= 1, got {parts}")
    if parts > total:
        raise ValueError(f"{total} frames cannot be split into {parts} partitions "
                         f"(use {total} or fewer)")
    per_batch = max(1, BATCH_BYTES // (4 * geometry.frame_size ** 2))
    ids = spark.range(0, parts, 1, parts)
    return ids.mapInArrow(SliceReader(geometry.source, total, parts, per_batch), FRAME_SCHEMA)


def frames_to_data(table: "pa.Table", geometry: ScanGeometry) -> PtychoData:
    """A rank's partition of :func:`read_cxi_frames` (a ``pyarrow.Table``) as engine input.

    The frames are one ``(rows, H, W)`` view of the partition's Arrow buffer (no per-row
    loop, no copy when the rows arrive in frame order); positions stay in object pixels."""
    from sparkmpi_dl.dataplane import column_as_array

    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"the frames DataFrame has no column {missing[0]!r} "
                         f"(expected {', '.join(COLUMNS)})")
    if table.num_rows == 0:
        rank = os.environ.get("SPARKMPI_RANK", "?")
        raise ValueError(f"rank {rank} received no frames: give every rank at least one frame")
    n = geometry.frame_size
    index = column_as_array(table, "frame_index", dtype=np.int64)
    frames = column_as_array(table, "frame", shape=(n, n), dtype=np.float32)
    positions = np.stack([column_as_array(table, "pos_y", dtype=np.float64),
                          column_as_array(table, "pos_x", dtype=np.float64)], axis=1)
    if np.any(np.diff(index) < 0):  # a DataFrame not built in frame order: sort this share
        order = np.argsort(index, kind="stable")
        index, frames, positions = index[order], frames[order], positions[order]
    return PtychoData(intensities=frames, positions=positions, mask=geometry.mask,
                      energy_ev=geometry.energy_ev, distance_m=geometry.distance_m,
                      detector_pixel_m=geometry.detector_pixel_m,
                      probe_guess=geometry.probe_guess, truth_object=geometry.truth_object,
                      truth_probe=geometry.truth_probe, object_shape=geometry.object_shape,
                      meta={"source": geometry.source, "total_frames": geometry.n_frames,
                            "frames": (int(index[0]), int(index[-1]) + 1)})
