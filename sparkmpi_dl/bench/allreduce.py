"""The seed paper's Table I, reproduced: summing a float32 array across N ranks four ways.

1. Spark driver-worker, ``collect`` then sum on the driver (the seed's collect.py);
2. Spark ``treeReduce`` of the arrays;
3. Spark-MPI: barrier tasks wired by the PMI service, ``MPI_Allreduce`` (allreduce_rank.py);
4. native ``mpiexec`` (MPICH's Hydra) running the same allreduce_rank.py.

All four run in one invocation so their ratios are measured side by side. Each figure is
the median seconds per allreduce over ``--repeat`` repetitions after a warm-up; the two
MPI launchers alternate over TRIALS runs so that both see the same background load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sparkmpi_dl.flags import add_num_proc

RANK_MODULE = [sys.executable, "-m", "sparkmpi_dl.bench.allreduce_rank"]
TRIALS = 3
"""Spark-MPI and native mpiexec runs alternate this many times; medians pool all calls."""


def _sendbuf(rank_and_size: tuple[int, int]) -> Any:
    import numpy as np
    _, size = rank_and_size
    buf = np.arange(size, dtype=np.float32)
    buf[-1] = 5.0
    return buf


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: Python workers, broadcast of the closure
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spark_driver_worker(sc: Any, ranks: int, size: int, repeat: int) -> tuple[float, float]:
    """Median seconds for the collect-and-sum and the treeReduce paths."""
    import numpy as np
    rdd = sc.parallelize([(r, size) for r in range(ranks)], ranks)

    def collect_sum() -> Any:
        return np.sum(rdd.map(_sendbuf).collect(), axis=0)

    def tree_reduce() -> Any:
        return rdd.map(_sendbuf).treeReduce(np.add)

    return _timed(collect_sum, repeat), _timed(tree_reduce, repeat)


def _rank0_json(lines: list[str]) -> dict[str, Any]:
    for line in reversed(lines):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError("the allreduce program printed no result line:\n" + "\n".join(lines[-20:]))


def spark_mpi(sc: Any, ranks: int, size: int, repeat: int) -> dict[str, Any]:
    from sparkmpi_dl.launch.spark import run_command
    lines: list[str] = []

    def capture(rank: int, stream: str, line: str) -> None:
        if rank == 0 and stream == "stdout":
            lines.append(line)
        elif stream == "stderr":
            print(f"[rank {rank}] {line}", file=sys.stderr)

    start = time.time()
    run_command(RANK_MODULE + ["--size", str(size), "--repeat", str(repeat)], ranks, spark=sc,
                output=capture)
    result = _rank0_json(lines)
    result["wireup_s"] = result["init_done"] - start
    return result


def venv_tool(name: str) -> str:
    """A program of this interpreter's environment (mpiexec, horovodrun, spark-submit).

    Found next to ``sys.executable``, never on the PATH: a console script run as
    ``.venv/bin/sparkmpi-dl`` without an activated venv must not pick another MPI.
    """
    tool = Path(sys.executable).parent / name
    if not os.access(tool, os.X_OK):
        raise RuntimeError(f"{name} not found next to this Python ({tool}); run `make setup`")
    return str(tool)


def native_mpiexec(ranks: int, size: int, repeat: int) -> dict[str, Any]:
    mpiexec = venv_tool("mpiexec")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_"))}
    start = time.time()
    proc = subprocess.run([mpiexec, "-n", str(ranks)] + RANK_MODULE +
                          ["--size", str(size), "--repeat", str(repeat)],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"mpiexec failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = _rank0_json(proc.stdout.splitlines())
    result["wireup_s"] = result["init_done"] - start
    return result


def measure(ranks: int, size: int, repeat: int, master: str | None) -> dict[str, Any]:
    from sparkmpi_dl.launch.spark import spark_context
    sc = spark_context(master=master, default_master=f"local[{ranks}]")
    collect_s, tree_s = spark_driver_worker(sc, ranks, size, repeat)
    spark_mpi(sc, ranks, size, 1)  # warm-up: Python workers, page cache
    # Alternate the two MPI launchers so that both see the same background load.
    smpi_times: list[float] = []
    native_times: list[float] = []
    for _ in range(TRIALS):
        smpi_times += spark_mpi(sc, ranks, size, repeat)["allreduce_s"]
        native_times += native_mpiexec(ranks, size, repeat)["allreduce_s"]
    return {
        "ranks": ranks, "bytes": size * 4, "repeat": repeat, "master": sc.master,
        "spark_collect_s": collect_s, "spark_treereduce_s": tree_s,
        "spark_mpi_s": statistics.median(smpi_times),
        "native_mpi_s": statistics.median(native_times),
    }


def print_table(r: dict[str, Any]) -> None:
    rows = [("Spark driver-worker, collect + sum (seed Fig. 5)", r["spark_collect_s"]),
            ("Spark treeReduce", r["spark_treereduce_s"]),
            ("Spark-MPI: barrier tasks + PMI service + MPI_Allreduce", r["spark_mpi_s"]),
            ("native mpiexec (Hydra) + MPI_Allreduce", r["native_mpi_s"])]
    print(f"\nSumming {r['bytes'] / 1e6:.1f} MB of float32 across {r['ranks']} ranks "
          f"({r['master']}, median of {r['repeat']}):")
    for name, seconds in rows:
        print(f"  {name:<56} {seconds * 1e3:10.2f} ms  {seconds / r['spark_mpi_s']:8.1f}x")
    print(f"  Spark-MPI / native mpiexec: {r['spark_mpi_s'] / r['native_mpi_s']:.2f}; "
          f"Spark collect / Spark-MPI: {r['spark_collect_s'] / r['spark_mpi_s']:.0f}x\n")


def _main(args: argparse.Namespace) -> int:
    result = measure(args.num_proc, args.size, args.repeat, args.master)
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


def _local_wireup(ranks: int) -> float:
    from sparkmpi_dl.launch.local import mpirun
    lines: list[str] = []
    start = time.time()
    code = mpirun(RANK_MODULE + ["--size", "1", "--repeat", "1"], ranks,
                  output=lambda r, s, line: lines.append(line) if r == 0 and s == "stdout" else None)
    if code:
        raise RuntimeError(f"sparkmpi-dl mpirun failed with exit code {code}")
    return float(_rank0_json(lines)["init_done"]) - start


def _wireup(args: argparse.Namespace) -> int:
    """Seconds from launch until every rank is past MPI_Init, three launchers side by side."""
    from sparkmpi_dl.launch.spark import spark_context
    sc = spark_context(master=args.master, default_master=f"local[{args.num_proc}]")
    spark_mpi(sc, args.num_proc, 1, 1)  # warm-up: Spark's Python workers
    times: dict[str, list[float]] = {"spark_mpi_s": [], "sparkmpi_mpirun_s": [], "native_mpiexec_s": []}
    for _ in range(args.repeat):
        times["spark_mpi_s"].append(spark_mpi(sc, args.num_proc, 1, 1)["wireup_s"])
        times["sparkmpi_mpirun_s"].append(_local_wireup(args.num_proc))
        times["native_mpiexec_s"].append(native_mpiexec(args.num_proc, 1, 1)["wireup_s"])
    summary = {"ranks": args.num_proc, "master": sc.master, "repeat": args.repeat,
               **{k: statistics.median(v) for k, v in times.items()}}
    print(f"wire-up of {args.num_proc} ranks (launch -> all past MPI_Init, median of {args.repeat}): "
          f"Spark-MPI {summary['spark_mpi_s']:.2f} s, sparkmpi-dl mpirun "
          f"{summary['sparkmpi_mpirun_s']:.2f} s, mpiexec {summary['native_mpiexec_s']:.2f} s")
    if args.json:
        print(json.dumps(summary))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(bench: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = bench.add_parser("allreduce", help="Table I: Spark collect/treeReduce vs Spark-MPI vs mpiexec",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_num_proc(parser, type=_positive, default=2, help="number of ranks / partitions")
    parser.add_argument("--size", type=_positive, default=2_000_000,
                        help="float32 elements (2,000,000 = 8 MB)")
    parser.add_argument("--repeat", type=_positive, default=10,
                        help="repetitions; the median is reported")
    parser.add_argument("--master", default=None, help="Spark master (default: local[N])")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.set_defaults(func=_main)

    wire = bench.add_parser("wireup", help="time until all ranks are past MPI_Init: Spark-MPI, mpirun, mpiexec")
    add_num_proc(wire, type=_positive, default=16, help="number of ranks")
    wire.add_argument("--master", default=None, help="Spark master (default: local[N])")
    wire.add_argument("--repeat", type=_positive, default=3, help="runs per launcher; medians shown")
    wire.add_argument("--json", action="store_true", help="also print one JSON line")
    wire.set_defaults(func=_wireup)
