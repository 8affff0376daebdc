"""Data from Spark into MPI ranks, three ways, in one run (issue 11's benchmark).

A cached DataFrame of ``--mb`` MB (rows of float32 frames, ``array<float>``) is delivered
to ``--ranks`` ranks, each of which sums its share and joins an ``MPI_Allreduce``:

1. dataplane: ``sparkmpi_dl.run(fn, data=df)``: each barrier task streams its partition
   as Arrow into an anonymous memory file; the rank memory-maps it (zero-copy).
2. collect: ``df.toArrow()`` to the driver (Arrow, the fastest collect), then the
   driver scatters the slices as an RDD the ranks receive.
3. parquet: the Petastorm-style round trip: ``df.write.parquet`` then each rank reads
   its row groups with pyarrow.

Each figure is the median of ``--repeat`` end-to-end runs (rank start-up included), the
methods interleaved so that they share the background load. ``arrow_floor_s`` is what
Spark alone needs to hand the cached rows to Python workers as Arrow batches, and
``launch_s`` what starting and wiring up the ranks costs with no data: the data plane's
own overhead is what ``dataplane_s`` adds to their sum.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from sparkmpi_dl.flags import add_num_proc

FRAME = (128, 128)
FRAME_BYTES = FRAME[0] * FRAME[1] * 4


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _allreduce(total: float, rows: int) -> tuple[float, int]:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    return comm.allreduce(total), comm.allreduce(rows)


def _sum_table(table) -> float:
    """Sum of the frame column, chunk by chunk from the Arrow buffers (no copy)."""
    import numpy as np
    from sparkmpi_dl.dataplane import column_as_array
    total = 0.0
    for batch in table.to_batches():
        total += float(column_as_array(batch, "frame", FRAME, np.float32).sum(dtype=np.float64))
    return total


def dataplane_rank(table) -> dict[str, Any]:
    start = time.perf_counter()
    total, rows = _allreduce(_sum_table(table), table.num_rows)
    return {"sum": total, "rows": rows, "rss_mb": _peak_rss_mb(), "sum_s": time.perf_counter() - start}


def collect_rank(records: list[bytes]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.ipc as ipc
    table = ipc.open_stream(pa.py_buffer(records[0])).read_all() if records else None
    total, rows = _allreduce(_sum_table(table) if table is not None else 0.0,
                             table.num_rows if table is not None else 0)
    return {"sum": total, "rows": rows, "rss_mb": _peak_rss_mb()}


def parquet_rank(directory: str) -> dict[str, Any]:
    import glob
    import os
    import pyarrow.parquet as pq
    rank, size = int(os.environ["SPARKMPI_RANK"]), int(os.environ["SPARKMPI_SIZE"])
    groups = [(path, index) for path in sorted(glob.glob(os.path.join(directory, "*.parquet")))
              for index in range(pq.ParquetFile(path).num_row_groups)]
    total, rows = 0.0, 0
    for path, index in groups[rank::size]:
        table = pq.ParquetFile(path).read_row_group(index, columns=["frame"])
        total += _sum_table(table)
        rows += table.num_rows
    total, rows = _allreduce(total, rows)
    return {"sum": total, "rows": rows, "rss_mb": _peak_rss_mb()}


def make_frames(spark, mb: int, ranks: int):
    """A cached DataFrame of ``mb`` MB of 128x128 float32 frames in ``ranks`` partitions."""
    rows = max(ranks, mb * 2**20 // FRAME_BYTES)

    def generate(batches):
        import numpy as np
        import pyarrow as pa
        for batch in batches:
            ids = batch.column(0).to_numpy()
            values = np.repeat((ids % 7).astype(np.float32), FRAME[0] * FRAME[1])
            offsets = np.arange(len(ids) + 1, dtype=np.int32) * (FRAME[0] * FRAME[1])
            frames = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
            yield pa.RecordBatch.from_arrays([batch.column(0), frames], names=["id", "frame"])

    df = (spark.range(0, rows, numPartitions=ranks)
          .mapInArrow(generate, "id long, frame array<float>").cache())
    df.count()
    return df, rows, float(sum((i % 7) for i in range(rows)) * FRAME[0] * FRAME[1])


def _quiet(*_args) -> None:
    pass


def measure(spark, ranks: int, mb: int, repeat: int) -> dict[str, Any]:
    import sparkmpi_dl
    import pyarrow as pa
    import pyarrow.ipc as ipc

    df, rows, expected = make_frames(spark, mb, ranks)
    nbytes = rows * FRAME_BYTES
    sc = spark.sparkContext
    times: dict[str, list[float]] = {k: [] for k in ("dataplane", "collect", "parquet", "arrow_floor", "launch")}
    rss: list[float] = []
    sums_s: list[float] = []

    def check(results: list[dict]) -> list[dict]:
        assert results[0]["rows"] == rows and abs(results[0]["sum"] - expected) <= 1e-6 * expected, results[0]
        return results

    def dataplane() -> None:
        results = check(sparkmpi_dl.run(dataplane_rank, data=df, output=_quiet))
        rss.append(max(r["rss_mb"] for r in results))
        sums_s.append(max(r["sum_s"] for r in results))

    def collect() -> None:
        table = df.toArrow()
        slices = []
        for rank in range(ranks):
            share = table.slice(rank * len(table) // ranks, (rank + 1) * len(table) // ranks - rank * len(table) // ranks)
            sink = pa.BufferOutputStream()
            with ipc.new_stream(sink, share.schema) as writer:
                writer.write_table(share)
            slices.append(sink.getvalue().to_pybytes())
        del table
        check(sparkmpi_dl.run(collect_rank, data=sc.parallelize(slices, ranks), output=_quiet))

    def parquet() -> None:
        with tempfile.TemporaryDirectory(prefix="sparkmpi-bench-") as tmp:
            df.write.parquet(tmp + "/frames")
            check(sparkmpi_dl.run(parquet_rank, ranks, args=(tmp + "/frames",), output=_quiet))

    def arrow_floor() -> None:
        def count(batches):
            import pyarrow as pa
            n = sum(batch.num_rows for batch in batches)
            yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])
        assert sum(r.n for r in df.mapInArrow(count, "n long").collect()) == rows

    def launch() -> None:
        sparkmpi_dl.run(_peak_rss_mb, ranks, output=_quiet)

    methods: dict[str, Callable[[], None]] = {"dataplane": dataplane, "collect": collect,
                                              "parquet": parquet, "arrow_floor": arrow_floor,
                                              "launch": launch}
    launch()  # warm-up: Python workers, the interpreter check
    for _ in range(repeat):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    df.unpersist()
    median = {name: statistics.median(values) for name, values in times.items()}
    share_mb = nbytes / ranks / 2**20
    return {"ranks": ranks, "bytes": nbytes, "dataplane_s": median["dataplane"],
            "collect_s": median["collect"], "parquet_s": median["parquet"],
            "dataplane_peak_rss_mb": max(rss), "share_mb": share_mb,
            "rss_over_share": max(rss) / share_mb,
            "dataplane_mb_s_per_rank": share_mb * 2**20 / 1e6 / median["dataplane"],
            "arrow_floor_s": median["arrow_floor"], "launch_s": median["launch"],
            "rank_sum_s": statistics.median(sums_s), "repeat": repeat}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _main(args: argparse.Namespace) -> int:
    from pyspark.sql import SparkSession

    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(master=args.master or f"local[{args.ranks}]", app_name="sparkmpi-dl bench dataplane",
                       conf={"spark.driver.memory": args.driver_memory,
                             "spark.sql.execution.arrow.maxRecordsPerBatch": "2048",
                             "spark.ui.enabled": "false"})
    result = measure(SparkSession(sc), args.ranks, args.mb, args.repeat)
    print(f"{result['bytes'] / 2**20:.0f} MB to {args.ranks} ranks (median of {args.repeat}): "
          f"dataplane {result['dataplane_s']:.2f} s, collect+scatter {result['collect_s']:.2f} s "
          f"({result['collect_s'] / result['dataplane_s']:.1f}x), parquet round trip "
          f"{result['parquet_s']:.2f} s ({result['parquet_s'] / result['dataplane_s']:.1f}x); "
          f"{result['dataplane_mb_s_per_rank']:.0f} MB/s per rank; peak rank RSS "
          f"{result['dataplane_peak_rss_mb']:.0f} MB = {result['rss_over_share']:.2f}x its share; "
          f"Spark's own Arrow hand-off {result['arrow_floor_s']:.2f} s, rank launch {result['launch_s']:.2f} s")
    if args.json:
        print(json.dumps(result))
    return 0


def register(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("dataplane", help="Spark -> MPI ranks: data plane vs collect+scatter vs Parquet",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_num_proc(parser, dest="ranks", type=_positive, default=2,
                 help="number of ranks (= partitions)")
    parser.add_argument("--mb", type=_positive, default=256, help="size of the DataFrame in MB")
    parser.add_argument("--repeat", type=_positive, default=3, help="runs per method; medians shown")
    parser.add_argument("--master", default=None, help="Spark master (default: local[ranks])")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (holds the cached data)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.set_defaults(func=_main)
