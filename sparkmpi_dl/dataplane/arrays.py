"""Array columns as contiguous NumPy arrays, without a per-row Python loop.

Spark has no fixed-size array type: an ``array<float>`` column reaches Arrow as a
``list<float>`` column (an offsets buffer plus one flat buffer of all rows' values) and a
``binary`` column as offsets plus one flat byte buffer. When every row holds the same
number of values, the flat buffer *is* the ``(rows, *shape)`` array, so it can be viewed
in place: zero-copy for a one-chunk column, one ``np.concatenate`` for a table read from
several record batches. The views are made from the buffers with ``np.frombuffer``:
pyarrow's ``to_numpy`` imports pandas, which costs a rank 0.5-1 s of start-up.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from numpy.typing import DTypeLike, NDArray


_NUMPY_TYPES: dict[pa.DataType, type] = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64,
}


class ColumnShapeError(ValueError):
    """The column cannot be viewed as ``(rows, *shape)`` values of the given dtype."""


def column_as_array(table: pa.Table | pa.RecordBatch, column: str, shape: Sequence[int] = (),
                    dtype: DTypeLike = None) -> NDArray[Any]:
    """Column ``column`` as one ``(rows, *shape)`` array, viewed from Arrow's value buffers.

    Works for list / large-list / fixed-size-list columns (e.g. Spark ``array<float>``),
    binary columns (e.g. ``ndarray.tobytes()`` per row; ``dtype`` required) and plain
    numeric columns. Every row must hold ``prod(shape)`` values and none may be null.
    The result is read-only when it is a view of a memory-mapped partition.

    Layout, for speed: store large fixed-size arrays as a ``binary`` column of each row's raw
    bytes (``ndarray.astype(np.float32).tobytes()``) rather than ``array<float>``: Spark hands
    a binary column to Arrow by memory copy, an array column element by element (about 1.5x
    slower on 128x128 frames; BENCHMARKS.md, ``bench dataplane --column``). A partition
    arrives as record batches of about 4 MiB, so viewing a whole table copies once into one
    array; for no copy at all, view each of ``table.to_batches()`` in turn.
    """
    if column not in table.column_names:
        raise KeyError(f"no column {column!r}; the table has {table.column_names}")
    data = table.column(column)
    chunks = data.chunks if isinstance(data, pa.ChunkedArray) else [data]
    per_row = int(np.prod(shape)) if len(shape) else 1
    parts = [_chunk_values(chunk, column, per_row, dtype) for chunk in chunks if len(chunk)]
    if not parts:
        target = np.dtype(dtype) if dtype is not None else _value_dtype(data.type, column)
        return np.empty((0, *shape), dtype=target)
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return flat.reshape((-1, *shape))


def _chunk_values(chunk: pa.Array, column: str, per_row: int,
                  dtype: DTypeLike) -> NDArray[Any]:
    if chunk.null_count:
        raise ColumnShapeError(f"column {column!r} has {chunk.null_count} null rows; "
                               "fill or filter them before viewing it as an array")
    kind = chunk.type
    if pa.types.is_fixed_size_list(kind):
        if kind.list_size != per_row:
            raise ColumnShapeError(f"column {column!r} holds {kind.list_size} values per row, "
                                   f"shape asks for {per_row}")
        values = chunk.flatten()
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offset_type = np.int64 if pa.types.is_large_list(kind) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)[chunk.offset:chunk.offset + len(chunk) + 1]
        lengths = np.diff(offsets)
        if lengths.size and (lengths.min() != per_row or lengths.max() != per_row):
            raise ColumnShapeError(
                f"column {column!r} holds {lengths.min()}..{lengths.max()} values per row, "
                f"shape asks for {per_row}")
        values = chunk.flatten()
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return _binary_values(chunk, column, per_row, dtype)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if per_row != 1:
            raise ColumnShapeError(f"column {column!r} is a scalar {kind} column; shape must be ()")
        values = chunk
    else:
        raise ColumnShapeError(f"column {column!r} has type {kind}, which is not an array of numbers")
    if values.null_count:
        raise ColumnShapeError(f"column {column!r} has null values inside its arrays")
    array = _primitive_view(values, column)
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise ColumnShapeError(f"column {column!r} holds {array.dtype} values, not {np.dtype(dtype)} "
                               f"(cast it in Spark, e.g. .cast('array<float>'))")
    return array


def _binary_values(chunk: pa.Array, column: str, per_row: int,
                   dtype: DTypeLike) -> NDArray[Any]:
    if dtype is None:
        raise ColumnShapeError(f"column {column!r} is binary: say which dtype its bytes hold")
    target = np.dtype(dtype)
    row_bytes = per_row * target.itemsize
    if pa.types.is_fixed_size_binary(chunk.type):
        width = chunk.type.byte_width
        if width != row_bytes:
            raise ColumnShapeError(f"column {column!r} holds {width} bytes per row, "
                                   f"shape and dtype ask for {row_bytes}")
        buffer, start = chunk.buffers()[1], chunk.offset * width
    else:
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)[chunk.offset:chunk.offset + len(chunk) + 1]
        lengths = np.diff(offsets)
        if lengths.min() != row_bytes or lengths.max() != row_bytes:
            raise ColumnShapeError(f"column {column!r} holds {lengths.min()}..{lengths.max()} bytes "
                                   f"per row, shape and dtype ask for {row_bytes}")
        buffer, start = chunk.buffers()[2], int(offsets[0])
    return np.frombuffer(buffer, dtype=target, count=len(chunk) * per_row, offset=start)


def _primitive_view(values: pa.Array, column: str) -> NDArray[Any]:
    """The values of a null-free numeric array, viewed in place."""
    target = _NUMPY_TYPES.get(values.type)
    if target is None:
        raise ColumnShapeError(f"column {column!r} holds {values.type} values, which are not numbers "
                               "NumPy can view in place")
    if not len(values):
        return np.empty(0, dtype=target)
    itemsize = np.dtype(target).itemsize
    return np.frombuffer(values.buffers()[1], dtype=target, count=len(values), offset=values.offset * itemsize)


def _value_dtype(kind: pa.DataType, column: str) -> np.dtype[Any]:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    target = _NUMPY_TYPES.get(kind)
    if target is None:
        raise ColumnShapeError(f"column {column!r}: say which dtype to use")
    return np.dtype(target)
