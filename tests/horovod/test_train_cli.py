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
