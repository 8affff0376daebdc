"""The rank's side of the data plane: read the partition, write a ``map_in_mpi`` result.

``read_partition()`` is what ``run(fn, data=...)`` calls before ``fn``; a program started by
``run_command(argv, data=df)`` can call it too, or open ``$SPARKMPI_DATA`` itself: an Arrow
IPC file (``ARROW1`` magic) for a DataFrame, a pickled list for an RDD.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.ipc as ipc

from sparkmpi_dl.dataplane.files import DATA_VAR, RESULT_VAR

ARROW_MAGIC = b"ARROW1"


class SchemaMismatch(ValueError):
    """A ``map_in_mpi`` rank returned data that does not match the promised schema."""


def read_partition(path: str | None = None) -> pa.Table | list[Any]:
    """This rank's partition: a memory-mapped ``pyarrow.Table`` (zero-copy) or a list.

    An empty partition is an empty table with the DataFrame's columns (or an empty list).
    """
    path = path or os.environ.get(DATA_VAR)
    if not path:
        raise RuntimeError(f"{DATA_VAR} is not set: this process was not started with data= "
                           "(sparkmpi_dl.run / run_command / map_in_mpi)")
    with open(path, "rb") as f:
        magic = f.read(len(ARROW_MAGIC))
        if magic != ARROW_MAGIC:
            f.seek(0)
            return pickle.load(f)
    return ipc.open_file(pa.memory_map(path)).read_all()


class WithPartition:
    """``fn`` called with the rank's partition first; picklable, so it travels to the rank."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(read_partition(), *args, **kwargs)


class MapPartition:
    """``fn(table)`` whose result (checked against ``schema``) goes to ``$SPARKMPI_RESULT``."""

    def __init__(self, fn: Callable[..., Any], schema: pa.Schema) -> None:
        self.fn, self.schema_bytes = fn, schema.serialize().to_pybytes()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        schema = ipc.read_schema(pa.py_buffer(self.schema_bytes))
        rank = os.environ.get("SPARKMPI_RANK", "?")
        result = self.fn(read_partition(), *args, **kwargs)
        with pa.OSFile(os.environ[RESULT_VAR], "wb") as sink, ipc.new_file(sink, schema) as writer:
            for batch in _batches(result, rank):
                writer.write_batch(conform(batch, schema, rank))


def _batches(result: Any, rank: str) -> Iterator[pa.RecordBatch]:
    if isinstance(result, pa.Table):
        yield from result.to_batches()
    elif isinstance(result, pa.RecordBatch):
        yield result
    elif isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict)):
        for item in result:
            if isinstance(item, pa.Table):
                yield from item.to_batches()
            elif isinstance(item, pa.RecordBatch):
                yield item
            else:
                raise SchemaMismatch(f"map_in_mpi: rank {rank} yielded a {type(item).__name__}, "
                                     "not a pyarrow.RecordBatch")
    else:
        raise SchemaMismatch(f"map_in_mpi: rank {rank} returned a {type(result).__name__}; return a "
                             "pyarrow.Table or an iterator of pyarrow.RecordBatch")


def conform(batch: pa.RecordBatch, schema: pa.Schema, rank: str | int) -> pa.RecordBatch:
    """``batch`` with its columns in ``schema``'s order; raises naming the first mismatch."""
    names = batch.schema.names
    for field in schema:
        if field.name not in names:
            raise SchemaMismatch(f"map_in_mpi: rank {rank}'s result has no column {field.name!r} "
                                 f"(it has {names})")
        actual = batch.schema.field(field.name).type
        if actual != field.type:
            raise SchemaMismatch(f"map_in_mpi: rank {rank}'s column {field.name!r} is {actual}, "
                                 f"schema says {field.type}")
    extra = [name for name in names if name not in schema.names]
    if extra:
        raise SchemaMismatch(f"map_in_mpi: rank {rank}'s result has column {extra[0]!r}, "
                             f"which the schema does not have")
    return pa.RecordBatch.from_arrays([batch.column(name) for name in schema.names], schema=schema)
