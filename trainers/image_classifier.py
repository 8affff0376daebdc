"""Horovod + Keras image classifier, runnable under any launcher.

    spark-submit trainers/image_classifier.py --num-proc 2 --synthetic   # Spark barrier tasks
    sparkmpi-dl train --num-proc 2 --synthetic                           # same, from the CLI
    sparkmpi-dl mpirun -n 2 -- python trainers/image_classifier.py --synthetic
    mpiexec -n 2 python trainers/image_classifier.py --synthetic          # or horovodrun -np 2

Rank 0 prints the progress bar, writes checkpoints (--resume continues from the last one),
TensorBoard logs and metrics.jsonl under --out-dir, and a final JSON summary line. A new
run goes only into an empty folder; see sparkmpi_dl/runs.py.

The flags and the handler are `sparkmpi-dl train`'s (trainers/cli.py), run under the CLI's
error convention (sparkmpi_dl/cli.py): one line on stderr, exit code 2 for a usage error and
1 for a failure, the traceback only with --debug.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (spark-submit, mpiexec): find the project
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkmpi_dl.cli import run_command  # noqa: E402
from trainers.cli import build_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and train; returns the exit code."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
