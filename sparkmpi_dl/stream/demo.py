"""`make demo` stage: a simulated scan streamed through Redis and Spark into 2 MPI ranks."""
from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark import SparkContext

    from sparkmpi_dl.demo import StageFn

DEMO_FRAMES = 512
DEMO_RATE = 64.0  # frames/s: the scan takes 8 s to publish, several micro-batches


def live_stage(sc: SparkContext, out: Path) -> dict[str, Any]:
    """Publish a 512-frame simulated scan at a fixed rate while `stream recon` reconstructs
    it live on 2 ranks; the phase after the last frame lands in the report."""
    from pyspark.sql import SparkSession

    from .broker import start
    from .publish import PublishOptions, prepare_streams, publish, simulated_scan
    from .recon import ReconOptions, run_recon_while

    work = out / "stream-live"
    broker = start(out / "stream-broker")
    try:
        scan = simulated_scan({"n_frames": DEMO_FRAMES, "frame_size": 64, "probe_diameter": 20.0,
                               "photons": 1e7, "seed": 1}, scan_id="demo-scan")
        print(f"reconstructing live on 2 MPI ranks; once they are up, publishing "
              f"{DEMO_FRAMES} frames 64x64 at {DEMO_RATE:g} frames/s to {broker.url}", flush=True)
        options = PublishOptions(streams=2, rate=DEMO_RATE)
        prepare_streams(broker.client(), options)
        code, recon, stats = run_recon_while(
            ReconOptions(out=work, ranks=2, trigger=1.0, iterations_per_batch=4,
                         final_iterations=30, end_timeout=60), broker.url, SparkSession(sc),
            lambda: publish(broker.client(), scan, options, out=io.StringIO()))
        stats = stats or {}
    finally:
        broker.stop()
    if code != 0 or recon.result is None:
        raise RuntimeError(f"stream recon ended with code {code}")
    summary = recon.result
    shutil.copy(work / "phase.png", out / "stream_live_phase.png")
    print(f"live phase after the last frame: {out / 'stream_live_phase.png'}", flush=True)
    return {"frames_published": summary["frames_published"],
            "frames_used": summary["frames_used"], "duplicates": summary["duplicates"],
            "missing": summary["missing"], "batches": summary["batches"],
            "publish_frames_per_s": stats.get("frames_per_s"),
            "fourier_error": summary["fourier_error"],
            "end_record_to_final_image_s": summary.get("end_record_to_final_image_s")}


def demo_stages() -> list[tuple[str, StageFn]]:
    return [("Live reconstruction: frames streamed through Redis and Spark into 2 MPI ranks",
             live_stage)]
