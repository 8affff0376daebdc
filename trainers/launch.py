"""Starting the trainer: in place when a launcher already made this process a rank, else
as ``--num-proc`` Horovod ranks through Spark barrier tasks (or the local launcher)."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from sparkmpi_dl.flags import add_num_proc
from sparkmpi_dl.launch.environment import launched_size
from trainers.config import TrainConfig
from trainers.train import train

__all__ = ["add_launch_arguments", "launched_size", "run_training", "spark_for", "summary_line"]


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launch")
    add_num_proc(group, type=int, default=None,
                 help="start this many Horovod ranks (default: none started here; omit when "
                      "mpiexec/horovodrun/`sparkmpi-dl mpirun` already started the ranks)")
    group.add_argument("--controller", choices=("mpi", "gloo"), default="mpi",
                       help="Horovod controller: MPI via the PMI service, or Gloo (no MPI)")
    group.add_argument("--master", default=None,
                       help="Spark master URL (default: spark-submit's, else local[N])")
    group.add_argument("--local", action="store_true",
                       help="start the ranks with the local launcher instead of Spark")


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


def run_training(config: TrainConfig, num_proc: int | None, controller: str = "mpi",
                 master: str | None = None, local: bool = False) -> dict:
    """Train and return rank 0's summary, starting ranks only if nobody else did."""
    size = launched_size()
    if size is not None:
        if num_proc is not None and size > 0 and num_proc != size:
            raise ValueError(f"--num-proc {num_proc} disagrees with the launcher's {size} ranks")
        return train(config)
    if num_proc is None:
        return train(config)  # a single process, no launcher
    if num_proc < 1:
        raise ValueError(f"--num-proc must be >= 1, got {num_proc}")
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
