"""The one way the tests build a local Spark session (fixtures in several areas use it)."""
import sys


def quiet_local_session(master: str, app_name: str):
    """A local session with the UI off, no console progress, this interpreter on the
    executors, and Spark's own logging silenced (the tests read the project's output)."""
    from pyspark.sql import SparkSession
    session = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.pyspark.python", sys.executable).getOrCreate())
    session.sparkContext.setLogLevel("OFF")
    return session
