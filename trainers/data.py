"""Training data for the image trainers: a synthetic set and per-rank Parquet shards.

Sharding works on Parquet *row groups* (:mod:`sparkmpi_dl.training.shards`, shared with the
quality estimator): every rank computes the same assignment from the files' metadata alone
(no communication), so each row is read by exactly one rank and a rank whose shard would be
empty is detected on every rank before any collective starts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkmpi_dl.training.shards import RowGroup, assign_row_groups, list_row_groups

__all__ = ["RowGroup", "assign_row_groups", "list_row_groups", "read_shard", "synthetic_images",
           "write_parquet_dataset"]


def synthetic_images(num: int, image_shape: tuple[int, ...], num_classes: int,
                     seed: int, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy set: class k is a bright square at a class-specific spot plus noise.

    Deterministic in (seed, rank), so each rank sees different data but every launcher
    sees the same data for the same rank.
    """
    rng = np.random.default_rng([seed, rank])
    height, width = image_shape[0], image_shape[1]
    labels = rng.integers(0, num_classes, size=num).astype(np.int32)
    images = rng.normal(0.0, 1.0, size=(num, *image_shape)).astype(np.float32)
    side = max(2, min(height, width) // 4)
    cols = max(1, width // side)
    for k in range(num_classes):  # class k's square sits in cell k of a side x side grid
        top = ((k // cols) * side) % max(1, height - side + 1)
        left = (k % cols) * side
        images[labels == k, top:top + side, left:left + side, ...] += 0.5
    return images, labels


def _decode_images(column: pa.ChunkedArray, image_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Images stored as a (fixed-size) list of numbers or as raw uint8 bytes -> float32 array."""
    array = column.combine_chunks()
    per_image = int(np.prod(image_shape))
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) \
            or pa.types.is_fixed_size_list(array.type):
        values = array.flatten().to_numpy(zero_copy_only=False)
        lengths = array.value_lengths().to_numpy(zero_copy_only=False)
    elif pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        values = np.frombuffer(b"".join(array.to_pylist()), dtype=np.uint8)
        lengths = np.array([len(b) for b in array.to_pylist()])
    else:
        raise ValueError(f"{where}: image column has type {array.type}; expected a list of "
                         f"numbers or binary (raw uint8 bytes)")
    bad = np.nonzero(lengths != per_image)[0]
    if bad.size:
        raise ValueError(f"{where}: row {int(bad[0])} has {int(lengths[bad[0]])} image values, "
                         f"expected {per_image} for image shape {image_shape}")
    images = values.reshape(-1, *image_shape).astype(np.float32)
    if values.dtype == np.uint8:
        images /= 255.0
    return images


def read_shard(shard: list[RowGroup], image_col: str, label_col: str,
               image_shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one rank's row groups into memory as (images float32, labels int32)."""
    images, labels = [], []
    for group in shard:
        where = f"{group.path} row group {group.index}"
        parquet = pq.ParquetFile(group.path)
        names = parquet.schema_arrow.names
        missing = [c for c in (image_col, label_col) if c not in names]
        if missing:
            raise ValueError(f"{group.path}: column(s) {missing} not found; it has {names} "
                             f"(choose them with --image-col / --label-col)")
        table = parquet.read_row_group(group.index, columns=[image_col, label_col])
        images.append(_decode_images(table.column(image_col), image_shape, where))
        label = table.column(label_col).to_numpy().astype(np.int64)
        out = np.nonzero((label < 0) | (label >= num_classes))[0]
        if out.size:
            raise ValueError(f"{where}: label {int(label[out[0]])} in row {int(out[0])} is "
                             f"outside [0, {num_classes}) (set --num-classes)")
        labels.append(label.astype(np.int32))
    return np.concatenate(images), np.concatenate(labels)


def write_parquet_dataset(directory: str | Path, images: np.ndarray, labels: np.ndarray,
                          rows_per_group: int, rows_per_file: int | None = None) -> list[Path]:
    """Write images (flattened float32 lists) and labels as Parquet files with small row groups."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    rows_per_file = rows_per_file or len(images)
    paths = []
    for n, start in enumerate(range(0, len(images), rows_per_file)):
        part = slice(start, start + rows_per_file)
        flat = images[part].reshape(len(images[part]), -1).astype(np.float32)
        table = pa.table({
            "image": pa.array(list(flat), type=pa.list_(pa.float32())),
            "label": pa.array(labels[part].astype(np.int32)),
        })
        path = root / f"part-{n:05d}.parquet"
        pq.write_table(table, path, row_group_size=rows_per_group)
        paths.append(path)
    return paths
