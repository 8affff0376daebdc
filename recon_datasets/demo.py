"""Demo stage: a small dataset build in Spark tasks, checked, with two PNGs for the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_SCANS = 16
DEMO_EPOCHS = 15


def dataset_stage(sc, out: Path) -> dict:
    """Build 16 small scans into <report>/dataset (2 partitions), validate, plot."""
    from recon_datasets.build import build
    from recon_datasets.config import BuildConfig
    from recon_datasets.plots import save_error_scatter, save_gallery
    from recon_datasets.reader import read, to_numpy

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


def estimator_stage(sc, out: Path) -> dict:
    """A short quality-estimator training on that dataset: Horovod ranks in Spark tasks."""
    import sparkmpi_dl.horovod
    from recon_datasets.estimator import EstimatorConfig, train_estimator

    ranks = min(2, sc.defaultParallelism)
    config = EstimatorConfig(data=str((out / "dataset").resolve()), epochs=DEMO_EPOCHS,
                             out_dir=str((out / "quality_estimator").resolve()), batch_size=4)
    print(f"estimator: {ranks} Horovod rank(s), {DEMO_EPOCHS} epochs on {config.data}", flush=True)
    result = sparkmpi_dl.horovod.run(train_estimator, ranks, args=(config,), spark=sc)
    png = out / "quality_estimator" / "estimator_validation.png"
    if png.exists():
        png.replace(out / "estimator_validation.png")  # next to report.md, which lists PNGs
    losses = result["epoch_losses"]
    return {"ranks": ranks, "epochs": DEMO_EPOCHS, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "val_scans": result["val_scans"],
            "val_mae_log10": result["val_mae"], "baseline_mae_log10": result["baseline_mae"],
            "samples_per_s": result["samples_per_s"]}


def demo_stages():
    return [("Dataset build: scans simulated and reconstructed in Spark tasks -> Parquet",
             dataset_stage),
            ("Quality estimator: Horovod training on the dataset's row-group shards",
             estimator_stage)]
