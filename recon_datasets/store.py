"""Partition files: written whole under a temporary name, committed by an atomic rename,
and checked (readable, right schema, the right scans exactly once) before anyone trusts them.

A partition ``p`` is complete exactly when ``part-<p>.parquet`` exists: the task writes
``_tmp/part-<p>.<token>.parquet.tmp`` first, fsyncs it and renames it into place (same
file system, so the rename is atomic). A crash leaves only the temporary file, which no
reader lists (``_`` folder, ``.tmp`` suffix).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recon_datasets.config import BuildConfig
from recon_datasets.schema import TMP_DIR, DatasetError, arrow_schema, part_name


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Column-wise Arrow table (fixed-size lists built from one flat float32 buffer)."""
    columns = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if pa.types.is_fixed_size_list(field.type):
            flat = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), field.type.list_size))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def progress_path(root: Path, partition: int) -> Path:
    return root / TMP_DIR / f"part-{partition:05d}.progress"


def write_progress(root: Path, partition: int, done: int) -> None:
    path = progress_path(root, partition)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(str(done))
    os.replace(tmp, path)


def read_progress(root: Path, partition: int) -> int:
    try:
        return int(progress_path(root, partition).read_text() or 0)
    except (OSError, ValueError):
        return 0


def commit_partition(root: Path, partition: int, table: pa.Table, rows_per_group: int,
                     crash_before_commit: bool = False) -> Path:
    """Write the table to a temporary file, fsync, rename to its final name."""
    tmp_dir = root / TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"part-{partition:05d}.{uuid.uuid4().hex[:12]}.parquet.tmp"
    pq.write_table(table, tmp, row_group_size=rows_per_group)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    if crash_before_commit:  # fault injection for the resume tests: a written, uncommitted file
        raise RuntimeError(f"injected failure in partition {partition} before its commit")
    final = root / part_name(partition)
    os.replace(tmp, final)
    return final


def check_partition(path: Path, config: BuildConfig, partition: int) -> int:
    """Raise DatasetError unless ``path`` is partition ``partition`` of this dataset, whole.

    Reads the footer and the scan_index column only; returns the row count.
    """
    where = f"{path} (partition {partition} of {config.num_partitions})"
    if not path.is_file():
        raise DatasetError(f"missing partition file {where}: the build did not finish; rerun "
                           f"`sparkmpi-dl dataset build` with the same arguments to resume")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"corrupt Parquet file {where}: {err}") from err
    _check_schema(schema, arrow_schema(config), where)
    expected = config.partition_scans(partition)
    rows = parquet.metadata.num_rows
    if rows != len(expected):
        raise DatasetError(f"{where} has {rows} rows, expected {len(expected)} "
                           f"(scans {expected.start}..{expected.stop - 1})")
    try:
        index = parquet.read(columns=["scan_index"]).column(0).to_numpy()
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"corrupt Parquet file {where}: {err}") from err
    if not np.array_equal(index, np.arange(expected.start, expected.stop)):
        dup = sorted({int(v) for v in index if (index == v).sum() > 1})
        detail = f"duplicated scan_index {dup[:5]}" if dup else "wrong scan_index values"
        raise DatasetError(f"{where}: {detail}; expected scans {expected.start}.."
                           f"{expected.stop - 1} once each, in order")
    return rows


def _check_schema(found: pa.Schema, expected: pa.Schema, where: str) -> None:
    missing = [n for n in expected.names if n not in found.names]
    extra = [n for n in found.names if n not in expected.names]
    if missing or extra:
        raise DatasetError(f"schema mismatch in {where}: missing column(s) {missing}, "
                           f"unexpected column(s) {extra}")
    for field in expected:
        got = found.field(field.name).type
        if not got.equals(field.type):
            raise DatasetError(f"schema mismatch in {where}: column {field.name!r} has type "
                               f"{got}, expected {field.type}")
