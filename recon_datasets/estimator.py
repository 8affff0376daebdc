"""Reconstruction-quality estimator: predicts log10 of the true phase RMS error from what a
facility has (the reconstructed crops and the measured error curve), so an agent can be
rewarded on real data, where no ground truth exists.

Training runs as Horovod ranks (any launcher: ``sparkmpi_dl.horovod.run`` through Spark, or a
single process): each rank reads only its share of the Parquet row groups (the trainers'
sharding, :mod:`sparkmpi_dl.training.shards`), the split into training and validation is by
scan (``scan_index % val_every == 0`` is validation), and the validation error is compared with a trivial baseline: a straight
line fitted to log10 of the final model error alone.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from recon_datasets.config import EstimatorConfig
from recon_datasets.reader import load_config, to_numpy, validate
from sparkmpi_dl.training.keras import (compile_distributed, configure_tensorflow,
                                        restore_and_broadcast, training_callbacks)
from sparkmpi_dl.training.shards import RowGroup, assign_row_groups, list_row_groups

COLUMNS = ("scan_index", "phase", "amplitude", "fourier_error", "history_length",
           "model_error", "truth_phase_rms")


RUN_KIND = "quality-estimator"


def check_run_folder(config: EstimatorConfig, write: bool = False) -> None:
    """The run-folder convention (sparkmpi_dl.runs): a new run only into an empty out_dir,
    a resume only with the recorded arguments (epochs may grow). Raises RunFolderError
    (a ValueError); ``write`` opens the folder (rank 0), else it only checks (a driver)."""
    from sparkmpi_dl.runs import check_run, open_run

    record = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "resume", "threads")}
    record["data"] = str(Path(config.data).resolve())
    (open_run if write else check_run)(config.out_dir, RUN_KIND, record, resume=config.resume,
                                       may_change=("epochs",))


def features(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Model inputs from measured columns only; target log10(truth_phase_rms) if present.

    images: (n, C, C, 2) phase and amplitude/mean-1; curve: (n, H, 2) log10 Fourier error
    (padding repeats the last value) and a valid-iteration mask; scalars: log10 final model
    error and the fraction of the longest run.
    """
    phase, amplitude = columns["phase"], columns["amplitude"]
    n = len(phase)
    side = int(round(np.sqrt(phase.reshape(n, -1).shape[1])))
    phase = phase.reshape(n, side, side)
    amplitude = amplitude.reshape(n, side, side)
    amp = amplitude / np.maximum(amplitude.mean(axis=(1, 2), keepdims=True), 1e-12) - 1.0
    images = np.stack([phase, amp], axis=-1).astype(np.float32)
    history = np.asarray(columns["fourier_error"], dtype=np.float64).reshape(n, -1)
    lengths = np.asarray(columns["history_length"]).astype(int)
    log_curve = np.zeros_like(history)
    mask = np.zeros_like(history)
    for i, length in enumerate(lengths):
        valid = np.log10(np.maximum(history[i, :length], 1e-12))
        fill = valid[-1] if length else 0.0
        log_curve[i] = np.concatenate([valid, np.full(history.shape[1] - length, fill)])
        mask[i, :length] = 1.0
    curve = np.stack([log_curve, mask], axis=-1).astype(np.float32)
    model_error = np.log10(np.maximum(np.nan_to_num(columns["model_error"], nan=1.0), 1e-12))
    scalars = np.stack([model_error, lengths / history.shape[1]], axis=-1).astype(np.float32)
    inputs = {"images": images, "curve": curve, "scalars": scalars}
    target = (np.log10(np.asarray(columns["truth_phase_rms"], np.float64)).astype(np.float32)
              if "truth_phase_rms" in columns else None)
    return inputs, target


def build_model(crop: int, history: int):
    """Small two-branch net: conv on the crops, 1-D conv on the error curve, dense head."""
    import tensorflow as tf

    layers = tf.keras.layers
    images = tf.keras.Input((crop, crop, 2), name="images")
    curve = tf.keras.Input((history, 2), name="curve")
    scalars = tf.keras.Input((2,), name="scalars")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(images)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    c = layers.Conv1D(8, 5, padding="same", activation="relu")(curve)
    c = layers.GlobalAveragePooling1D()(c)
    last = layers.Flatten(name="last_error")(layers.Cropping1D((history - 1, 0))(curve))
    h = layers.Concatenate()([x, c, last, scalars])
    h = layers.Dense(32, activation="relu")(h)
    out = layers.Dense(1, name="log10_phase_rms")(h)
    return tf.keras.Model([images, curve, scalars], out, name="quality_estimator")


