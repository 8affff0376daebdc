import sys

import pytest


@pytest.fixture(scope="session")
def spark():
    """A local Spark session with 2 task slots (reused if another area's session is active)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    existed = SparkContext._active_spark_context is not None
    session = (SparkSession.builder.master("local[2]").appName("sparkmpi-dl-horovod-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.pyspark.python", sys.executable).getOrCreate())
    session.sparkContext.setLogLevel("OFF")
    yield session
    if not existed:
        session.stop()
