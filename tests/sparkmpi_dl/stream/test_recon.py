"""stream recon: publish -> Spark streaming -> MPI ranks -> images, with bad input, a missing
end-of-scan record, and a driver killed with SIGKILL mid-scan (exactly-once counts)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparkmpi_dl.stream.publish import simulated_scan
from sparkmpi_dl.stream.records import (end_fields, frame_fields, start_fields, stream_keys,
                                        stream_of)
from sparkmpi_dl.stream.recon import ReconOptions, run_recon

SIM = {"n_frames": 64, "frame_size": 32, "probe_diameter": 10.0, "photons": 1e6, "seed": 5}
K = 2


@pytest.fixture(scope="module")
def scan():
    return simulated_scan(SIM, scan_id="scan-t")


def _send(client, scan, frames=range(64), start=True, end=True, extra=(), published=64) -> None:
    """Publish by hand (to control exactly what the consumer sees)."""
    keys = stream_keys("sparkmpi", K)
    client.hset("sparkmpi:config", mapping={"streams": K, "max_len": 2048})
    if start:
        client.xadd(keys[0], start_fields(scan.start))
    for i in frames:
        y, x = scan.positions[i]
        client.xadd(keys[stream_of(i, K)], frame_fields("scan-t", i, y, x, scan.frames(i, i + 1)[0]))
    for key, fields in extra:
        client.xadd(key, fields)
    if end:
        client.xadd(keys[0], end_fields("scan-t", published))


def _quality(out: Path, scan) -> float:
    """True phase RMS (rad) of the result in out/recon.cxi (simulation ground truth)."""
    import h5py

    from recon_env.metrics import compare_objects
    from recon_env.simulate import SimulationConfig, simulate

    truth = simulate(SimulationConfig(**SIM)).truth_object
    with h5py.File(out / "recon.cxi") as f:
        obj = f["/entry_1/image_1/data"][()]
        illum = f["/entry_1/image_1/process_1/illumination_map"][()]
    return compare_objects(obj, truth, illum)["phase_rms"]


def _offline_quality(iterations: int) -> float:
    """The same scan reconstructed offline (all frames from the start), same iterations."""
    from recon_env.engine import Reconstructor
    from recon_env.simulate import SimulationConfig, simulate

    rec = Reconstructor(simulate(SimulationConfig(**SIM)))
    rec.step(iterations)
    return rec.quality()["phase_rms"]


def test_live_recon_uses_every_frame_once_and_rejects_bad_ones(broker, spark, scan, tmp_path, capsys):
    keys = stream_keys("sparkmpi", K)
    y, x = scan.positions[7]
    bad = [(keys[1], frame_fields("scan-t", 3, y, x, np.zeros((16, 16), np.float32))),   # shape
           (keys[0], frame_fields("scan-t", 9, y, x, np.zeros((32, 32), np.float64))),   # dtype
           (keys[1], frame_fields("scan-t", 5, *scan.positions[5], scan.frames(5, 6)[0]))]  # again
    _send(broker.client(), scan, extra=bad)
    out = tmp_path / "live"
    code, recon = run_recon(ReconOptions(out=out, ranks=2, trigger=0.5, iterations_per_batch=2,
                                         final_iterations=10, end_timeout=60), broker.url, spark)
    text = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames_published"], summary["frames_used"], summary["duplicates"],
            summary["missing"], summary["rejected"]) == (64, 64, 1, 0, 2), summary
    assert summary["rejected_reasons"] == {"shape": 1, "dtype": 1} and summary["complete"]
    assert re.search(r"batch 0: 64/64 frames, fourier_error [0-9.e+-]+, [0-9.]+ s", text), text
    assert re.search(r"rejected frame 3 .*shape \[16, 16\] != \[32, 32\]", text), text
    assert re.search(r"rejected frame 9 .*dtype 'float64' != 'float32'", text), text
    for name in ("recon.cxi", "object.png", "errors.png", "phase.png", "batches/batch-00000.png"):
        assert (out / name).stat().st_size > 0, name
    from sparkmpi_dl.stream.outputs import read_events

    events = read_events(out / "tb")
    assert events["frames"][0] == (0, 64.0) and "phase" in events and "fourier_error" in events
    # what was read was trimmed from the broker at the end
    assert sum(broker.client().xlen(k) for k in keys) == 0


def test_missing_end_of_scan_times_out_with_the_partial_result(broker, spark, scan, tmp_path, capsys):
    _send(broker.client(), scan, frames=range(40), end=False)
    out = tmp_path / "partial"
    code, _ = run_recon(ReconOptions(out=out, ranks=2, trigger=0.5, iterations_per_batch=2,
                                     final_iterations=4, end_timeout=3), broker.url, spark)
    err = capsys.readouterr().err
    assert code == 3
    assert "error: no end-of-scan record for scan 'scan-t' within 3 s of the last data " \
           "(40/64 frames used); saved the partial result in" in err
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"] and summary["frames_used"] == 40 and summary["missing"] == 24
    assert summary["missing_indices"] == list(range(40, 64))
    assert (out / "recon.cxi").stat().st_size > 0


def test_the_agent_steers_the_live_batches_and_its_schedule_is_recorded(broker, spark, scan, tmp_path):
    _send(broker.client(), scan)
    out = tmp_path / "steered"
    code, _ = run_recon(ReconOptions(out=out, ranks=2, trigger=0.5, iterations_per_batch=4,
                                     final_iterations=4, end_timeout=60, agent="pretrained",
                                     agent_every=2, quiet=True), broker.url, spark)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steering"] == "agent pretrained" and summary["frames_used"] == 64
    schedule = summary["schedule"]
    # two decisions in the batch that brought the frames, two in the final iterations
    assert [e["iterations"] for e in schedule] == [2, 2, 2, 2], schedule
    assert schedule[-1]["batch"] == "final" and isinstance(schedule[0]["batch"], int)
    assert sum(e["iterations"] for e in schedule) == summary["iterations"] == 8
    assert all(e["algorithm"] in ("dm", "raar") and 0 < e["beta"] <= 1 for e in schedule)


def _cli(out: Path, url: str, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sparkmpi_dl.cli", "stream", "recon", "--ranks", "2",
         "--trigger", "0.5", "--out", str(out), "--broker", url, "--iterations-per-batch", "2",
         "--final-iterations", "30", "--end-timeout", "120", "--master", "local[4]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, **env})


@pytest.mark.timeout(900)  # two driver start-ups (JVM, Python workers) on a busy box
def test_driver_killed_mid_scan_resumes_exactly_once(broker, scan, tmp_path):
    """kill -9 after batch 0's state was committed but before Spark recorded the batch:
    the restarted command re-plans batch 0, sees it applied, and goes on; every frame is
    used exactly once and the image is as good as an offline reconstruction."""
    client = broker.client()
    _send(client, scan, frames=range(48), end=False)
    out = tmp_path / "killed"
    first = _cli(out, broker.url, SPARKMPI_STREAM_FAULT="after-commit:0")
    deadline = time.monotonic() + 400
    try:
        while not (out / "fault-reached").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first run never committed batch 0"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait(60)
    _send(client, scan, frames=range(48, 64), start=False, end=True)
    second = _cli(out, broker.url)
    try:
        text, _ = second.communicate(timeout=600)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, text
    assert "resuming" in text and "batch 0: already applied before the restart" in text
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames_published"], summary["frames_used"], summary["duplicates"],
            summary["missing"], summary["rejected"]) == (64, 64, 0, 0, 0), summary
    streamed, offline = _quality(out, scan), _offline_quality(summary["iterations"])
    assert streamed <= 1.1 * offline, (streamed, offline)
