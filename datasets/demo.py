"""Demo stage: a small dataset build in Spark tasks, checked, with two PNGs for the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_SCANS = 8


def dataset_stage(sc, out: Path) -> dict:
    """Build ~8 scans into <report>/dataset (2 partitions), validate, plot."""
    from datasets.build import build
    from datasets.config import BuildConfig
    from datasets.plots import save_error_scatter, save_gallery
    from datasets.reader import read, to_numpy

    config = BuildConfig(scans=DEMO_SCANS, partitions=2, n_frames=24, frame_size=32, crop=24,
                         iterations=(5, 40), rows_per_group=2, seed=2026)
    summary = build(config, out / "dataset", spark=sc, progress_s=15)
    table = read(out / "dataset")
    rms = to_numpy(table, "truth_phase_rms")
    model_error = to_numpy(table, "model_error")
    save_gallery(to_numpy(table, "phase"), rms, out / "dataset_phase_crops.png")
    save_error_scatter(model_error, rms, to_numpy(table, "algorithm"), out / "dataset_error_vs_truth.png")
    finite = np.isfinite(model_error) & (model_error > 0)
    corr = float(np.corrcoef(np.log10(model_error[finite]), np.log10(rms[finite]))[0, 1])
    print(f"dataset: true phase RMS from {rms.min():.3f} to {rms.max():.3f} rad; "
          f"corr(log model error, log true error) = {corr:.2f}", flush=True)
    return {"dataset": str(out / "dataset"), "rows": summary["rows"],
            "partitions": summary["partitions"], "scans_per_min": summary["scans_per_min"],
            "truth_phase_rms_min": float(rms.min()), "truth_phase_rms_median": float(np.median(rms)),
            "truth_phase_rms_max": float(rms.max()), "log_error_correlation": corr,
            "diverged": int(to_numpy(table, "diverged").sum())}


def demo_stages():
    return [("Dataset build: scans simulated and reconstructed in Spark tasks -> Parquet",
             dataset_stage)]
