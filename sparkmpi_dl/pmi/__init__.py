"""PMI service: lets MPI processes that no mpiexec started find each other (see service.py)."""
from sparkmpi_dl.pmi.auth import JoinRefused
from sparkmpi_dl.pmi.service import EnvProvider, JobOutcome, JobService, OutputSink
from sparkmpi_dl.errors import FailureReport

__all__ = ["EnvProvider", "JobOutcome", "JobService", "JoinRefused", "OutputSink", "FailureReport"]
