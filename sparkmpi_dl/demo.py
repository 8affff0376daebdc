"""`make demo`: the product's main job on an embedded Spark (``local[*]``), stage by stage.

Each stage prints what it is doing and returns figures for the report. Areas of the project
contribute stages by exposing ``demo_stages() -> list[tuple[str, StageFn]]``: the core's
directly, the packages above it as entry points of the group ``sparkmpi_dl.demo``
(pyproject.toml; their names sort in stage order). The report (Markdown + JSON,
plus any PNGs the stages write) lands in ``runs/demo-<time>/``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sparkmpi_dl import plugins
from sparkmpi_dl.dataplane import demo as dataplane_demo

StageFn = Callable[[Any, Path], dict[str, Any]]
"""(SparkContext, report directory) -> figures for the report."""


def allreduce_stage(sc: Any, out: Path) -> dict[str, Any]:
    """Two Spark barrier tasks become MPI ranks and sum 8 MB arrays with MPI_Allreduce."""
    import sparkmpi_dl

    def allreduce(n: int) -> float:
        import numpy as np
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        send = np.full(n, comm.rank + 1, dtype=np.float32)
        recv = np.empty_like(send)
        comm.Allreduce(send, recv)
        print(f"MPI rank {comm.rank} of {comm.size} on {MPI.Get_processor_name()}: "
              f"sum[0] = {recv[0]:.0f}", flush=True)
        return float(recv[0])

    ranks = min(2, sc.defaultParallelism)
    sums = sparkmpi_dl.run(allreduce, ranks, args=(2_000_000,), spark=sc)
    expected = ranks * (ranks + 1) / 2
    if sums != [expected] * ranks:
        raise RuntimeError(f"allreduce gave {sums}, expected {expected} on every rank")
    return {"ranks": ranks, "allreduce_sum": sums[0]}


def table_one_stage(sc: Any, out: Path) -> dict[str, Any]:
    """The seed paper's Table I on this machine: Spark collect/treeReduce vs Spark-MPI vs mpiexec."""
    from sparkmpi_dl.bench.allreduce import measure, print_table
    ranks = min(2, sc.defaultParallelism)
    result = measure(ranks, 2_000_000, repeat=5, master=None)
    print_table(result)
    return result


CORE_STAGES: list[tuple[str, StageFn]] = [
    ("Spark-MPI allreduce: Spark tasks as MPI ranks through the PMI service", allreduce_stage),
    ("Table I: summing 8 MB across ranks four ways", table_one_stage),
]


def all_stages() -> list[tuple[str, StageFn]]:
    stages = list(CORE_STAGES) + list(dataplane_demo.demo_stages())
    for point in sorted(plugins.entry_points(plugins.DEMO_STAGES), key=lambda p: p.name):
        stages.extend(point.load()())
    return stages


def write_report(out: Path, figures: dict[str, dict[str, Any]], seconds: dict[str, float]) -> Path:
    lines = ["# sparkmpi-dl demo report", "", f"Run at {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    for title, values in figures.items():
        lines += [f"## {title}", "", f"Took {seconds[title]:.1f} s.", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in values.items() if not isinstance(v, (list, dict))]
        lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in sorted(out.glob("*.png"))]
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> int:
    from sparkmpi_dl.launch.spark import spark_context
    out = Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    sc = spark_context(app_name="sparkmpi-dl demo")
    sc.setLogLevel("ERROR")
    print(f"sparkmpi-dl demo: Spark {sc.version} at {sc.master} "
          f"({sc.defaultParallelism} task slots); report in {out}/", flush=True)
    stages = all_stages()
    figures: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for number, (title, stage) in enumerate(stages, 1):
        print(f"\n=== [{number}/{len(stages)}] {title}", flush=True)
        start = time.monotonic()
        figures[title] = stage(sc, out)
        seconds[title] = time.monotonic() - start
        print(f"=== [{number}/{len(stages)}] done in {seconds[title]:.1f} s", flush=True)
    report = write_report(out, figures, seconds)
    print(f"\nsparkmpi-dl demo: all {len(stages)} stages passed; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
