"""Hand a micro-batch DataFrame's partitions to MPI ranks: rank r calls ``fn(table, *args)``
with partition r as a ``pyarrow.Table``.

Uses the project's data plane (``sparkmpi_dl.run(fn, num_proc, data=df)``) when it is
there. Otherwise a minimal stand-in: Spark tasks write each (coalesced) partition as an
Arrow IPC file under ``workdir`` (``mapInArrow``: no rows pass through the driver), then
``sparkmpi_dl.run`` starts the ranks and rank r reads file r. The files are removed when
the job ends, also on failure.
"""
from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path
from typing import Any, Callable


def data_plane_available() -> bool:
    """True when ``sparkmpi_dl.run`` takes ``data=`` (the data plane has landed)."""
    import sparkmpi_dl

    try:
        return "data" in inspect.signature(sparkmpi_dl.run).parameters
    except (TypeError, ValueError):
        return False


def run_on_partitions(df, fn: Callable[..., Any], num_proc: int, *, args: tuple = (),
                      spark=None, workdir: str | Path) -> list[Any]:
    """``fn(table, *args)`` on ``num_proc`` MPI ranks, rank r holding partition r of ``df``;
    the results ordered by rank."""
    import sparkmpi_dl

    if data_plane_available():
        return sparkmpi_dl.run(fn, num_proc, data=df, args=args, spark=spark)
    folder = Path(workdir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        paths = _write_partitions(df, num_proc, folder)
        return sparkmpi_dl.run(_read_and_call, num_proc, args=(fn, paths, args), spark=spark)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_partitions(df, num_proc: int, folder: Path) -> list[str]:
    parts = df.rdd.getNumPartitions()
    shaped = df.coalesce(num_proc) if parts >= num_proc else df.repartition(num_proc)
    target = str(folder)

    def write(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        path = os.path.join(target, f"part-{pid}.arrow")
        writer = None
        rows = 0
        for batch in batches:
            if writer is None:
                writer = pa.ipc.new_file(path, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
        yield pa.RecordBatch.from_pydict({"partition": [pid], "rows": [rows]})

    shaped.mapInArrow(write, "partition long, rows long").collect()
    return [os.path.join(target, f"part-{r}.arrow") for r in range(num_proc)]


def _read_and_call(fn, paths: list[str], args: tuple):
    import pyarrow as pa
    from mpi4py import MPI

    path = paths[MPI.COMM_WORLD.rank]
    table = pa.ipc.open_file(path).read_all() if os.path.exists(path) else None
    return fn(table, *args)
