"""``sparkmpi-dl bench stream``: the live pipeline's figures on this machine.

* **sustained ingest**: for each ``--rates`` value ``stream recon`` is started (ranks
  connected, query running), then a simulated scan is published at that rate; the rate is
  *sustained* when the publisher never had to wait at the backlog bound (the reconstruction
  kept up) and every frame was used.
  The report gives the highest sustained rate, the largest backlog seen at each rate and
  the consumer's rate (frames / time from the first frame to the last batch's image).
* **end-of-scan latency**: from the end record's publication (its entry id) to the final
  image, minus the final iterations' compute time.
* **empty-batch overhead**: one Spark+MPI step on a micro-batch with no rows (the feed job
  to the resident ranks, their intake, the state committed), median of ``--repeat`` after
  the first (which starts the ranks).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from .publish import Scan


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparkmpi_dl.flags import add_frame_size, add_num_proc

    add_num_proc(p, dest="ranks", type=int, default=2, help="MPI ranks")
    p.add_argument("--streams", type=int, default=2, help="Redis streams (topics)")
    p.add_argument("--frames", type=int, default=8192,
                   help="frames per scan (long enough for several micro-batches at each rate)")
    add_frame_size(p, dest="shape", type=int, default=128, help="frame side N (N x N float32)")
    p.add_argument("--rates", default="250,500,1000",
                   help="comma-separated publish rates to try, frames/s")
    p.add_argument("--trigger", type=float, default=2.0, help="micro-batch interval, seconds")
    p.add_argument("--iterations-per-batch", dest="iterations_per_batch", type=int, default=1,
                   help="iterations on each micro-batch")
    p.add_argument("--final-iterations", dest="final_iterations", type=int, default=10,
                   help="iterations after the end-of-scan record")
    p.add_argument("--max-len", dest="max_len", type=int, default=2048,
                   help="backlog bound per stream (entries)")
    p.add_argument("--repeat", type=int, default=3, help="empty batches to time")
    p.add_argument("--master", help="Spark master (default local[max(ranks + 2, cores)])")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=bench_command)


def _one_rate(spark: SparkSession, url: str, args: argparse.Namespace, rate: float, scan: Scan,
              work: Path) -> dict[str, Any]:
    from .broker import connect
    from .publish import PublishOptions, prepare_streams, publish
    from .recon import ReconOptions, run_recon_while

    client = connect(url)
    for key in client.keys("sparkmpi:*"):
        client.delete(key)
    options = PublishOptions(streams=args.streams, rate=rate, max_len=args.max_len)
    prepare_streams(client, options)
    recon_options = ReconOptions(out=work, ranks=args.ranks, trigger=args.trigger,
                                 iterations_per_batch=args.iterations_per_batch,
                                 final_iterations=args.final_iterations, end_timeout=120,
                                 quiet=True)
    t0 = 0.0

    def produce() -> dict[str, Any]:
        nonlocal t0
        t0 = time.monotonic()
        return publish(client, scan, options, out=io.StringIO())

    code, recon, stats = run_recon_while(recon_options, url, spark, produce)
    stats = stats or {}
    summary = recon.result or {}
    seconds = time.monotonic() - t0
    batches = recon.batch_seconds
    return {"rate": rate, "exit_code": code, "published_frames_per_s": stats.get("frames_per_s"),
            "publisher_waited_s": stats.get("waited_s"), "max_backlog": stats.get("max_backlog"),
            "backlog_bound": args.max_len * args.streams,
            "sustained": code == 0 and stats.get("waited_s", 1) == 0
            and summary.get("frames_used") == args.frames,
            "frames_used": summary.get("frames_used"), "batches": len(batches),
            "batch_seconds_median": statistics.median(batches) if batches else None,
            "batch_seconds_max": max(batches) if batches else None,
            "batch_log": recon.batch_log,
            "consumer_frames_per_s": args.frames / seconds if seconds else None,
            "wall_seconds": seconds,
            "end_latency_excluding_final_iterations_s":
                summary.get("end_latency_excluding_final_iterations_s"),
            "end_record_to_final_image_s": summary.get("end_record_to_final_image_s"),
            "final_iterations_s": summary.get("final_iterations_seconds")}


def _empty_batches(spark: SparkSession, args: argparse.Namespace, work: Path) -> list[float]:
    from .recon import OnlineReconstruction, ReconOptions
    from .source import empty_batch

    recon = OnlineReconstruction(ReconOptions(out=work, ranks=args.ranks, quiet=True),
                                 "redis://127.0.0.1:1", spark)
    empty = empty_batch(spark, args.ranks)  # what a micro-batch without frames costs
    times = []
    try:
        for batch_id in range(args.repeat + 1):  # the first one starts the ranks and workers
            t = time.monotonic()
            recon.handle_batch(empty, batch_id)
            times.append(time.monotonic() - t)
    finally:
        recon.stop_ranks()
    return times[1:]


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from .broker import start
    from .publish import simulated_scan
    from .recon import spark_session

    rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    spark = spark_session(args.ranks, args.master)
    root = Path(tempfile.mkdtemp(prefix="sparkmpi-bench-stream-"))
    broker = start(root / "redis")
    try:
        scan = simulated_scan({"n_frames": args.frames, "frame_size": args.shape,
                               "probe_diameter": args.shape * 40 / 128, "photons": 1e8},
                              scan_id="bench")
        empty = _empty_batches(spark, args, root / "empty")
        results = []
        for i, rate in enumerate(rates):
            results.append(_one_rate(spark, broker.url, args, rate, scan, root / f"rate{i}"))
            if not results[-1]["sustained"]:
                break  # higher rates will not keep up either
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    sustained = [r["rate"] for r in results if r["sustained"]]
    best = max((r for r in results if r["sustained"]), key=lambda r: r["rate"], default=None)
    return {"ranks": args.ranks, "streams": args.streams, "frames": args.frames,
            "shape": args.shape, "frame_bytes": args.shape * args.shape * 4,
            "trigger_s": args.trigger, "iterations_per_batch": args.iterations_per_batch,
            "final_iterations": args.final_iterations,
            "max_sustained_rate": max(sustained) if sustained else None,
            "max_sustained_mb_per_s": (max(sustained) * args.shape ** 2 * 4 / 1e6
                                       if sustained else None),
            "end_latency_excluding_final_iterations_s":
                best["end_latency_excluding_final_iterations_s"] if best else None,
            "empty_batch_s": statistics.median(empty), "empty_batch_all_s": empty,
            "rates": results, "machine": f"{platform.node()} ({os.cpu_count()} cores)",
            "loadavg_1min": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime())}


def bench_command(args: argparse.Namespace) -> int:
    report = run_bench(args)
    if args.json:
        print(json.dumps(report), flush=True)
        return 0
    for r in report["rates"]:
        print(f"{r['rate']:g} frames/s: {'sustained' if r['sustained'] else 'NOT sustained'}, "
              f"max backlog {r['max_backlog']}/{r['backlog_bound']}, {r['batches']} batches, "
              f"end latency (excl. final iterations) "
              f"{r['end_latency_excluding_final_iterations_s'] or float('nan'):.2f} s")
    print(f"highest sustained rate: {report['max_sustained_rate']} frames/s; empty batch "
          f"{report['empty_batch_s']:.2f} s (median)", flush=True)
    return 0
