"""summary.json entries and figures for refined positions and probe modes (recon CLI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .positions import position_error_rms, save_positions_png


def summary_entries(rec, data, result: dict) -> dict:
    """Position-refinement and probe-mode figures of a finished run. Called on every rank:
    the initial positions are gathered like the refined ones and kept in
    result["initial_positions"] for the figure."""
    out: dict = {}
    if rec.config.refine_positions:
        initial = _initial_global(rec)
        result["initial_positions"] = initial
        change = np.hypot(*(result["positions"] - initial).T)
        entry = {"refined": True, "frames": int(len(change)),
                 "rms_change_px": float(np.sqrt(np.mean(change ** 2))),
                 "max_change_px": float(change.max())}
        truth = data.meta.get("true_positions")
        if truth is not None and len(truth) == len(initial):  # a simulation, one rank
            entry["error_rms_px_before"] = position_error_rms(initial, truth)
            entry["error_rms_px_after"] = position_error_rms(result["positions"], truth)
        out["positions"] = entry
    if result.get("mode_fractions") is not None:
        out["probe_modes"] = {"count": len(result["mode_fractions"]),
                              "power_fractions": [float(v) for v in result["mode_fractions"]]}
        if data.meta.get("mode_powers") is not None:
            out["probe_modes"]["true_power_fractions"] = list(data.meta["mode_powers"])
    return out


def _initial_global(rec) -> np.ndarray:
    if rec.comm.size == 1 and rec._total == rec.local_frames:
        return rec.initial_positions.copy()
    buf = np.zeros((rec._total, 2))
    buf[rec._offset:rec._offset + rec.local_frames] = rec.initial_positions
    return rec.ops.to_host(rec.comm.allreduce(rec.ops.asarray(buf))).astype(np.float64)


def save_figures(out: Path, data, result: dict, summary: dict) -> list[str]:
    """positions.png (refined positions and the shift field) and modes.png; returns the
    names written."""
    written = []
    initial = result.get("initial_positions")
    if initial is not None:
        truth = data.meta.get("true_positions")
        if len(initial):
            save_positions_png(initial, result["positions"], data.object_pixel_m,
                               out / "positions.png",
                               truth if truth is not None and len(truth) == len(initial)
                               else None)
            written.append("positions.png")
    if result.get("probe_modes") is not None:
        from .modes import save_modes_png

        save_modes_png(result["probe_modes"], out / "modes.png", data.object_pixel_m)
        written.append("modes.png")
    return written
