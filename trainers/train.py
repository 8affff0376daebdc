"""One Horovod rank of the image-classifier training: `train(config)`.

Runs the same under any launcher that gives Horovod its rank (mpiexec, horovodrun,
`sparkmpi-dl mpirun`, Spark barrier tasks through `sparkmpi_dl.horovod.run`). Every rank
builds the same seeded model; with ``resume`` rank 0 restores the last checkpoint and its
state is broadcast to all ranks before the first step, so the run continues exactly where
the last finished epoch left off. Rank 0 opens the run folder first (sparkmpi_dl.runs): a
new run only into an empty folder, a resume only with the recorded arguments.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from sparkmpi_dl.horovod import exit_on_error
from sparkmpi_dl.launch.environment import launched_size
from sparkmpi_dl.training.keras import (Resumed, compile_distributed, configure_tensorflow,
                                        restore_and_broadcast, training_callbacks)
from trainers.config import TrainConfig


def load_rank_data(config: TrainConfig, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's (images, labels): generated, or its row-group shard of the Parquet set."""
    from trainers import data

    if config.synthetic:
        return data.synthetic_images(config.synthetic_samples, config.image_shape,
                                     config.num_classes, config.seed, rank)
    assert config.data is not None  # TrainConfig.check(): --data unless --synthetic
    shards = data.assign_row_groups(data.list_row_groups(config.data), size)
    return data.read_shard(shards[rank], config.image_col, config.label_col,
                           config.image_shape, config.num_classes)


def steps_per_epoch(config: TrainConfig, shard_rows: list[int]) -> int:
    """Same step count on every rank (a collective per step), from the smallest shard."""
    full_batches = min(shard_rows) // config.batch_size
    if full_batches < 1:
        rank = shard_rows.index(min(shard_rows))
        raise ValueError(f"rank {rank} has {min(shard_rows)} rows, fewer than one batch of "
                         f"--batch-size {config.batch_size}; use a smaller batch or fewer ranks")
    return min(full_batches, config.steps_per_epoch or full_batches)


def _shard_rows(config: TrainConfig, size: int) -> list[int]:
    """Rows per rank, known on every rank without communication."""
    if config.synthetic:
        return [config.synthetic_samples] * size
    from trainers import data

    assert config.data is not None  # TrainConfig.check(): --data unless --synthetic
    shards = data.assign_row_groups(data.list_row_groups(config.data), size)
    return [sum(g.num_rows for g in shard) for shard in shards]


def _epoch_dataset(images: np.ndarray, labels: np.ndarray, config: TrainConfig, rank: int,
                   first_epoch: int, steps: int):
    """Batches for epochs first_epoch.. ; epoch e's order depends only on (seed, rank, e)."""
    import tensorflow as tf

    images_t, labels_t = tf.constant(images), tf.constant(labels)
    n, batch = len(labels), config.batch_size

    def one_epoch(epoch):
        seed = tf.stack([tf.constant(config.seed * 7919 + rank, tf.int64), epoch])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))[: steps * batch]
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch, drop_remainder=True)
        return batches.map(lambda idx: (tf.gather(images_t, idx), tf.gather(labels_t, idx)))

    epochs = tf.data.Dataset.range(first_epoch, config.epochs)
    return epochs.flat_map(one_epoch).prefetch(2)


