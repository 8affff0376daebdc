"""Frames split over MPI ranks give the serial result within float tolerance."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon_env.engine import EngineConfig, Reconstructor, frame_range
from recon_env.simulate import simulate

JOB = Path(__file__).with_name("_mpi_job.py")
ITERATIONS = 6


def _serial():
    data = simulate(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=5,
                    bad_pixels=0.02)
    rec = Reconstructor(data, EngineConfig(seed=2))
    rec.step(ITERATIONS, beta=0.9)
    rec.step(2, algorithm="raar", beta=0.8)
    return rec


def _check_equal(result: dict, ranks: int) -> None:
    """complex64 sums in another order: ~1e-7 per operation, grown by the iterations."""
    rec = _serial()
    assert int(result["size"]) == ranks
    assert [tuple(s) for s in result["shares"]] == [frame_range(40, r, ranks) for r in range(ranks)]
    obj, ref = result["object"], rec.result()["object"]
    assert np.linalg.norm(obj - ref) / np.linalg.norm(ref) < 1e-3
    ref_p = rec.result()["probe"]
    assert np.linalg.norm(result["probe"] - ref_p) / np.linalg.norm(ref_p) < 1e-3
    assert np.allclose(result["fourier_error"], rec.history["fourier_error"], rtol=1e-3)


def test_frame_split_is_balanced_and_complete():
    parts = [frame_range(10, r, 3) for r in range(3)]
    assert parts == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
def test_two_ranks_mpiexec_equal_one(tmp_path):
    out = tmp_path / "mpi.npz"
    proc = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(JOB), str(out),
                           str(ITERATIONS)], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_equal(dict(np.load(out)), 2)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
def test_two_ranks_views_equal_one(tmp_path):
    """Sub-pixel views, probe modes and position refinement split over two ranks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recon_mpi_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "views.npz"
    proc = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(JOB), str(out), "5",
                           "views"], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = dict(np.load(out))
    rec = Reconstructor(simulate(**module.ISSUE14), EngineConfig(**module.ISSUE14_ENGINE))
    rec.step(5)
    ref = rec.result()
    assert np.linalg.norm(got["object"] - ref["object"]) / np.linalg.norm(ref["object"]) < 1e-3
    assert np.abs(got["positions"] - ref["positions"]).max() < 1e-3
    assert np.abs(got["positions"] - rec.initial_positions).max() > 0.01  # they did move
    assert np.allclose(got["fourier_error"], rec.history["fourier_error"], rtol=1e-3)


def test_two_ranks_sparkmpi_mpirun_equal_one(tmp_path):
    launch = pytest.importorskip("sparkmpi_dl.launch.local")
    out = tmp_path / "mpi.npz"
    code = launch.mpirun([sys.executable, str(JOB), str(out), str(ITERATIONS)], 2)
    assert code == 0
    _check_equal(dict(np.load(out)), 2)


def test_two_ranks_spark_barrier_tasks_equal_one():
    """The same job as Spark barrier tasks (sparkmpi_dl.run): slow-ish, a JVM starts."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs java")
    import importlib.util

    import sparkmpi_dl

    spec = importlib.util.spec_from_file_location("recon_mpi_job", JOB)
    module = importlib.util.module_from_spec(spec)
    sys.modules["recon_mpi_job"] = module
    spec.loader.exec_module(module)
    # the tasks cannot import tests/: ship the function by value, whichever cloudpickle
    # copy (plain or pyspark's) the launcher uses
    for name in ("cloudpickle", "pyspark.cloudpickle"):
        try:
            importlib.import_module(name).register_pickle_by_value(module)
        except ImportError:
            pass
    results = sparkmpi_dl.run(module.job, 2, args=(ITERATIONS,))
    _check_equal(results[0], 2)
