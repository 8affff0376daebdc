"""`sparkmpi-dl bench horovod`: one Keras job under each launcher, side by side in one run.

Paths: native ``mpiexec`` (MPICH Hydra, Horovod's MPI controller), native
``horovodrun --gloo``, the local launcher (PMI service, no Spark), Spark barrier tasks
with the MPI controller (Spark+PMI) and Spark with the project's Gloo rendezvous.
Figures per path: steady-state training steps/s (epochs after the first; rank 0) and
the time from job submission until the last rank is past ``hvd.init()``. Repeats rotate
the order so no path always runs first; the table shows medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from sparkmpi_dl.bench.allreduce import venv_tool
from sparkmpi_dl.flags import add_num_proc
from trainers.config import TrainConfig

PATHS = ("native-mpiexec", "native-horovodrun-gloo", "local-pmi", "spark-pmi", "spark-gloo")
SCRIPT = Path(__file__).resolve().parent / "image_classifier.py"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    add_num_proc(parser, dest="ranks", type=int, default=2, help="Horovod ranks per path")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first one is not timed")
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step and rank")
    parser.add_argument("--width", type=int, default=16, help="filters of the first conv layer")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per path (the order rotates); medians shown")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")


def _script_args(config: TrainConfig) -> list[str]:
    return ["--synthetic", "--synthetic-samples", str(config.synthetic_samples),
            "--epochs", str(config.epochs), "--steps-per-epoch", str(config.steps_per_epoch),
            "--batch-size", str(config.batch_size), "--width", str(config.width),
            "--out", config.out_dir, "--no-resume", "--quiet"]


def _native(argv: list[str], config: TrainConfig) -> tuple[float, dict]:
    t0 = time.time()
    subprocess.run(argv + [sys.executable, str(SCRIPT)] + _script_args(config), check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    return t0, json.loads((Path(config.out_dir) / "result.json").read_text())


def run_path(path: str, config: TrainConfig, ranks: int, spark) -> dict:
    """One training run on one path; its steps/s and submit-to-init seconds."""
    from sparkmpi_dl.horovod import run
    from trainers.train import train

    if path == "native-mpiexec":
        t0, result = _native([venv_tool("mpiexec"), "-n", str(ranks)], config)
    elif path == "native-horovodrun-gloo":
        t0, result = _native([venv_tool("horovodrun"), "--gloo", "-np", str(ranks),
                              "-H", f"localhost:{ranks}"], config)
    else:
        silent = lambda rank, stream, line: None  # noqa: E731 - the table is the output
        t0 = time.time()
        result = run(train, ranks, args=(config,), controller="gloo" if "gloo" in path else "mpi",
                     local=path == "local-pmi", spark=None if path == "local-pmi" else spark,
                     output=silent)
    return {"path": path, "steps_per_s": result["steady_steps_per_s"],
            "submit_to_init_s": result["hvd_init_all_done"] - t0,
            "losses": result["step_losses"]}


def main(args: argparse.Namespace) -> int:
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise SystemExit(f"sparkmpi-dl bench horovod: unknown path(s) {unknown}; choose from {PATHS}")
    spark = None
    if any(p.startswith("spark") for p in paths):
        from trainers.launch import spark_for

        t0 = time.perf_counter()
        spark = spark_for(None, args.ranks)
        print(f"spark session up in {time.perf_counter() - t0:.1f} s (not counted below)", flush=True)
    base = TrainConfig(synthetic=True, synthetic_samples=args.steps * args.batch_size,
                       epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                       width=args.width, resume=False, verbose=False)
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory(prefix="bench-horovod-") as tmp:
        for rep in range(args.repeat):
            order = paths[rep % len(paths):] + paths[:rep % len(paths)]
            for path in order:
                config = replace(base, out_dir=str(Path(tmp) / f"{path}-{rep}"))
                r = run_path(path, config, args.ranks, spark)
                runs[path].append(r)
                print(f"  [{rep + 1}/{args.repeat}] {path:24s} {r['steps_per_s']:7.1f} steps/s  "
                      f"submit->hvd.init {r['submit_to_init_s']:5.1f} s", flush=True)
    rows = {p: {"steps_per_s": statistics.median(r["steps_per_s"] for r in runs[p]),
                "submit_to_init_s": statistics.median(r["submit_to_init_s"] for r in runs[p])}
            for p in paths}
    ref = rows.get("native-mpiexec")
    print(f"\n{args.ranks} ranks, {args.steps} steps/epoch x {args.epochs - 1} timed epochs, "
          f"batch {args.batch_size}/rank, median of {args.repeat}")
    print(f"{'path':24s} {'steps/s':>9s} {'vs mpiexec':>11s} {'submit->init s':>15s}")
    for p, row in rows.items():
        ratio = f"{row['steps_per_s'] / ref['steps_per_s']:.3f}" if ref else "-"
        print(f"{p:24s} {row['steps_per_s']:9.1f} {ratio:>11s} {row['submit_to_init_s']:15.2f}")
    same = len({tuple(round(x, 5) for x in r["losses"]) for rs in runs.values() for r in rs}) == 1
    print(f"identical loss trajectories on all paths: {same}")
    if args.json:
        print(json.dumps({"ranks": args.ranks, "config": asdict(base) | {"out_dir": None},
                          "paths": rows, "identical_losses": same}))
    return 0
