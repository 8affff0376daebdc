"""The ways a job launch can fail, as one family: ``except SparkMPIError`` catches them all.

    SparkMPIError
    ├── SparkSetupError     before any rank starts: the Spark side cannot run the job
    │   ├── BadMaster, InterpreterMismatch   (sparkmpi_dl.launch.spark_setup)
    │   └── NotEnoughSlots                   (sparkmpi_dl.launch.spark)
    ├── JobFailed           the job ran and failed; what the caller of run / run_local /
    │                       run_command / map_in_mpi gets. ``failure`` names the rank.
    └── RankProcessFailed   inside the task (or local thread) hosting one rank: that rank's
                            process failed or was stopped. The driver reports it as JobFailed.

:class:`FailureReport` is not an exception: it is what the job service records about the
first failure of an epoch (which rank, why, its exit code and last stderr lines), carried by
``JobFailed.failure``.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailureReport", "JobFailed", "RankProcessFailed", "SparkMPIError", "SparkSetupError"]


class SparkMPIError(Exception):
    """Base of the errors sparkmpi_dl raises about setting up or running an MPI job."""


class SparkSetupError(SparkMPIError, RuntimeError):
    """Spark could not be started or used as asked; the message is one line for the user."""


@dataclass(frozen=True)
class FailureReport:
    """The first thing that went wrong in an epoch: which rank, and what it left behind.

    ``rank`` is -1 when the whole job failed (its timeout, an interruption)."""

    rank: int
    reason: str
    exit_code: int
    stderr_tail: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"rank {self.rank} {self.reason}" if self.rank >= 0 else self.reason
        if self.stderr_tail:
            text += "\n--- last stderr lines of rank %d ---\n%s" % (
                self.rank, "\n".join(self.stderr_tail))
        return text


class JobFailed(SparkMPIError, RuntimeError):
    """The job failed; ``failure`` says which rank and carries its stderr tail.

    ``processes`` maps each rank to the (host, pid) its process had, for post-mortems.
    """

    def __init__(self, failure: FailureReport | None, fallback: str = "the job failed",
                 processes: dict[int, tuple[str, int]] | None = None) -> None:
        super().__init__(failure.describe() if failure else fallback)
        self.failure = failure
        self.processes = processes or {}


class RankProcessFailed(SparkMPIError, RuntimeError):
    """This rank's process failed, or was stopped because another rank failed."""

    def __init__(self, rank: int, code: int, detail: str) -> None:
        super().__init__(f"rank {rank}: {detail}")
        self.rank, self.code, self.detail = rank, code, detail
