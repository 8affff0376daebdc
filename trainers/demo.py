"""Demo stage: a short Horovod training run whose ranks are Spark barrier tasks."""
from __future__ import annotations

from pathlib import Path


def horovod_training_stage(sc, out: Path) -> dict:
    """Two Horovod ranks (MPI controller, wired by the PMI service) train the Keras CNN."""
    from sparkmpi_dl.horovod import run
    from trainers.config import TrainConfig
    from trainers.train import train

    config = TrainConfig(out_dir=str((out / "horovod").resolve()), synthetic=True, epochs=2,
                         steps_per_epoch=10, resume=False)
    result = run(train, min(2, sc.defaultParallelism), args=(config,), controller="mpi", spark=sc)
    first, last = result["epoch_metrics"][0], result["epoch_metrics"][-1]
    print(f"Horovod on Spark: {result['size']} ranks, loss {first['loss']:.3f} -> {last['loss']:.3f}, "
          f"{result['steps_per_s']:.1f} steps/s; TensorBoard logs and checkpoint in {config.out_dir}")
    return {"ranks": result["size"], "first_epoch_loss": first["loss"], "last_epoch_loss": last["loss"],
            "steps_per_s": result["steps_per_s"], "checkpoint": result["checkpoint"]}


def demo_stages():
    return [("Horovod on Spark: Keras training with ranks in barrier tasks", horovod_training_stage)]
