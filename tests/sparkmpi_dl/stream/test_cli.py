"""`sparkmpi-dl stream recon` refuses bad arguments in one line, before Spark starts."""
from __future__ import annotations

import os
import subprocess
import sys


def _recon(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparkmpi_dl.cli", "stream", "recon", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_recon_refuses_a_foreign_folder_and_bad_relaxation(broker, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = _recon("--out", str(foreign), "--broker", broker.url)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{foreign} is not empty" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1

    proc = _recon("--out", str(tmp_path / "o"), "--broker", broker.url, "--beta", "5")
    assert proc.returncode == 1 and proc.stderr == "error: DM needs 0 < |beta| <= 2, got beta=5.0\n"
    proc = _recon("--out", str(tmp_path / "o"), "--broker", broker.url, "--agent", str(tmp_path))
    assert proc.returncode == 1 and "no config.json" in proc.stderr and proc.stderr.count("\n") == 1
