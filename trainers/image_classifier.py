"""Horovod + Keras image classifier, runnable under any launcher.

    spark-submit trainers/image_classifier.py --num-proc 2 --synthetic   # Spark barrier tasks
    sparkmpi-dl train --num-proc 2 --synthetic                           # same, from the CLI
    sparkmpi-dl mpirun -n 2 -- python trainers/image_classifier.py --synthetic
    mpiexec -n 2 python trainers/image_classifier.py --synthetic          # or horovodrun -np 2

Rank 0 prints the progress bar, writes checkpoints (a rerun resumes from the last one),
TensorBoard logs and metrics.jsonl under --out-dir, and a final JSON summary line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (spark-submit, mpiexec): find the project
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.config import add_train_arguments, config_from_args  # noqa: E402
from trainers.launch import add_launch_arguments, run_training, summary_line  # noqa: E402


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    add_launch_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    result = run_training(config, args.num_proc, args.controller, args.master, args.local)
    if result["rank"] == 0:
        print(summary_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