def fit_baseline(log_model_error: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares line target = a + b * log10(final model error)."""
    if len(target) < 2:
        return float(np.mean(target)) if len(target) else 0.0, 0.0
    b, a = np.polyfit(log_model_error, target, 1)
    return float(a), float(b)


def plan_shards(data: str | Path, size: int) -> list[list[RowGroup]]:
    """Row groups of each of ``size`` ranks (every row exactly once); a rank that would get
    none is an error naming it, raised on every rank before any collective starts."""
    try:
        return assign_row_groups(list_row_groups(data), size)
    except ValueError as err:
        raise ValueError(f"{data}: {err}") from err


def _read_shard(shard: list[RowGroup], where: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for group in shard:
        table = pq.ParquetFile(group.path).read_row_group(group.index, columns=list(COLUMNS))
        for column in COLUMNS:
            parts[column].append(to_numpy(table, column))
    if not shard:
        raise ValueError(f"{where}: empty shard")
    return {c: np.concatenate(v) for c, v in parts.items()}


def train_estimator(config: EstimatorConfig) -> dict[str, Any]:
    """Train as one Horovod rank (a lone process is a job of size 1); rank 0's summary.

    The rank's skeleton (TF set-up, restore and broadcast, checkpoint and TensorBoard
    callbacks) is the trainers' own, :mod:`sparkmpi_dl.training.keras`."""
    config.check()
    configure_tensorflow(config.threads, config.seed)
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from sparkmpi_dl.training.callbacks import LossLog

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    if rank == 0:
        check_run_folder(config, write=True)
        validate(config.data)  # whole-dataset check (metadata + scan_index only)
    build_config, _ = load_config(config.data)
    shard = plan_shards(config.data, size)[rank]
    columns = _read_shard(shard, f"rank {rank} of {size}")
    inputs, target = features(columns)
    assert target is not None  # a dataset row always carries truth_phase_rms
    val = columns["scan_index"] % config.val_every == 0
    train_idx, val_idx = np.nonzero(~val)[0], np.nonzero(val)[0]
    counts = hvd_tf.allgather_object(len(train_idx))
    if min(counts) < 1:
        raise ValueError(f"rank {counts.index(min(counts))} has no training scans in its "
                         f"shard of {config.data}; use fewer ranks or more scans")
    steps = max(1, min(counts) // config.batch_size)  # same step count on every rank
    batch = min(config.batch_size, min(counts))

    out = Path(config.out_dir)
    model = build_model(build_config.crop, build_config.max_iterations)
    optimizer = compile_distributed(model, tf.keras.optimizers.legacy.Adam(config.lr * size),
                                    loss="mse", metrics=["mae"])
    resumed = restore_and_broadcast(model, optimizer, out, rank, config.resume)
    first = resumed.first_epoch

    def batches():
        rng = np.random.default_rng([config.seed, rank, first])
        while True:
            order = rng.permutation(train_idx)[: steps * batch]
            for s in range(steps):
                pick = order[s * batch:(s + 1) * batch]
                yield {k: v[pick] for k, v in inputs.items()}, target[pick]

    log = LossLog(None, steps)
    start = time.perf_counter()
    if first < config.epochs:
        model.fit(batches(), epochs=config.epochs, initial_epoch=first, steps_per_epoch=steps,
                  callbacks=training_callbacks(resumed, rank, out, log), verbose=0)
    seconds = time.perf_counter() - start
    losses = [epoch["loss"] for epoch in log.epochs]

    # validation on every rank's own scans, gathered: model vs the baseline fitted on training scans
    predicted = model.predict({k: v[val_idx] for k, v in inputs.items()}, verbose=0).ravel() \
        if len(val_idx) else np.zeros(0, np.float32)
    gathered = hvd_tf.allgather_object({
        "val_true": target[val_idx], "val_pred": predicted,
        "val_log_err": inputs["scalars"][val_idx, 0],
        "train_true": target[train_idx], "train_log_err": inputs["scalars"][train_idx, 0]})
    result = {"rank": rank, "size": size, "first_epoch": first, "epochs": config.epochs,
              "epoch_losses": losses, "train_seconds": seconds,
              "samples_per_s": (config.epochs - first) * steps * batch * size / seconds
              if first < config.epochs and seconds > 0 else None}
    if rank == 0:
        result.update(_report(gathered, out))
        model.save(out / "model.keras")
        (out / "result.json").write_text(json.dumps({**result, "config": asdict(config)}, indent=2))
        print(f"[estimator] validation MAE (log10 rad): model {result['val_mae']:.3f}, "
              f"baseline {result['baseline_mae']:.3f} on {result['val_scans']} scans", flush=True)
    return result


def _report(gathered: list[dict], out: Path) -> dict[str, Any]:
    """Validation MAE of the model and of the baseline; predicted-vs-true PNG."""
    cat = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]}
    a, b = fit_baseline(cat["train_log_err"], cat["train_true"])
    baseline = a + b * cat["val_log_err"]
    n = len(cat["val_true"])
    mae = float(np.mean(np.abs(cat["val_pred"] - cat["val_true"]))) if n else float("nan")
    base_mae = float(np.mean(np.abs(baseline - cat["val_true"]))) if n else float("nan")
    if n:
        from recon_datasets.plots import save_prediction_png

        save_prediction_png(cat["val_true"], cat["val_pred"], baseline, out / "estimator_validation.png")
    return {"val_scans": n, "val_mae": mae, "baseline_mae": base_mae, "baseline": [a, b]}


class QualityEstimator:
    """A trained estimator for use outside training (e.g. as an environment reward term)."""

    def __init__(self, model_path: str | Path) -> None:
        import tensorflow as tf

        self.model = tf.keras.models.load_model(model_path, compile=False)  # inference only
        self.crop = int(self.model.input_shape[0][1])
        self.history = int(self.model.input_shape[1][1])  # error-curve length it was trained on

    def predict_phase_rms(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted true phase RMS (rad) for rows of measured columns (no truth needed)."""
        inputs, _ = features({k: v for k, v in columns.items() if k != "truth_phase_rms"})
        return 10.0 ** self.model.predict(inputs, verbose=0).ravel()

    def from_reconstructor(self, rec, fourier_error: list[float], max_iterations: int) -> float:
        """Predicted phase RMS of a running reconstruction (its measured history only)."""
        from recon_datasets.scan import centre_crops

        phase, amplitude = centre_crops(rec.result()["object"], rec.data.positions, rec.n, self.crop)
        history = np.zeros(max_iterations, np.float32)
        recent = list(fourier_error)[-max_iterations:]
        history[: len(recent)] = recent
        columns = {"phase": phase[None], "amplitude": amplitude[None], "fourier_error": history[None],
                   "history_length": np.array([len(recent)]),
                   "model_error": np.array([rec.model_error()])}
        return float(self.predict_phase_rms(columns)[0])
