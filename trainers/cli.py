"""`sparkmpi-dl train` and `sparkmpi-dl bench horovod`, and the one definition of the
trainer's command line: the standalone script (trainers/image_classifier.py) is
:func:`build_parser` plus :func:`sparkmpi_dl.cli.run_command`, so both take the same flags
and report errors the same way (one line on stderr; 2 usage, 1 failure; ``--debug``)."""
from __future__ import annotations

import argparse

from sparkmpi_dl.cli import ArgumentParser, HelpFormatter, add_common_flags
from sparkmpi_dl.config import from_args
from sparkmpi_dl.runs import RunFolderError
from trainers import bench as bench_horovod
from trainers.config import add_train_arguments, config_from_args
from trainers.launch import (LaunchOptions, add_launch_arguments, launched_size, run_training,
                             summary_line)
from trainers.train import check_run_folder

DESCRIPTION = ("Train the Keras image classifier with Horovod. With --num-proc N the ranks start "
               "as Spark barrier tasks (or locally with --local); without it, the process trains "
               "in place (under mpiexec, horovodrun or `sparkmpi-dl mpirun`).")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The trainer's flags (data, training, launch) and handler on ``parser`` (the ``train``
    subcommand's), or on a new standalone parser that also takes ``--verbose``/``--debug``."""
    if parser is None:
        parser = ArgumentParser(description=DESCRIPTION, formatter_class=HelpFormatter)
        add_common_flags(parser)
    add_train_arguments(parser)
    add_launch_arguments(parser)
    parser.set_defaults(func=train_command, parser=parser)
    return parser


def train_command(args: argparse.Namespace) -> int:
    """Check the flags and the run folder, train, print rank 0's summary line.

    The run folder is checked here, before any rank starts (one line, exit code 2), unless
    another launcher already made this process a rank: then rank 0 checks it in train().
    """
    parser: argparse.ArgumentParser = args.parser
    try:
        config = config_from_args(args)
        launch = from_args(LaunchOptions, args)
        launch.check()
    except ValueError as err:
        parser.error(str(err))
    try:
        if launched_size() is None:  # under another launcher, rank 0 checks (and says which)
            check_run_folder(config)
        result = run_training(config, launch.num_proc, launch.controller, launch.master,
                              launch.local)
    except RunFolderError as err:
        raise SystemExit(f"{parser.prog}: error: {err}") from None
    if result["rank"] == 0:
        print(summary_line(result), flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    return bench_horovod.main(args)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """``train`` and ``bench horovod`` (entry point of the group ``sparkmpi_dl.commands``)."""
    build_parser(commands.add_parser(
        "train", help="train the Horovod/Keras image classifier (Spark, local or in place)",
        description=DESCRIPTION))
    horovod = bench.add_parser(
        "horovod", help="Horovod training: steps/s and time to hvd.init() per launcher",
        description="Runs the same Keras job under native mpiexec/horovodrun, the local "
        "launcher and Spark barrier tasks (MPI and Gloo controllers) in one run.")
    bench_horovod.add_bench_arguments(horovod)
    horovod.set_defaults(func=_bench)
