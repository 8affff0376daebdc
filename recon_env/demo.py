"""Demo stage: a simulated scan reconstructed by MPI ranks that are Spark barrier tasks."""
from __future__ import annotations

import shutil
from pathlib import Path


def reconstruction_stage(sc, out: Path) -> dict:
    """Difference map on 2 ranks (frames split, sums by MPI_Allreduce), PNGs into the report."""
    import sparkmpi_dl
    from recon_env.runner import run_recon

    recon_dir = (out / "recon").resolve()
    options = {"n_frames": 128, "frame_size": 64, "probe_diameter": 20, "photons": 1e7,
               "seed": 7, "iterations": 60, "report_every": 20, "algorithm": "dm", "beta": 1.0,
               "backend": "numpy", "comm": "auto", "out": str(recon_dir)}
    ranks = min(2, sc.defaultParallelism)
    summary = sparkmpi_dl.run(run_recon, ranks, args=(options,), spark=sc)[0]
    for name in ("object.png", "errors.png"):
        shutil.copy(recon_dir / name, out / f"recon_{name}")
    quality = summary.get("quality", {})
    return {"ranks": summary["ranks"], "frames": options["n_frames"], "iterations": summary["iterations"],
            "seconds": summary["seconds"], "final_fourier_error": summary["fourier_error"],
            "phase_rms_rad": quality.get("phase_rms"), "outputs": str(recon_dir)}


def demo_stages():
    return [("Ptychographic reconstruction by 2 MPI ranks in Spark tasks (DM, 128 frames)",
             reconstruction_stage)]
