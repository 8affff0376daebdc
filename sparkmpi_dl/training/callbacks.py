"""The Keras callbacks every trainer uses: rank-0 checkpoints, a loss log, progress lines.

Imports TensorFlow at the top (the classes subclass its Callback): import this module only
inside a rank that trains.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

Logs = dict[str, Any]


class EpochCheckpoint(tf.keras.callbacks.Callback):  # type: ignore[misc]  # TF is untyped
    """Rank 0 saves model + optimizer + finished-epoch count after every epoch.

    Only rank 0 writes, so ranks never race on the same files; a rerun restores on rank 0
    and broadcasts, so the other ranks need not see the checkpoint directory at all.
    """

    def __init__(self, manager: Any, epoch_var: Any) -> None:
        super().__init__()
        self.manager = manager  # tf.train.CheckpointManager on rank 0, None elsewhere
        self.epoch_var = epoch_var

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch_var.assign(epoch + 1)
        if self.manager is not None:
            self.manager.save(checkpoint_number=epoch + 1)


class LossLog(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """Records the per-step training loss and the rank-averaged epoch metrics.

    Written as JSON lines to ``path`` (rank 0 passes a path, the others None) and kept in
    memory for the trainer's return value; the launcher parity check compares these.
    """

    def __init__(self, path: Path | None, steps_per_epoch: int) -> None:
        super().__init__()
        self.path = path
        self.steps_per_epoch = steps_per_epoch
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self._epoch = 0
        self._t0 = 0.0

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch = epoch
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        record = {"epoch": self._epoch, "step": self._epoch * self.steps_per_epoch + batch,
                  "loss": float((logs or {})["loss"])}
        self.steps.append(record)
        self._write(record)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        record = {"epoch": epoch, "seconds": seconds,
                  "steps_per_s": self.steps_per_epoch / seconds if seconds > 0 else None,
                  **{k: float(v) for k, v in (logs or {}).items()}}
        self.epochs.append(record)
        self._write(record)


class ProgressLines(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """Rank 0's progress when stdout is not a terminal (launchers pipe it): a line every
    ~10 % of an epoch and one per finished epoch, instead of Keras' carriage-return bar."""

    def __init__(self, epochs: int, steps_per_epoch: int, every: int | None = None) -> None:
        super().__init__()
        self.epochs, self.steps = epochs, steps_per_epoch
        self.every = every or max(1, steps_per_epoch // 10)
        self._epoch, self._t0 = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch, self._t0 = epoch, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        done = batch + 1
        if done % self.every == 0 and done < self.steps:
            rate = done / (time.perf_counter() - self._t0)
            print(f"epoch {self._epoch + 1}/{self.epochs} step {done}/{self.steps} "
                  f"loss {(logs or {})['loss']:.4g} ({rate:.1f} steps/s)", flush=True)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        metrics = " ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items())
        print(f"epoch {epoch + 1}/{self.epochs} done in {seconds:.1f} s: {metrics}", flush=True)
