"""`sparkmpi-dl train` / the trainer script: argument errors and launcher detection (no TF run)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from trainers.config import TrainConfig
from trainers.launch import launched_size, run_training


def test_cli_rejects_missing_data_with_the_option_names():
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl", "train", "--num-proc", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "give exactly one of --data DIR or --synthetic" in proc.stderr


def test_cli_help_lists_launch_and_training_options():
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl", "train", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--num-proc", "--controller", "--synthetic", "--data", "--no-resume"):
        assert option in proc.stdout


def test_launcher_detection_and_size_mismatch(monkeypatch):
    for var in ("PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "HOROVOD_RANK",
                "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "HOROVOD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert launched_size() is None
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert launched_size() == 2
    with pytest.raises(ValueError, match="--num-proc 3 disagrees with the launcher's 2 ranks"):
        run_training(TrainConfig(synthetic=True), num_proc=3)


TINY_RUN = ["--synthetic", "--synthetic-samples", "32", "--batch-size", "16", "--steps-per-epoch",
            "2", "--image-shape", "8,8,1", "--width", "4", "--quiet"]


def _train_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparkmpi_dl", "train", *TINY_RUN, *argv],
                          capture_output=True, text=True, timeout=300, check=False)


def test_rerun_with_other_arguments_is_refused_and_resume_is_explicit(tmp_path):
    """Issue 9: a re-run with another --width crashed restoring the mismatched checkpoint.
    Now the run folder records its arguments; a new run never goes into a used folder and
    --resume continues only with the same arguments (--epochs may grow)."""
    out = str(tmp_path / "run")
    first = _train_cli("--out-dir", out, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "run" / "run.json").is_file()

    wider = _train_cli("--out-dir", out, "--epochs", "1", "--width", "8", "--resume")
    assert wider.returncode == 2
    assert wider.stderr.strip() == (
        f"sparkmpi-dl train: error: {out} holds a run (image-classifier) made with other "
        "arguments (differs in ['width']); use the same arguments to resume it, or another folder")

    again = _train_cli("--out-dir", out, "--epochs", "1")
    assert again.returncode == 2 and "already holds a run (image-classifier); a new run would " \
        "mix with it: pass --resume to continue it" in again.stderr
    assert len(list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))) == 1

    longer = _train_cli("--out-dir", out, "--epochs", "2", "--resume")
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert '"first_epoch": 1' in longer.stdout.strip().splitlines()[-1]