def _compiled_model(config: TrainConfig, size: int):
    """The seeded CNN with Horovod's DistributedOptimizer; optimizer slots already created."""
    import tensorflow as tf

    from trainers.model import build_cnn

    model = build_cnn(config.image_shape, config.num_classes, config.width)
    base = tf.keras.optimizers.legacy.SGD(learning_rate=config.lr * size, momentum=config.momentum)
    optimizer = compile_distributed(model, base, metrics=["accuracy"],
                                    loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, optimizer


def _callbacks(config: TrainConfig, rank: int, steps: int, out: Path, resumed: Resumed,
               log) -> list:
    """The shared skeleton's list (metric averaging, rank 0's checkpoints and TensorBoard)
    around the trainer's own: LR warm-up, the loss log, fault injection, progress lines."""
    import horovod.tensorflow.keras as hvd

    from sparkmpi_dl.training.callbacks import ProgressLines
    from trainers.callbacks import FailAtStep

    scaled_lr = config.lr * hvd.size()
    return training_callbacks(
        resumed, rank, out,
        hvd.callbacks.LearningRateWarmupCallback(initial_lr=scaled_lr, steps_per_epoch=steps,
                                                 warmup_epochs=config.warmup_epochs)
        if config.warmup_epochs > 0 else None,
        log,
        FailAtStep(config.fail_at_step, config.fail_rank, rank, steps)
        if config.fail_at_step is not None else None,
        last=[ProgressLines(config.epochs, steps)
              if rank == 0 and config.verbose and not sys.stdout.isatty() else None])


def train_dataframe(df, config: TrainConfig, num_proc: int | None = None, controller: str = "mpi",
                    **options) -> dict:
    """Train on a Spark DataFrame (images in ``config.image_col``, labels in
    ``config.label_col``): one Horovod rank per partition, each fed its own partition by
    the data plane (no Parquet round trip); rank 0's summary. ``config.data`` stays unset."""
    from sparkmpi_dl.horovod import run

    return run(train_on_partition, num_proc, data=df, args=(config,), controller=controller, **options)


def train_on_partition(table, config: TrainConfig) -> dict:
    """``train`` on this rank's data-plane partition (a ``pyarrow.Table``)."""
    return train(config, table=table)


def train(config: TrainConfig, table=None) -> dict:
    """Train as one Horovod rank; returns this rank's summary (losses, metrics, timings)."""
    (config if table is None else replace(config, synthetic=True)).check()
    known_size = launched_size()
    if table is None and known_size and known_size > 0:  # check the data split before the slow TF import
        steps_per_epoch(config, _shard_rows(config, known_size))
    configure_tensorflow(config.threads, config.seed)
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd

    hvd.init()
    init_done = time.time()
    rank, size = hvd.rank(), hvd.size()
    # From here on, one rank's exception must end the job naming that rank.
    with exit_on_error(rank) if size > 1 else nullcontext():
        init_all = hvd_tf.allgather_object(init_done)  # when the last rank passed hvd.init()
        result = _train_rank(config, rank, size, table)
    result.update(hvd_init_done=init_done, hvd_init_all_done=max(init_all))
    if rank == 0:
        (Path(config.out_dir) / "result.json").write_text(json.dumps(result))
    return result


RUN_KIND = "image-classifier"
# TrainConfig fields that do not decide the result (or may grow on a resume: epochs)
_NOT_RECORDED = ("out_dir", "resume", "threads", "fail_at_step", "fail_rank", "verbose")


def run_record(config: TrainConfig) -> dict:
    """What the run folder records (``run.json``) and a resume must match."""
    record = {k: v for k, v in asdict(config).items() if k not in _NOT_RECORDED}
    record["data"] = str(Path(config.data).resolve()) if config.data else None
    return record


def check_run_folder(config: TrainConfig, write: bool = False) -> None:
    """The run-folder convention (sparkmpi_dl.runs): a new run only into an empty
    --out-dir, --resume only with the recorded arguments (--epochs may change).

    Raises RunFolderError (a ValueError) with one line; ``write`` opens the folder
    (rank 0), else it only checks (the driver, before it starts ranks).
    """
    from sparkmpi_dl.runs import check_run, open_run

    (open_run if write else check_run)(config.out_dir, RUN_KIND, run_record(config),
                                       resume=config.resume, may_change=("epochs",))


def _partition_data(config: TrainConfig, table, rank: int) -> tuple[np.ndarray, np.ndarray]:
    from trainers import data

    where = f"rank {rank}'s partition"
    images = data._decode_images(table.column(config.image_col), config.image_shape, where)
    labels = table.column(config.label_col).to_numpy().astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise ValueError(f"{where}: a label is outside [0, {config.num_classes}) (set --num-classes)")
    return images, labels.astype(np.int32)


def _train_rank(config: TrainConfig, rank: int, size: int, table=None) -> dict:
    from sparkmpi_dl.training.callbacks import LossLog

    out = Path(config.out_dir)
    if rank == 0:
        check_run_folder(config, write=True)
    if table is None:
        steps = steps_per_epoch(config, _shard_rows(config, size))
        images, labels = load_rank_data(config, rank, size)
    else:  # a data-plane partition: the ranks tell each other their row counts
        import horovod.tensorflow as hvd_tf

        images, labels = _partition_data(config, table, rank)
        steps = steps_per_epoch(config, hvd_tf.allgather_object(len(labels)))
    model, optimizer = _compiled_model(config, size)
    resumed = restore_and_broadcast(model, optimizer, out, rank, config.resume)
    first_epoch, restored = resumed.first_epoch, resumed.restored
    keras_bar = rank == 0 and config.verbose and sys.stdout.isatty()
    if rank == 0 and config.verbose:
        what = f"resuming from {restored} at epoch {first_epoch + 1}" if restored else "fresh start"
        print(f"[trainer] {size} rank(s), {steps} steps/epoch, batch {config.batch_size}/rank, "
              f"lr {config.lr * size:g}; {what}", flush=True)

    log = LossLog(out / "metrics.jsonl" if rank == 0 else None, steps)
    t0 = time.perf_counter()
    if first_epoch < config.epochs:
        model.fit(_epoch_dataset(images, labels, config, rank, first_epoch, steps),
                  epochs=config.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                  callbacks=_callbacks(config, rank, steps, out, resumed, log),
                  verbose=1 if keras_bar else 0)
    elif rank == 0 and config.verbose:
        print(f"[trainer] all {config.epochs} epochs already done in {out}", flush=True)
    seconds = time.perf_counter() - t0
    if rank == 0:
        model.save(out / "model.keras")
    steps_run = (config.epochs - first_epoch) * steps
    steady = log.epochs[1:] or log.epochs  # the first epoch includes graph tracing
    return {
        "rank": rank, "size": size, "first_epoch": first_epoch, "epochs": config.epochs,
        "steps_per_epoch": steps, "step_losses": [s["loss"] for s in log.steps],
        "epoch_metrics": log.epochs, "train_seconds": seconds,
        "steps_per_s": steps_run / seconds if steps_run else None,
        "steady_steps_per_s": (len(steady) * steps / sum(e["seconds"] for e in steady)
                               if steady else None),
        "checkpoint": resumed.latest_checkpoint,
    }
