"""Shared fixtures: one local Spark session and one small reference dataset for the module."""
from pathlib import Path

import pytest

from recon_datasets.config import BuildConfig

# Tiny scans: 16 frames of 32 px, 5-15 iterations; 8 scans in 3 partitions.
SMALL = BuildConfig(scans=8, partitions=3, n_frames=16, frame_size=32, crop=24,
                    iterations=(5, 15), rows_per_group=2, seed=7)


@pytest.fixture(scope="session")
def spark():
    """2 local task slots through the project's own spark_context (reuses an active one)."""
    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(master=None if _active() else "local[2]", app_name="dataset-tests",
                       conf={"spark.ui.enabled": "false"})
    sc.setLogLevel("OFF")
    return sc


def _active() -> bool:
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


@pytest.fixture(scope="session")
def reference(spark, tmp_path_factory) -> Path:
    """A complete dataset built once (read-only for tests: copy it before damaging it)."""
    from recon_datasets.build import build

    out = tmp_path_factory.mktemp("reference") / "ds"
    build(SMALL, out, spark=spark, progress_s=60)
    return out
