"""Partition and result files: anonymous files a task hands to its rank by descriptor.

A task writes its partition into a file that has no name (``O_TMPFILE``, or created and
unlinked at once where the file system lacks it) and passes the open descriptor to the
rank process, which finds it at ``/dev/fd/N`` (``SPARKMPI_DATA``). The kernel frees the
file when the last descriptor or mapping goes, so nothing is left behind even when Spark
kills the task or the rank: there is no name to clean up.

The directory (memory, by default) is, first found: the Spark conf
``spark.sparkmpi.dataDir``, the executor's ``SPARKMPI_DATA_DIR``, ``/dev/shm``, the
temporary directory.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import uuid
from typing import Any, Iterable, Iterator

import cloudpickle
import pyarrow as pa
import pyarrow.ipc as ipc

DATA_VAR = "SPARKMPI_DATA"
RESULT_VAR = "SPARKMPI_RESULT"
DATA_DIR_CONF = "spark.sparkmpi.dataDir"
DATA_DIR_VAR = "SPARKMPI_DATA_DIR"


def data_dir(configured: str | None = None) -> str:
    """Where this executor puts partition files: memory unless configured otherwise."""
    for candidate in (configured, os.environ.get(DATA_DIR_VAR)):
        if candidate:
            return candidate
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def anonymous_file(directory: str) -> int:
    """An open read-write descriptor of a new file that has no name in ``directory``."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):
        path = os.path.join(directory, f".sparkmpi-{uuid.uuid4().hex}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.unlink(path)
        return fd


def fd_path(fd: int) -> str:
    """The path another process given this descriptor (same number) opens it by."""
    return f"/dev/fd/{fd}"


def _own_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def write_batches(fd: int, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> tuple[int, int]:
    """Stream ``batches`` into the file as Arrow IPC (file format); (rows, bytes) written.

    The first batch's schema wins over ``schema`` (which is what Spark promised, and what
    an empty partition's file carries).
    """
    iterator = iter(batches)
    first = next(iterator, None)
    rows = 0
    with pa.OSFile(_own_path(fd), "wb") as sink:
        with ipc.new_file(sink, first.schema if first is not None else schema) as writer:
            for batch in _chain(first, iterator):
                writer.write_batch(batch)
                rows += batch.num_rows
        size = sink.tell()
    return rows, size


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if first is None:
        return
    yield first
    yield from rest


def write_records(fd: int, records: Iterable[Any]) -> int:
    """Pickle an RDD partition's records (as one list) into the file; the number written."""
    items = list(records)
    with open(_own_path(fd), "wb") as sink:
        cloudpickle.dump(items, sink, protocol=pickle.HIGHEST_PROTOCOL)
    return len(items)


def read_batches(fd: int) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file (memory-mapped) a rank wrote into ``fd``."""
    with pa.memory_map(_own_path(fd)) as source:
        reader = ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)


def is_empty(fd: int) -> bool:
    return os.fstat(fd).st_size == 0
