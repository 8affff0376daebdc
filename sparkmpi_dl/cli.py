"""The `sparkmpi-dl` command line.

Each area of the project contributes its own subcommands through a ``register`` function,
so this file stays a short table of contents rather than a growing switchboard:

    def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None

``commands`` takes top-level subcommands (``mpirun``, ``recon``, ...); ``bench`` takes
``sparkmpi-dl bench <name>`` benchmarks. Each parser sets ``func=handler`` where
``handler(args) -> int`` returns the process exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands; a module that is not there yet is skipped.
COMMAND_MODULES = (
    "sparkmpi_dl.commands",
    "recon_env.cli",
    "agents.cli",
    "trainers.cli",
    "recon_datasets.cli",
    "sparkmpi_dl.stream.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkmpi-dl",
        description="Run MPI and Horovod programs inside Spark tasks, and the light-source "
        "deep-learning jobs built on them.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_parser = commands.add_parser("bench", help="benchmarks (figures for BENCHMARKS.md)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name in (name, name.rpartition(".")[0]):
                continue
            raise
        module.register(commands, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
