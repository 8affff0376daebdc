import sys

import pytest


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the core tests: 4 slots."""
    from pyspark.sql import SparkSession
    session = (SparkSession.builder.master("local[4]").appName("sparkmpi-dl-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.pyspark.python", sys.executable).getOrCreate())
    session.sparkContext.setLogLevel("OFF")
    yield session
    session.stop()
