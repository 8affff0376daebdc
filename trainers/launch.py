"""Starting the trainer: in place when a launcher already made this process a rank, else
as ``--num-proc`` Horovod ranks through Spark barrier tasks (or the local launcher)."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sparkmpi_dl.config import Flag, add_dataclass_flags
from sparkmpi_dl.launch.environment import launched_size
from trainers.config import TrainConfig
from trainers.train import train

__all__ = ["LaunchOptions", "add_launch_arguments", "launched_size", "run_training", "spark_for",
           "summary_line"]


@dataclass
class LaunchOptions:
    """Where the trainer's ranks come from (the launch flags of `sparkmpi-dl train`)."""

    num_proc: int | None = None
    """start this many Horovod ranks (default: none started here; omit when
    mpiexec/horovodrun/`sparkmpi-dl mpirun` already started the ranks)"""
    controller: Literal["mpi", "gloo"] = "mpi"
    """Horovod controller: MPI via the PMI service, or Gloo (no MPI)"""
    master: str | None = None
    """Spark master URL (default: spark-submit's, else local[N])"""
    local: bool = False
    """start the ranks with the local launcher instead of Spark"""

    def check(self) -> None:
        """Reject a rank count that cannot work here (ValueError naming --num-proc): fewer
        than one, or another count than the launcher that already started this process."""
        if self.num_proc is None:
            return
        size = launched_size()
        if size is not None and size > 0 and self.num_proc != size:
            raise ValueError(f"--num-proc {self.num_proc} disagrees with the launcher's {size} ranks")
        if self.num_proc < 1:
            raise ValueError(f"--num-proc must be >= 1, got {self.num_proc}")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The LaunchOptions flags (``-n/--num-proc``, older ``--ranks``) in a launch group."""
    add_dataclass_flags(parser.add_argument_group("launch"), LaunchOptions,
                        flags={"num_proc": Flag(names=("-n", "--num-proc"), hidden=("--ranks",),
                                                metavar="N")})


def _absolute(config: TrainConfig) -> TrainConfig:
    """Paths as the driver sees them: ranks may run with another working directory."""
    return replace(config, out_dir=str(Path(config.out_dir).resolve()),
                   data=str(Path(config.data).resolve()) if config.data else None)


def spark_for(master: str | None, num_proc: int):
    """The Spark context for ``num_proc`` ranks: ``master``, else spark-submit's, else
    ``local[num_proc]`` (executors on this interpreter, Spark's chatter off)."""
    from sparkmpi_dl.launch.spark import spark_context

    return spark_context(master=master, default_master=f"local[{num_proc}]",
                         app_name="sparkmpi-dl image trainer")


def run_training(config: TrainConfig, num_proc: int | None,
                 controller: Literal["mpi", "gloo"] = "mpi", master: str | None = None,
                 local: bool = False) -> dict:
    """Train and return rank 0's summary, starting ranks only if nobody else did."""
    LaunchOptions(num_proc, controller, master, local).check()
    if launched_size() is not None or num_proc is None:
        return train(config)  # a rank already, or a single process without a launcher
    from sparkmpi_dl.horovod import run

    config = _absolute(config)
    if local:
        return run(train, num_proc, args=(config,), controller=controller, local=True)
    spark = spark_for(master, num_proc)
    return run(train, num_proc, args=(config,), controller=controller, spark=spark)


def summary_line(result: dict) -> str:
    """One JSON line a person or a script can read after the run."""
    last = result["epoch_metrics"][-1] if result["epoch_metrics"] else {}
    return json.dumps({"ranks": result["size"], "epochs": result["epochs"],
                       "first_epoch": result["first_epoch"], "loss": last.get("loss"),
                       "accuracy": last.get("accuracy"), "steps_per_s": result["steps_per_s"],
                       "checkpoint": result["checkpoint"]})
