import pytest

from tests.spark_session import quiet_local_session


@pytest.fixture(scope="session")
def spark():
    """A local Spark session with 2 task slots (reused if another area's session is active)."""
    from pyspark import SparkContext

    existed = SparkContext._active_spark_context is not None
    session = quiet_local_session("local[2]", "sparkmpi-dl-horovod-tests")
    yield session
    if not existed:
        session.stop()
