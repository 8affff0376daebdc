"""`recon --cxi F --spark`: Spark tasks read the frames, the MPI ranks get them through the
data plane (recon_env.spark_frames + sparkmpi_dl.run(fn, data=df)); same result as --ranks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recon_env.cxi import read_cxi, read_result_cxi, write_cxi
from recon_env.engine import frame_range
from tests.spark_session import quiet_local_session
from recon_env.simulate import SimulationConfig, simulate

FRAMES, SIZE, ITERATIONS = 64, 32, 6


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small simulated scan (64 frames of 32x32) as a CXI file."""
    path = tmp_path_factory.mktemp("scan") / "scan.cxi"
    write_cxi(path, simulate(SimulationConfig(n_frames=FRAMES, frame_size=SIZE,
                                              probe_diameter=SIZE * 40 / 128, photons=1e6)))
    return path


@pytest.fixture(scope="module")
def spark():
    session = quiet_local_session("local[3]", "recon-spark-dataplane-tests")
    yield session
    session.stop()


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "recon_env.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ), cwd=cwd)


@pytest.fixture(scope="module")
def ranks_reference(scan, tmp_path_factory):
    """`recon --cxi F --ranks 2` without Spark: each rank reads its own frames."""
    out = tmp_path_factory.mktemp("ranks") / "out"
    proc = _cli("recon", "--cxi", str(scan), "--ranks", "2", "--iterations", str(ITERATIONS),
                "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _assert_same_reconstruction(a, b):
    # Both runs give rank r the same frames (frame_range) in the same order, read by the same
    # read_cxi, and sum them with the same MPI allreduce: the objects agree to float32
    # rounding. rtol 1e-5 (about 100 float32 ulps) tolerates a different reduction order in
    # the allreduce; a frame given the wrong position or dropped changes the object by
    # percents, far above it.
    ra, rb = read_result_cxi(a / "recon.cxi"), read_result_cxi(b / "recon.cxi")
    scale = float(np.abs(ra["object"]).max())
    assert ra["object"].shape == rb["object"].shape
    assert np.allclose(ra["object"], rb["object"], rtol=1e-5, atol=1e-6 * scale)
    assert np.allclose(ra["probe"], rb["probe"], rtol=1e-5,
                       atol=1e-6 * float(np.abs(ra["probe"]).max()))
    assert np.allclose(ra["history"]["fourier_error"], rb["history"]["fourier_error"], rtol=1e-5)


def test_frames_dataframe_has_each_partitions_slice_in_order(spark, scan):
    from recon_env.spark_frames import FRAME_SCHEMA, read_cxi_frames

    frames = read_cxi_frames(spark, scan, 3)
    assert [f"{field.name} {field.dataType.simpleString()}" for field in frames.schema.fields] \
        == FRAME_SCHEMA.split(", ")
    parts = frames.rdd.glom().collect()
    assert [[row.frame_index for row in rows] for rows in parts] == \
        [list(range(*frame_range(FRAMES, p, 3))) for p in range(3)]
    whole = read_cxi(scan)
    rows = [row for rows in parts for row in rows]
    assert np.array_equal(np.array([row.frame for row in rows], np.float32).reshape(FRAMES, SIZE, SIZE),
                          whole.intensities)
    assert np.array_equal(np.array([(row.pos_y, row.pos_x) for row in rows]), whole.positions)


def test_frames_dataframe_refuses_more_partitions_than_frames(spark, scan):
    from recon_env.spark_frames import read_cxi_frames

    with pytest.raises(ValueError, match="64 frames cannot be split into 65 partitions"):
        read_cxi_frames(spark, scan, FRAMES + 1)


def test_ranks_reconstruct_without_opening_the_file(spark, scan, ranks_reference, tmp_path):
    """The frames are read by Spark tasks and held by Spark; the CXI file is then moved away,
    so a rank that opened it would fail: the data plane is the ranks' only source."""
    import sparkmpi_dl
    from recon_env.runner import cxi_file, run_recon_on_frames
    from recon_env.spark_frames import read_cxi_frames, read_geometry

    moved = tmp_path / "scan.cxi"
    moved.write_bytes(scan.read_bytes())
    geometry = read_geometry(moved)
    frames = read_cxi_frames(spark, moved, 2).localCheckpoint(eager=True)
    options = {"cxi": str(moved), "cxi_file": cxi_file(moved), "iterations": ITERATIONS,
               "out": str(tmp_path / "out")}
    moved.unlink()
    summaries = sparkmpi_dl.run(run_recon_on_frames, data=frames, args=(options, geometry))
    assert [s["ranks"] for s in summaries] == [2, 2]
    assert summaries[0]["inputs"]["cxi"]["frames"] == FRAMES
    _assert_same_reconstruction(ranks_reference, tmp_path / "out")


def test_recon_cli_spark_equals_ranks(scan, ranks_reference, tmp_path):
    out = tmp_path / "spark"
    proc = _cli("recon", "--cxi", str(scan), "--spark", "--ranks", "2", "--master", "local[2]",
                "--iterations", str(ITERATIONS), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Spark tasks read 64 frames" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["inputs"]["cxi"]["path"] == str(scan.resolve())
    _assert_same_reconstruction(ranks_reference, out)


def test_recon_cli_spark_bad_cxi_is_one_line_before_spark_starts(tmp_path):
    bad = tmp_path / "broken.cxi"
    bad.write_bytes(b"\x00" * 64)
    proc = _cli("recon", "--cxi", str(bad), "--spark", "--ranks", "2",
                "--out", str(tmp_path / "o"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "broken.cxi" in proc.stderr, proc.stderr


def test_a_frame_a_spark_task_cannot_read_is_one_line(spark, tmp_path, capsys):
    """A NaN in frame 12 (partition 1's slice; the driver reads only frame 0): the reading
    task fails, and the command says which file and HDF5 path in one line, exit code 2."""
    import h5py

    from recon_env.cli import main

    path = tmp_path / "nan.cxi"
    write_cxi(path, simulate(SimulationConfig(n_frames=16, frame_size=SIZE,
                                              probe_diameter=SIZE * 40 / 128, photons=1e6)))
    with h5py.File(path, "r+") as f:
        data = f["/entry_1/instrument_1/detector_1/data"]
        frame = data[12]
        frame[3, 3] = np.nan
        data[12] = frame
    code = main(["recon", "--cxi", str(path), "--spark", "--ranks", "2", "--iterations", "2",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines()[-1] == (f"error: {path}: /entry_1/instrument_1/detector_1/data: "
                                    "contains NaN or inf"), err
