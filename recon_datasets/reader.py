"""Reading a built dataset, after checking all of it: ``validate``, ``read``, ``to_numpy``.

Every problem raises :class:`DatasetError` naming the file or partition: a missing or
unfinished build, a missing, corrupt or foreign Parquet file, a schema mismatch, rows
missing or duplicated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recon_datasets.config import BuildConfig
from recon_datasets.schema import (
    TMP_DIR,
    DatasetError,
    part_name,
    read_schema_file,
    shapes,
)
from recon_datasets.store import check_partition


def load_config(root: str | Path) -> tuple[BuildConfig, dict[str, Any]]:
    """The generator parameters and schema-file content of a dataset folder."""
    folder = Path(root)
    content = read_schema_file(folder)
    try:
        config = BuildConfig.from_dict(content["generator"])
        config.check()
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{folder / '_schema.json'}: bad generator parameters: {err}") from err
    return config, content


def validate(root: str | Path, reproduce: int = 0) -> dict[str, Any]:
    """Check the whole dataset; return a summary.

    Every file: footer, schema, row count, scan_index, every column read with its page
    checksums verified and hashed against the content hash written with it, and each
    row's drawn parameters against the recorded seed. ``reproduce`` > 0 also rebuilds that
    many scans (spread over the dataset) from the seed and compares the whole rows.
    """
    folder = Path(root)
    config, content = load_config(folder)
    partitions = config.num_partitions
    expected = {part_name(p) for p in range(partitions)}
    if content.get("status") != "complete":
        done = sorted(expected & {p.name for p in folder.glob("part-*.parquet")})
        unfinished = sorted(p.name for p in (folder / TMP_DIR).rglob("*.tmp"))
        raise DatasetError(
            f"{folder}: the build is not finished (status {content.get('status')!r}): "
            f"{len(done)} of {partitions} partitions complete"
            + (f", unfinished temporary file(s) {unfinished}" if unfinished else "")
            + "; rerun `sparkmpi-dl dataset build` with the same arguments to resume")
    stray = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.parquet")
                   if p.name not in expected or p.parent != folder)
    stray = [s for s in stray if not s.startswith(("_", "."))]
    if stray:
        raise DatasetError(f"{folder}: unexpected Parquet file(s) {stray}, not among this "
                           f"dataset's {partitions} partitions (readers would count their rows)")
    rows = sum(check_partition(folder / part_name(p), config, p) for p in range(partitions))
    if rows != config.scans or content.get("rows") != rows:
        raise DatasetError(f"{folder}: row count {rows}, schema file says {content.get('rows')}, "
                           f"expected {config.scans} scans")
    reproduced = _reproduce(folder, config, reproduce) if reproduce > 0 else []
    return {"path": str(folder), "rows": rows, "partitions": partitions, "seed": config.seed,
            "shapes": shapes(config), "reproduced_scans": reproduced}


def _reproduce(folder: Path, config: BuildConfig, count: int) -> list[int]:
    """Rebuild ``count`` scans spread over the dataset and compare them with the stored rows."""
    from recon_datasets.scan import reconstruct_scan
    from recon_datasets.schema import arrow_schema
    from recon_datasets.store import content_hash, read_verified, rows_to_table

    scans = sorted({int(i) for i in np.linspace(0, config.scans - 1, min(count, config.scans))})
    for scan in scans:
        partition = next(p for p in range(config.num_partitions)
                         if scan in config.partition_scans(p))
        path = folder / part_name(partition)
        stored = read_verified(path)
        row = stored.slice(scan - config.partition_scans(partition).start, 1)
        again = rows_to_table([reconstruct_scan(config, scan)], arrow_schema(config))
        if content_hash(row) != content_hash(again):
            differ = [n for n in again.column_names if not row.column(n).equals(again.column(n))]
            raise DatasetError(f"{path} (partition {partition}): scan {scan} rebuilt from seed "
                               f"{config.seed} differs in {differ}: the row is not reproducible")
    return scans


def read(root: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The validated dataset as one Arrow table, rows in scan order."""
    folder = Path(root)
    validate(folder)
    config, _ = load_config(folder)
    tables = []
    for p in range(config.num_partitions):
        path = folder / part_name(p)
        try:
            tables.append(pq.read_table(path, columns=columns))
        except (pa.ArrowException, OSError) as err:
            raise DatasetError(f"corrupt Parquet file {path} (partition {p}): {err}") from err
        except KeyError as err:
            raise DatasetError(f"{path}: no column {err}") from err
    return pa.concat_tables(tables)


def to_numpy(table: pa.Table, column: str) -> np.ndarray:
    """A column as a NumPy array; fixed-size list columns get their logical shape back.

    phase/amplitude -> (rows, crop, crop); history columns -> (rows, max_iterations).
    """
    if column not in table.column_names:
        raise DatasetError(f"no column {column!r}; the table has {table.column_names}")
    array = table.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        flat = array.flatten().to_numpy(zero_copy_only=False)
        side = int(round(np.sqrt(size)))
        if column in ("phase", "amplitude") and side * side == size:
            return flat.reshape(len(array), side, side)
        return flat.reshape(len(array), size)
    return array.to_numpy(zero_copy_only=False)
