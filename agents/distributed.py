"""Data-parallel DQN on Horovod ranks (Spark tasks or local processes via sparkmpi_dl).

Each rank runs its own environment copy, replay buffer and exploration stream (seed + rank);
every minibatch gradient is averaged over the ranks before the Adam step, and rank 0's
initial weights are broadcast, so all ranks hold the same Q network throughout. Updates stay
in lock step because every rank trains at the same env-step counts. ``total_steps`` is per
rank. Rank r writes its run to ``RUN_DIR/rank<r>``; only rank 0 prints progress.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np


def _horovod_average(grads):
    import horovod.tensorflow as hvd

    return [hvd.allreduce(g, op=hvd.Average) for g in grads]


def train_rank(run: dict[str, Any], dqn: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One rank's training (the function each Horovod rank runs)."""
    import horovod.tensorflow as hvd

    from agents.dqn import DQNConfig
    from agents.train import RunConfig, Trainer, save_run_config

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    run_cfg = RunConfig(**{**run, "seed": run["seed"] + rank})
    cfg = DQNConfig(**{**dqn, "hidden": tuple(dqn["hidden"])})
    out = Path(run_dir) / f"rank{rank}"
    quiet = (lambda msg: None)
    log = (lambda msg: print(msg, flush=True)) if rank == 0 else quiet
    trainer = Trainer(run_cfg, cfg, out, log=log, grad_reducer=_horovod_average)
    save_run_config(out, run_cfg, cfg)
    learner = trainer.learner
    hvd.broadcast_variables(learner.q.variables, root_rank=0)
    hvd.broadcast_variables(learner.q_target.variables, root_rank=0)
    learner.refresh_policy()
    result = trainer.train()
    weights = learner.q.get_weights()
    return {"rank": rank, "size": size, "steps": result.progress.step,
            "updates": result.progress.updates,
            "env_steps_per_second": result.steps_per_second,
            "final_eval_mean": result.final_eval.mean if result.final_eval else None,
            "weights_checksum": float(sum(np.sum(w, dtype=np.float64) for w in weights))}


def train_distributed(run, cfg, run_dir: Path, ranks: int, local: bool = True,
                      controller: str = "mpi", master: str | None = None) -> list[dict[str, Any]]:
    """Launch ``ranks`` Horovod ranks through sparkmpi_dl (local processes or Spark tasks
    on ``master``; the executors' interpreter is chosen and checked by the launcher)."""
    if ranks < 1:
        raise ValueError(f"--num-proc must be >= 1, got {ranks}")
    from agents.train import open_run_dir
    from sparkmpi_dl.horovod import run as horovod_run

    # the run-folder convention (sparkmpi_dl.runs), before any Spark or rank starts
    open_run_dir(Path(run_dir), run, cfg, resume=False, kind="dqn-distributed")

    spark = None
    if not local:
        from sparkmpi_dl.launch.spark import spark_context

        spark = spark_context(master=master, default_master=f"local[{ranks}]",
                              app_name="sparkmpi-dl agent train")
    return horovod_run(train_rank, ranks, controller=controller, local=local, return_all=True,
                       spark=spark,
                       kwargs={"run": dataclasses.asdict(run), "dqn": dataclasses.asdict(cfg),
                               "run_dir": str(run_dir)})
