"""Partition files: written whole under a temporary name, committed by an atomic rename,
and checked (readable, right schema, the right scans exactly once, content intact) before
anyone trusts them.

A partition ``p`` is complete exactly when ``part-<p>.parquet`` exists: the task writes
``_tmp/<attempt>/part-<p>.<token>.parquet.tmp`` first, fsyncs it and renames it into place
(same file system, so the rename is atomic). A crash leaves only the temporary file, which
no reader lists (``_`` folder, ``.tmp`` suffix).

Build attempts: every ``build()`` call is an attempt with its own id, recorded in
``_attempt`` while it runs. A task commits only while holding the folder's build lock
(``_build.lock``, ``flock``) and only if its attempt is still the current one. A failed
attempt is fenced (``_attempt`` removed) before ``build()`` raises and a new attempt takes
over before it lists its to-do work, so a task of a failed job that Spark has not killed
yet can never land a file in the dataset or in the new attempt's ``_tmp/<attempt>/``.

Content: every file carries Parquet page checksums (CRC32, verified on every read here)
and a SHA-256 of its decoded columns in the file's key-value metadata, so flipped bytes
anywhere in the data are found by ``validate`` and make ``read`` raise.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recon_datasets.config import BuildConfig, draw_scan
from recon_datasets.schema import TMP_DIR, DatasetError, arrow_schema, part_name

ATTEMPT_FILE = "_attempt"
LOCK_FILE = "_build.lock"
HASH_KEY = b"sparkmpi_dl.content_sha256"


class StaleAttempt(RuntimeError):
    """A task of a build attempt that has ended (failed or superseded) tried to commit."""


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """The dataset folder's commit lock (``flock``, released when the holder dies)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def current_attempt(root: Path) -> str | None:
    """The id of the attempt allowed to commit now, None when no build runs."""
    try:
        return (root / ATTEMPT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def start_attempt(root: Path) -> str:
    """Make a new attempt the current one (fencing every earlier one); returns its id."""
    attempt = uuid.uuid4().hex[:12]
    with build_lock(root):
        tmp = root / f"{ATTEMPT_FILE}.{attempt}.tmp"
        tmp.write_text(attempt)
        os.replace(tmp, root / ATTEMPT_FILE)
    (root / TMP_DIR / attempt).mkdir(parents=True, exist_ok=True)
    return attempt


def end_attempt(root: Path, attempt: str) -> None:
    """Fence ``attempt``: from now on none of its tasks can commit."""
    with build_lock(root):
        if current_attempt(root) == attempt:
            (root / ATTEMPT_FILE).unlink()


def attempt_dir(root: Path, attempt: str) -> Path:
    return root / TMP_DIR / attempt


def content_hash(table: pa.Table) -> str:
    """SHA-256 of the decoded values of every column, in schema order (not of the bytes
    on disk, so it survives re-encoding but not a changed value)."""
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        array = column.combine_chunks()
        digest.update(name.encode() + b"\0")
        if pa.types.is_fixed_size_list(array.type):
            array = array.flatten()
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            digest.update(json.dumps(array.to_pylist()).encode())
        else:
            digest.update(np.ascontiguousarray(array.to_numpy(zero_copy_only=False)).tobytes())
    return digest.hexdigest()


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


def progress_path(root: Path, attempt: str, partition: int) -> Path:
    return attempt_dir(root, attempt) / f"part-{partition:05d}.progress"


def write_progress(root: Path, attempt: str, partition: int, done: int) -> None:
    """Scans done so far by this task; silently skipped once its attempt folder is gone."""
    path = progress_path(root, attempt, partition)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(str(done))
        os.replace(tmp, path)
    except FileNotFoundError:  # the attempt ended and its folder was cleared: never recreate it
        pass


def read_progress(root: Path, attempt: str, partition: int) -> int:
    try:
        return int(progress_path(root, attempt, partition).read_text() or 0)
    except (OSError, ValueError):
        return 0


def commit_partition(root: Path, attempt: str, partition: int, table: pa.Table,
                     rows_per_group: int, crash_before_commit: bool = False) -> Path:
    """Write the table (page checksums, content hash) to a temporary file of this attempt,
    fsync, and rename it to its final name if the attempt is still current.

    Raises StaleAttempt (leaving nothing behind) when the attempt has ended meanwhile.
    """
    folder = attempt_dir(root, attempt)
    if not folder.is_dir():  # cleared by a later attempt: this task is a leftover
        raise StaleAttempt(f"build attempt {attempt} has ended; partition {partition} of that "
                           f"attempt is not committed")
    metadata = {**(table.schema.metadata or {}), HASH_KEY: content_hash(table).encode()}
    table = table.replace_schema_metadata(metadata)
    tmp = folder / f"part-{partition:05d}.{uuid.uuid4().hex[:12]}.parquet.tmp"
    try:
        pq.write_table(table, tmp, row_group_size=rows_per_group, write_page_checksum=True)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    except OSError:
        if folder.is_dir():
            raise
        raise StaleAttempt(f"build attempt {attempt} has ended; partition {partition} of that "
                           f"attempt is not committed") from None
    if crash_before_commit:  # fault injection for the resume tests: a written, uncommitted file
        raise RuntimeError(f"injected failure in partition {partition} before its commit")
    final = root / part_name(partition)
    with build_lock(root):
        if current_attempt(root) != attempt:
            tmp.unlink(missing_ok=True)
            raise StaleAttempt(f"build attempt {attempt} has ended; partition {partition} of "
                               f"that attempt is not committed")
        os.replace(tmp, final)
    return final


def check_partition(path: Path, config: BuildConfig, partition: int, content: bool = True) -> int:
    """Raise DatasetError unless ``path`` is partition ``partition`` of this dataset, whole.

    Checks the footer, the schema, the row count and the scan_index column; with
    ``content`` also every column (page checksums, content hash) and that each row's
    drawn parameters are what ``(seed, scan_index)`` gives. Returns the row count.
    """
    where = f"{path} (partition {partition} of {config.num_partitions})"
    if not path.is_file():
        raise DatasetError(f"missing partition file {where}: the build did not finish; rerun "
                           f"`sparkmpi-dl dataset build` with the same arguments to resume")
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
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
    if content:
        check_content(path, config, where)
    return rows


def read_verified(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A partition file read with its page checksums verified (Arrow/OS errors pass through)."""
    return pq.read_table(path, columns=columns, page_checksum_verification=True)


def check_content(path: Path, config: BuildConfig, where: str) -> None:
    """Every column decodes with sound page checksums and hashes to the recorded content
    hash; every row's parameters are the ones its (seed, scan_index) draws."""
    rebuild = "rerun `sparkmpi-dl dataset build` with the same arguments to rebuild it"
    try:
        table = read_verified(path)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"corrupt data in {where}: {err}; {rebuild}") from err
    stored = (table.schema.metadata or {}).get(HASH_KEY)
    if stored is None:
        raise DatasetError(f"{where} has no content hash (not written by this build); {rebuild}")
    if content_hash(table) != stored.decode():
        raise DatasetError(f"corrupt data in {where}: its values do not match the content hash "
                           f"written with it; {rebuild}")
    names = [n for n in table.column_names if n.startswith("sim_")] + list(RECON_PARAMS)
    for row in table.select(["scan_index", *names]).to_pylist():
        drawn = draw_scan(config, row["scan_index"])
        expected = {**{f"sim_{k}": v for k, v in drawn["simulation"].items()},
                    **drawn["reconstruction"]}
        wrong = sorted(k for k, v in expected.items() if row.get(k) != v)
        if wrong:
            raise DatasetError(f"{where}: scan {row['scan_index']} has parameters {wrong} other "
                               f"than seed {config.seed} draws for it (not built from this "
                               f"dataset's generator); {rebuild}")


RECON_PARAMS = ("algorithm", "schedule", "beta_start", "beta_end", "iterations", "engine_seed")


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
