"""`sparkmpi-dl bench dataset`: build throughput (scans/min) with 1 vs 2 Spark tasks.

The same scans (same seed) are built with ``--tasks`` partitions each, in one Spark
session, trials alternating between the settings so that all see the same machine load.
Time is the Spark job alone (the session and its Python workers are warmed up first).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from recon_datasets.arguments import config_from_args


def measure(config, tasks: list[int], repeat: int, master: str | None) -> dict:
    """Median scans/min per task count, and each count's ratio to the first one."""
    from recon_datasets.build import build
    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(master=master or f"local[{max(tasks)}]", app_name="sparkmpi-dl bench dataset")
    sc.setLogLevel("ERROR")
    quiet = lambda line: None  # noqa: E731 - the table below is the output
    rates: dict[int, list[float]] = {t: [] for t in tasks}
    cpu: dict[int, list[float]] = {t: [] for t in tasks}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        warm = replace(config, scans=max(tasks), partitions=max(tasks))
        build(warm, Path(tmp) / "warmup", spark=sc, log=quiet)
        for trial in range(repeat):
            for count in tasks:
                out = Path(tmp) / f"t{count}-{trial}"
                summary = build(replace(config, partitions=count), out, spark=sc, log=quiet)
                rates[count].append(summary["scans_per_min"])
                cpu[count].append(summary["task_cpu_s"] / config.scans)
                print(f"bench dataset: trial {trial + 1}/{repeat}, {count} task(s): "
                      f"{summary['scans_per_min']:.1f} scans/min ({summary['seconds']:.1f} s, "
                      f"{cpu[count][-1]:.2f} task CPU s/scan)",
                      flush=True)
    median = {t: statistics.median(r) for t, r in rates.items()}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "master": sc.master,
        "cpus": os.cpu_count(), "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "scans": config.scans, "frames": config.n_frames, "frame_size": config.frame_size,
        "iterations": list(config.iterations), "repeat": repeat,
        "scans_per_min": {str(t): round(v, 2) for t, v in median.items()},
        "trials": {str(t): [round(v, 2) for v in r] for t, r in rates.items()},
        "task_cpu_s_per_scan": {str(t): round(statistics.median(c), 3) for t, c in cpu.items()},
        "speedup_vs_first": {str(t): round(v / median[tasks[0]], 3) for t, v in median.items()},
    }


def main(args: argparse.Namespace) -> int:
    if args.repeat < 1 or not args.tasks or min(args.tasks) < 1:
        print("sparkmpi-dl bench dataset: error: --repeat and --tasks must be >= 1", file=sys.stderr)
        return 2
    if max(args.tasks) > args.scans:
        print(f"sparkmpi-dl bench dataset: error: --tasks {max(args.tasks)} > --scans {args.scans}",
              file=sys.stderr)
        return 2
    args.partitions = None
    result = measure(config_from_args(args), list(args.tasks), args.repeat, args.master)
    print("| Spark tasks | scans/min (median) | vs first |\n|---|---|---|")
    for t in args.tasks:
        print(f"| {t} | {result['scans_per_min'][str(t)]} | {result['speedup_vs_first'][str(t)]}x |")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
