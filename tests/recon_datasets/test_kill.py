"""A build killed for real (SIGKILL of the driver, its JVM and workers) resumes cleanly."""
import os
import signal
import subprocess
import sys
import time

import pytest

from recon_datasets.build import build
from recon_datasets.reader import read, validate
from recon_datasets.schema import DatasetError

from .conftest import SMALL

# the same scans as the reference, one per partition, one task at a time
SCRIPT = f"""
import sys
from recon_datasets.build import build
from recon_datasets.config import BuildConfig
config = BuildConfig(**{{**{SMALL.to_dict()!r}, "partitions": 8}})
build(config, sys.argv[1], master="local[1]", progress_s=60)
"""


def test_killed_build_resumes(spark, reference, tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("part-*.parquet")):
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "no partition written in 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    if len(written) == 8:
        pytest.skip("the build finished before the kill landed")
    with pytest.raises(DatasetError, match="build is not finished"):
        validate(out)
    config = type(SMALL)(**{**SMALL.to_dict(), "partitions": 8})
    summary = build(config, out, spark=spark, progress_s=60)
    assert summary["built_partitions"] == 8 - len(written)
    table = read(out)
    assert table.column("scan_index").to_pylist() == list(range(SMALL.scans))
    assert table.equals(read(reference))  # rows do not depend on the partitioning
