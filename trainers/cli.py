"""`sparkmpi-dl train ...` and `sparkmpi-dl bench horovod ...`."""
from __future__ import annotations

import argparse


def _train(args: argparse.Namespace) -> int:
    from trainers.config import config_from_args
    from trainers.launch import run_training, summary_line

    try:
        config = config_from_args(args)
    except ValueError as err:
        args.parser.error(str(err))
    result = run_training(config, args.num_proc, args.controller, args.master, args.local)
    if result["rank"] == 0:
        print(summary_line(result), flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from trainers.bench import main

    return main(args)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    from trainers.bench import add_bench_arguments
    from trainers.image_classifier import build_parser

    train = commands.add_parser(
        "train", help="train the Horovod/Keras image classifier (Spark, local or in place)",
        description="Train the Keras image classifier with Horovod. With --num-proc N the "
        "ranks start as Spark barrier tasks (or locally with --local); without it, the "
        "process trains in place (under mpiexec, horovodrun or `sparkmpi-dl mpirun`).")
    build_parser(train)
    train.set_defaults(func=_train, parser=train)
    horovod = bench.add_parser(
        "horovod", help="Horovod training: steps/s and time to hvd.init() per launcher",
        description="Runs the same Keras job under native mpiexec/horovodrun, the local "
        "launcher and Spark barrier tasks (MPI and Gloo controllers) in one run.")
    add_bench_arguments(horovod)
    horovod.set_defaults(func=_bench)
