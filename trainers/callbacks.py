"""The image trainer's own Keras callback: fault injection for the failure and resume tests.

The callbacks every trainer shares (checkpoints, loss log, progress lines) live in
:mod:`sparkmpi_dl.training.callbacks`.
"""
from __future__ import annotations

import tensorflow as tf


class FailAtStep(tf.keras.callbacks.Callback):
    """Fault injection for the failure and resume tests: raise on one rank at one step."""

    def __init__(self, step: int, rank: int, my_rank: int, steps_per_epoch: int):
        super().__init__()
        self.step, self.rank, self.my_rank = step, rank, my_rank
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self._epoch * self.steps_per_epoch + batch
        if step == self.step and self.my_rank == self.rank:
            raise RuntimeError(f"injected failure on rank {self.rank} at step {step} "
                               f"(--fail-at-step)")
