"""One dataset row: simulate scan ``index``, reconstruct it as drawn, measure it.

The crops are what a facility would have (the reconstruction itself); the ``truth_*``
columns come from the simulation's ground truth and are the labels a quality estimator
learns to predict.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from recon_datasets.config import CHUNK, BuildConfig, beta_schedule, draw_scan

# phase_rms (rad) class edges of the quality_class column: good / fair / poor / failed
QUALITY_EDGES = (0.1, 0.25, 0.5)


def quality_class(phase_rms: float) -> int:
    """0 good (< 0.1 rad), 1 fair (< 0.25), 2 poor (< 0.5), 3 failed; NaN counts as failed."""
    if not np.isfinite(phase_rms):
        return len(QUALITY_EDGES)
    return int(np.searchsorted(QUALITY_EDGES, phase_rms, side="right"))


def centre_crops(obj: np.ndarray, positions: np.ndarray, frame: int, crop: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(phase, amplitude) crop x crop at the centre of the scanned area, float32.

    The global phase (undefined in ptychography) is removed: the crop's amplitude-weighted
    mean phase is zero.
    """
    centre = positions.mean(axis=0) + frame / 2
    top = np.clip(np.round(centre - crop / 2).astype(int), 0, np.array(obj.shape) - crop)
    window = obj[top[0]:top[0] + crop, top[1]:top[1] + crop].astype(np.complex128)
    window = window * np.exp(-1j * np.angle(np.sum(window)))
    return np.angle(window).astype(np.float32), np.abs(window).astype(np.float32)


def _padded(values: list[float], length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    out[: len(values)] = values
    return out


def reconstruct_scan(config: BuildConfig, index: int) -> dict[str, Any]:
    """The dataset row of scan ``index`` (plain Python/NumPy values, one per column)."""
    from recon_env.engine import EngineConfig, Reconstructor
    from recon_env.errors import ReconstructionDiverged
    from recon_env.simulate import simulate

    drawn = draw_scan(config, index)
    sim, rec_params = drawn["simulation"], drawn["reconstruction"]
    data = simulate(**sim)
    rec = Reconstructor(data, EngineConfig(seed=rec_params["engine_seed"]))
    fourier, change, betas = [], [], []
    diverged = False
    model_error = float("nan")
    for beta in beta_schedule(rec_params):
        state = rec.snapshot()
        try:
            out = rec.step(CHUNK, beta=beta, algorithm=rec_params["algorithm"])
        except ReconstructionDiverged:
            rec.restore(state)  # keep the last sound estimate; the row says it diverged
            diverged = True
            break
        fourier += out["fourier_error"]
        change += out["exit_change"]
        betas += [beta] * CHUNK
        model_error = float(out["model_error"])
    if not fourier:  # diverged in the first chunk: measure the start estimate
        model_error = float(rec.step(0, algorithm=rec_params["algorithm"])["model_error"])
    truth = rec.quality()
    phase, amplitude = centre_crops(rec.result()["object"], data.positions,
                                    config.frame_size, config.crop)
    length = config.max_iterations
    return {
        "scan_index": index,
        "phase": phase.ravel(), "amplitude": amplitude.ravel(),
        "fourier_error": _padded(fourier, length), "exit_change": _padded(change, length),
        "beta_history": _padded(betas, length), "history_length": len(fourier),
        "model_error": model_error, "diverged": diverged,
        **{f"sim_{k}": v for k, v in sim.items()},
        **rec_params,
        "truth_phase_rms": truth["phase_rms"], "truth_phase_nrmse": truth["phase_nrmse"],
        "truth_amplitude_nrmse": truth["amplitude_nrmse"],
        "truth_complex_nrmse": truth["complex_nrmse"],
        "truth_shift_y": float(truth["shift"][0]), "truth_shift_x": float(truth["shift"][1]),
        "truth_region_pixels": truth["region_pixels"],
        "quality_class": quality_class(truth["phase_rms"]),
    }
