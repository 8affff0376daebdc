"""Fixtures of the live-reconstruction tests: a real redis-server per test, one Spark session."""
from __future__ import annotations

import pytest


@pytest.fixture
def broker(tmp_path, monkeypatch):
    """A real Redis (AOF on) on a free loopback port, private to the test; stopped after it.

    SPARKMPI_BROKER_HOME points at the test's folder so no command of the test can find or
    start a broker outside it."""
    from sparkmpi_dl.stream.broker import start

    monkeypatch.setenv("SPARKMPI_BROKER_HOME", str(tmp_path / "broker-home"))
    server = start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session with 4 task slots: 2 resident MPI ranks (barrier tasks) and
    2 for the micro-batches that feed them."""
    import sys

    from pyspark.sql import SparkSession

    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(master=None if _active() else "local[4]", app_name="stream-tests",
                       conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",
                             "spark.pyspark.python": sys.executable})
    sc.setLogLevel("OFF")
    return SparkSession(sc)


def _active() -> bool:
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None
