"""Horovod + Keras image classifier, runnable under any launcher.

    spark-submit trainers/image_classifier.py --num-proc 2 --synthetic   # Spark barrier tasks
    sparkmpi-dl train --num-proc 2 --synthetic                           # same, from the CLI
    sparkmpi-dl mpirun -n 2 -- python trainers/image_classifier.py --synthetic
    mpiexec -n 2 python trainers/image_classifier.py --synthetic          # or horovodrun -np 2

Rank 0 prints the progress bar, writes checkpoints (--resume continues from the last one),
TensorBoard logs and metrics.jsonl under --out-dir, and a final JSON summary line. A new
run goes only into an empty folder; see sparkmpi_dl/runs.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (spark-submit, mpiexec): find the project
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.cli import build_parser, train_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    args.parser = parser
    return train_command(args)


if __name__ == "__main__":
    sys.exit(main())
