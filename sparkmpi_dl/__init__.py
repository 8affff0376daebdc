"""sparkmpi_dl: run MPI and Horovod programs inside Spark tasks through a PMI service.

    import sparkmpi_dl
    results = sparkmpi_dl.run(fn, num_proc=4)          # Spark barrier tasks as MPI ranks
    sparkmpi_dl.run_command(["./allreduce"], 4)         # a compiled MPI program
    sparkmpi_dl.run_local(fn, 4)                        # same, without Spark
    sparkmpi_dl.run(fn, data=df)                        # one rank per partition (dataplane)
    with sparkmpi_dl.ResidentRanks(serve, 2) as ranks:  # one MPI job fed by many Spark jobs
        ranks.feed(df)

Heavy imports (pyspark) happen on first use so that ``import sparkmpi_dl`` stays cheap;
type checkers see the real functions through the ``TYPE_CHECKING`` imports below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkmpi_dl.errors import JobFailed, SparkMPIError, SparkSetupError

if TYPE_CHECKING:
    from sparkmpi_dl.api import run, run_command
    from sparkmpi_dl.dataplane.driver import map_in_mpi
    from sparkmpi_dl.dataplane.persistent import ResidentRanks, ResidentRanksFailed
    from sparkmpi_dl.launch.local import mpirun, run_local
    from sparkmpi_dl.launch.spark import NotEnoughSlots

__all__ = ["run", "run_command", "run_local", "mpirun", "map_in_mpi", "ResidentRanks",
           "ResidentRanksFailed", "JobFailed", "NotEnoughSlots", "SparkMPIError", "SparkSetupError"]

_EXPORTS = {
    "run": "sparkmpi_dl.api", "run_command": "sparkmpi_dl.api",
    "NotEnoughSlots": "sparkmpi_dl.launch.spark", "map_in_mpi": "sparkmpi_dl.dataplane.driver",
    "run_local": "sparkmpi_dl.launch.local", "mpirun": "sparkmpi_dl.launch.local",
    "ResidentRanks": "sparkmpi_dl.dataplane.persistent",
    "ResidentRanksFailed": "sparkmpi_dl.dataplane.persistent",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparkmpi_dl' has no attribute {name!r}")
