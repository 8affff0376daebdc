"""The data plane: MPI ranks consume Spark DataFrames and RDDs, partition by partition.

    sparkmpi_dl.run(fn, data=df)                 # rank r: fn(pyarrow.Table of partition r)
    sparkmpi_dl.run(fn, data=rdd)                # rank r: fn(list of partition r's records)
    sparkmpi_dl.run_command(argv, data=df)       # rank r reads $SPARKMPI_DATA (Arrow IPC)
    out = sparkmpi_dl.map_in_mpi(df, fn, "k long, v double")   # MPI as a DataFrame operator

In a rank: :func:`read_partition` (what ``run`` calls for you) and :func:`column_as_array`
(an ``array<float>`` column as one ``(rows, *shape)`` NumPy array, no per-row loop).
Driver-side pieces (pyspark) load on first use.
"""
from __future__ import annotations

from typing import Any

from sparkmpi_dl.dataplane.arrays import ColumnShapeError, column_as_array
from sparkmpi_dl.dataplane.files import DATA_DIR_CONF, DATA_DIR_VAR, DATA_VAR, RESULT_VAR
from sparkmpi_dl.dataplane.partition import SchemaMismatch, read_partition

__all__ = ["column_as_array", "read_partition", "map_in_mpi", "ColumnShapeError", "SchemaMismatch",
           "UnsupportedColumn", "PartitionCountChanged", "DATA_VAR", "RESULT_VAR", "DATA_DIR_CONF",
           "DATA_DIR_VAR"]

_DRIVER = ("map_in_mpi", "UnsupportedColumn", "PartitionCountChanged")


def __getattr__(name: str) -> Any:
    if name in _DRIVER:
        from sparkmpi_dl.dataplane import driver
        return getattr(driver, name)
    raise AttributeError(f"module 'sparkmpi_dl.dataplane' has no attribute {name!r}")
