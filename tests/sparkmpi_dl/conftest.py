import pytest

from tests.spark_session import quiet_local_session


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the core tests: 4 slots."""
    session = quiet_local_session("local[4]", "sparkmpi-dl-tests")
    yield session
    session.stop()
