"""The Horovod/Keras skeleton of one training rank, shared by every trainer.

A rank configures TensorFlow (bounded threads, seeded, deterministic ops), compiles its
model with Horovod's DistributedOptimizer, lets rank 0 restore the last checkpoint and
broadcasts rank 0's state (weights, optimizer slots and hyperparameters, finished epochs)
before the first step, then trains with one callback list: metric averaging first,
rank 0's per-epoch checkpoint, the trainer's own callbacks, rank 0's TensorBoard. What a
trainer adds (its model, data, fault injection, summary) stays with the trainer.

TensorFlow and Horovod are imported inside the functions: importing this module is cheap.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEEP_CHECKPOINTS = 3


def configure_tensorflow(threads: int, seed: int) -> None:
    """Deterministic, thread-bounded TF; must run before TensorFlow executes anything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from sparkmpi_dl.tf_threads import limit_tf_threads

    limit_tf_threads(threads, 2)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def compile_distributed(model: Any, base_optimizer: Any, **compile_args: Any) -> Any:
    """Compile ``model`` with ``base_optimizer`` wrapped in Horovod's DistributedOptimizer;
    returns that optimizer, its slots and hyperparameters already created (so a restore
    fills them now and the broadcast covers them)."""
    import horovod.tensorflow.keras as hvd

    optimizer = hvd.DistributedOptimizer(base_optimizer)
    model.compile(optimizer=optimizer, **compile_args)
    optimizer._create_all_weights(model.trainable_variables)
    return optimizer


@dataclass(frozen=True)
class Resumed:
    """Where a rank starts: rank 0's restored state, broadcast to every rank."""

    manager: Any  # tf.train.CheckpointManager on rank 0, None on the others
    epoch_var: Any  # tf.Variable: epochs finished, advanced by EpochCheckpoint
    first_epoch: int  # the first epoch this run trains
    restored: str | None  # the checkpoint restored from, None on a fresh start

    @property
    def latest_checkpoint(self) -> str | None:
        """Rank 0's newest checkpoint (None on other ranks or before the first save)."""
        return self.manager.latest_checkpoint if self.manager is not None else None


def restore_and_broadcast(model: Any, optimizer: Any, out: Path, rank: int, resume: bool) -> Resumed:
    """Rank 0 restores the last checkpoint under ``out/checkpoints`` (with ``resume``); its
    state goes to every rank, so every rank continues exactly where the last finished
    epoch left off. A checkpoint that does not fit the model is an error, not a partial load."""
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    epoch_var = tf.Variable(0, dtype=tf.int64, name="epochs_done")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epochs_done=epoch_var)
    manager, restored = None, None
    if rank == 0:
        manager = tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"),
                                             max_to_keep=KEEP_CHECKPOINTS)
        if resume and manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            restored = manager.latest_checkpoint
    # hyperparameters too: a warm-up callback changes the learning rate, which rank 0 restored
    hyper = [v for v in optimizer._hyper.values() if isinstance(v, tf.Variable)]
    hvd_tf.broadcast_variables(model.variables + optimizer.variables() + hyper + [epoch_var],
                               root_rank=0)
    return Resumed(manager, epoch_var, int(epoch_var.numpy()), restored)


def training_callbacks(resumed: Resumed, rank: int, out: Path, *middle: Any,
                       last: Sequence[Any] = ()) -> list[Any]:
    """Metric averaging first (later callbacks see rank averages), rank 0's checkpoint
    after every epoch, the trainer's ``middle`` callbacks, rank 0's TensorBoard under
    ``out/tensorboard``, then ``last``; ``None`` entries are left out."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from sparkmpi_dl.training.callbacks import EpochCheckpoint

    chosen = [
        hvd.callbacks.MetricAverageCallback(),
        EpochCheckpoint(resumed.manager, resumed.epoch_var),
        *middle,
        tf.keras.callbacks.TensorBoard(str(out / "tensorboard"), profile_batch=0) if rank == 0 else None,
        *last,
    ]
    return [c for c in chosen if c is not None]
