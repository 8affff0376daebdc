"""`make demo` stage: frames read by Spark are reduced by MPI ranks through the data plane."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

FRAME = (64, 64)


def _frame_stats(table: pa.Table) -> dict[str, Any]:
    import numpy as np
    from mpi4py import MPI

    from sparkmpi_dl.dataplane import column_as_array
    comm = MPI.COMM_WORLD
    stack = column_as_array(table, "frame", FRAME, np.float32)
    total = comm.allreduce(float(stack.sum(dtype=np.float64)))
    frames = comm.allreduce(len(stack))
    print(f"MPI rank {comm.rank} of {comm.size}: {len(stack)} frames {stack.shape[1:]} from its "
          f"partition; all ranks: {frames} frames, photon sum {total:.0f}", flush=True)
    return {"frames": frames, "sum": total}


def _normalise(table: pa.Table) -> pa.Table:
    """Each frame's sum over the mean frame sum of all ranks (map_in_mpi)."""
    import numpy as np
    import pyarrow as pa
    from mpi4py import MPI

    from sparkmpi_dl.dataplane import column_as_array
    comm = MPI.COMM_WORLD
    sums = column_as_array(table, "frame", FRAME, np.float32).sum(axis=(1, 2), dtype=np.float64)
    mean = comm.allreduce(float(sums.sum())) / max(comm.allreduce(len(sums)), 1)
    return pa.table({"id": table["id"], "relative_intensity": pa.array(sums / mean, pa.float64())})


def dataplane_stage(sc: Any, out: Path) -> dict[str, Any]:
    """Spark writes and reads back a Parquet set of frames; MPI ranks reduce them in place."""
    from pyspark.sql import SparkSession

    import sparkmpi_dl
    spark = SparkSession(sc)
    pixels = FRAME[0] * FRAME[1]
    frames_dir = str((out / "dataplane-frames.parquet").resolve())
    (spark.range(0, 512, numPartitions=2)
     .selectExpr("id", f"transform(sequence(1, {pixels}), i -> cast((id % 5) + 1 as float)) as frame")
     .write.mode("overwrite").parquet(frames_dir))
    frames = spark.read.parquet(frames_dir).filter("id % 2 = 0")
    ranks = min(2, sc.defaultParallelism)
    stats = sparkmpi_dl.run(_frame_stats, ranks, data=frames, spark=sc)
    expected = float(sum((i % 5) + 1 for i in range(0, 512, 2)) * pixels)
    if stats[0] != {"frames": 256, "sum": expected}:
        raise RuntimeError(f"the ranks reduced {stats[0]}, expected 256 frames summing to {expected}")
    relative = sparkmpi_dl.map_in_mpi(frames, _normalise, "id long, relative_intensity double",
                                      num_proc=ranks)
    relative.write.mode("overwrite").parquet(str(out / "dataplane-relative.parquet"))
    brightest = relative.orderBy("relative_intensity", ascending=False).first()
    if brightest is None:
        raise RuntimeError("map_in_mpi returned no rows")
    return {"ranks": ranks, "frames": stats[0]["frames"], "photon_sum": stats[0]["sum"],
            "brightest_frame": brightest.id, "brightest_relative_intensity": brightest.relative_intensity}


def demo_stages() -> list[tuple[str, Any]]:
    return [("Data plane: frames read by Spark, reduced by MPI ranks (run(data=) and map_in_mpi)",
             dataplane_stage)]
