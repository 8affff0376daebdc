"""tests/agents: silence one known third-party warning so that real ones stand out."""
import pytest

# Keras 2.15 seeds new layers with random.randint(1, 1e9) (a float bound) once a global seed
# is set; Python 3.11 warns about it on every layer.
KERAS_RANDINT = "ignore:non-integer arguments to randrange:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/agents/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings(KERAS_RANDINT))
