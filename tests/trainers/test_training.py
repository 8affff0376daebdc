"""The trainer under every launcher: same losses, fail fast, resume, Parquet shards."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import sparkmpi_dl
from sparkmpi_dl.horovod import run
from trainers.config import TrainConfig
from trainers.data import synthetic_images, write_parquet_dataset
from trainers.train import train

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "trainers" / "image_classifier.py")
TINY = ["--synthetic", "--synthetic-samples", "96", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "16", "--image-shape", "16,16,1", "--width", "4", "--quiet"]
CONFIG = TrainConfig(synthetic=True, synthetic_samples=96, epochs=2, steps_per_epoch=3,
                     batch_size=16, image_shape=(16, 16, 1), width=4, verbose=False)


def step_losses(out_dir: Path) -> list[float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"step"' in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[float]:
    """The trajectory under the native launcher: MPICH's mpiexec, 2 ranks."""
    out = tmp_path_factory.mktemp("native")
    subprocess.run(["mpiexec", "-n", "2", sys.executable, SCRIPT, *TINY, "--out-dir", str(out)],
                   check=True, timeout=180)
    losses = step_losses(out)
    assert len(losses) == 6 and all(np.isfinite(losses))
    return losses


def test_same_losses_under_every_launcher_and_controller(reference, tmp_path, spark):
    subprocess.run([sys.executable, "-m", "sparkmpi_dl", "mpirun", "-n", "2", "--", sys.executable,
                    SCRIPT, *TINY, "--out-dir", str(tmp_path / "mpirun")], check=True, timeout=180)
    np.testing.assert_allclose(step_losses(tmp_path / "mpirun"), reference, rtol=1e-6)

    mpi = run(train, 2, args=(replace(CONFIG, out_dir=str(tmp_path / "spark-mpi")),), spark=spark)
    np.testing.assert_allclose(mpi["step_losses"], reference, rtol=1e-6)
    assert (mpi["rank"], mpi["size"]) == (0, 2)

    gloo = run(train, 2, args=(replace(CONFIG, out_dir=str(tmp_path / "spark-gloo")),),
               spark=spark, controller="gloo", return_all=True)
    assert [r["rank"] for r in gloo] == [0, 1]
    np.testing.assert_allclose(gloo[0]["step_losses"], reference, rtol=1e-6)


def test_failing_rank_ends_the_job_fast_and_a_rerun_resumes(reference, tmp_path, spark):
    lines: list[tuple[float, int, str]] = []
    failing = replace(CONFIG, out_dir=str(tmp_path), fail_at_step=4, fail_rank=1)
    with pytest.raises(sparkmpi_dl.JobFailed) as failed:
        run(train, 2, args=(failing,), spark=spark,
            output=lambda rank, stream, line: lines.append((time.monotonic(), rank, line)))
    ended = time.monotonic()
    message = str(failed.value)
    assert "rank 1" in message and "injected failure on rank 1 at step 4" in message
    raised = next(t for t, rank, line in lines if rank == 1 and line.startswith("Traceback"))
    assert ended - raised < 10, f"job took {ended - raised:.1f} s to end after the failure"
    assert (tmp_path / "checkpoints" / "ckpt-1.index").exists()

    resumed = run(train, 2, args=(replace(failing, fail_at_step=None, resume=True),), local=True)
    assert resumed["first_epoch"] == 1
    np.testing.assert_allclose(resumed["step_losses"], reference[3:], rtol=1e-6)


def test_too_few_slots_fails_fast(spark):
    from sparkmpi_dl.launch.spark import available_slots

    slots = available_slots(spark.sparkContext)
    t0 = time.monotonic()
    with pytest.raises(sparkmpi_dl.NotEnoughSlots, match=f"needs {slots + 1} task slots"):
        run(train, slots + 1, args=(CONFIG,), spark=spark, slot_wait_s=1)
    assert time.monotonic() - t0 < 10


def test_parquet_shards_train_and_an_empty_shard_is_refused(tmp_path):
    images, labels = synthetic_images(128, (16, 16, 1), 4, seed=3)
    write_parquet_dataset(tmp_path / "data", images, labels, rows_per_group=64)  # 2 row groups
    config = replace(CONFIG, synthetic=False, data=str(tmp_path / "data"), out_dir=str(tmp_path / "run"))
    result = run(train, 2, args=(config,), local=True, return_all=True)
    assert [r["steps_per_epoch"] for r in result] == [3, 3]  # 64 rows per rank, batch 16
    assert result[0]["epoch_metrics"][-1]["loss"] < result[0]["step_losses"][0]

    with pytest.raises(sparkmpi_dl.JobFailed, match=r"rank\(s\) \[2\] of 3 would get no data"):
        run(train, 3, args=(config,), local=True)


def test_too_small_shard_for_one_batch_is_named():
    from trainers.train import steps_per_epoch

    with pytest.raises(ValueError, match="rank 1 has 10 rows, fewer than one batch of --batch-size 16"):
        steps_per_epoch(CONFIG, [96, 10])
    assert steps_per_epoch(replace(CONFIG, steps_per_epoch=None), [96, 40]) == 2
