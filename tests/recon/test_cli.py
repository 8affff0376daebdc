"""`sparkmpi-dl recon` and `sparkmpi-dl bench recon` end to end (small sizes)."""
import json
import os
import subprocess
import sys

import pytest

SMALL = ["--frames", "24", "--shape", "32", "--photons", "1e6"]


def _cli(*args, timeout=240):
    # recon_env.cli is the same parser `sparkmpi-dl` registers, without the other areas
    return subprocess.run([sys.executable, "-m", "recon_env.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def test_recon_simulated_writes_outputs(tmp_path):
    out = tmp_path / "out"
    sim = tmp_path / "sim.cxi"
    proc = _cli("recon", "--simulate", *SMALL, "--iterations", "12", "--report-every", "4",
                "--out", str(out), "--save-simulation", str(sim))
    assert proc.returncode == 0, proc.stderr
    assert "iteration 12/12" in proc.stdout and "s/it" in proc.stdout
    for name in ("recon.cxi", "object.png", "errors.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 12 and "phase_rms" in summary["quality"]
    # and the saved simulation reconstructs from the file, with RAAR
    proc = _cli("recon", "--cxi", str(sim), "--algorithm", "raar", "--iterations", "3",
                "--out", str(tmp_path / "out2"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["algorithm"] == "raar"


def test_recon_two_ranks(tmp_path):
    proc = _cli("recon", "--simulate", *SMALL, "--iterations", "4", "--ranks", "2",
                "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["ranks"] == 2


def test_recon_bad_cxi_names_file(tmp_path):
    bad = tmp_path / "broken.cxi"
    bad.write_bytes(b"\x00" * 64)
    proc = _cli("recon", "--cxi", str(bad), "--iterations", "2", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "broken.cxi" in proc.stderr and "HDF5" in proc.stderr


@pytest.mark.parametrize("args, match", [(["--beta", "5"], "beta"),
                                         (["--algorithm", "raar", "--beta", "1.5"], "RAAR")])
def test_recon_bad_parameters(tmp_path, args, match):
    proc = _cli("recon", "--simulate", *SMALL, *args, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and match in proc.stderr


def test_bench_json_two_ranks():
    proc = _cli("bench", "recon", "--frames", "16", "--shape", "32", "--iterations", "2",
                "--warmup", "1", "--ranks", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])  # a pure JSON line
    assert report["ranks"] == 2 and report["comm"] == "mpi"


def test_bench_json():
    proc = _cli("bench", "recon", "--frames", "16", "--shape", "32", "--iterations", "3",
                "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["iterations"] == 3 and report["frames"] == 16 and report["shape"] == 32
    assert 0 < report["seconds_per_iteration"] <= report["seconds_total"]


def test_import_is_light():
    """The env (agent side) imports recon_env: no cupy, mpi4py or tensorflow on the way."""
    code = ("import sys, recon_env, recon_env.engine, recon_env.simulate, recon_env.cxi, "
            "recon_env.cli; recon_env.Reconstructor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cupy', 'mpi4py', 'tensorflow'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
