"""`sparkmpi-dl train ...` and `sparkmpi-dl bench horovod ...` (and the trainer script,
trainers/image_classifier.py, which uses the same parser and handler)."""
from __future__ import annotations

import argparse
import sys

from sparkmpi_dl.runs import RunFolderError
from trainers import bench as bench_horovod
from trainers.config import add_train_arguments, config_from_args
from trainers.launch import add_launch_arguments, launched_size, run_training, summary_line
from trainers.train import check_run_folder


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The trainer's options (training, then launch) on ``parser`` or a new one."""
    parser = parser or argparse.ArgumentParser(description="Horovod + Keras image classifier.")
    add_train_arguments(parser)
    add_launch_arguments(parser)
    return parser


def train_command(args: argparse.Namespace) -> int:
    """`sparkmpi-dl train` and the trainer script: check the run folder, train, summarise.

    The run folder is checked here, before any rank starts (one line, exit code 2), unless
    another launcher already made this process a rank: then rank 0 checks it in train().
    """
    try:
        config = config_from_args(args)
    except ValueError as err:
        args.parser.error(str(err))
    try:
        if launched_size() is None:  # under another launcher, rank 0 checks (and says which)
            check_run_folder(config)
        result = run_training(config, args.num_proc, args.controller, args.master, args.local)
    except RunFolderError as err:
        print(f"sparkmpi-dl train: error: {err}", file=sys.stderr)
        return 2
    if result["rank"] == 0:
        print(summary_line(result), flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    return bench_horovod.main(args)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train the Horovod/Keras image classifier (Spark, local or in place)",
        description="Train the Keras image classifier with Horovod. With --num-proc N the "
        "ranks start as Spark barrier tasks (or locally with --local); without it, the "
        "process trains in place (under mpiexec, horovodrun or `sparkmpi-dl mpirun`).")
    build_parser(train)
    train.set_defaults(func=train_command, parser=train)
    horovod = bench.add_parser(
        "horovod", help="Horovod training: steps/s and time to hvd.init() per launcher",
        description="Runs the same Keras job under native mpiexec/horovodrun, the local "
        "launcher and Spark barrier tasks (MPI and Gloo controllers) in one run.")
    bench_horovod.add_bench_arguments(horovod)
    horovod.set_defaults(func=_bench)
