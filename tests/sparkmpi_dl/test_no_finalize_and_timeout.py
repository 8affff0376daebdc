"""Issue 9 item 1: a rank that exits 0 without MPI_Finalize, and the job-level timeout.

Real MPICH ranks through the local launcher and through Spark local mode. The time limits
below are hang guards only; without the fixes these jobs never end on their own.
"""
import os
import subprocess
import sys
import threading
import time

import pytest

import sparkmpi_dl
from sparkmpi_dl.launch.local import JobFailed, mpirun, run_local
from sparkmpi_dl.pmi import JobService

from .test_mpirun import PROGRAM, Lines
from .processes import alive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(os.path.dirname(sys.executable), "sparkmpi-dl")
PLAIN_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
NO_FINALIZE = "rank 0 exited with code 0 without calling MPI_Finalize while ranks [1] were still in the job"


def _cli(*args: str, timeout: float = 120, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([CLI, *args], cwd=REPO, env={**PLAIN_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def _wait_gone(pids, guard_s: float = 10.0) -> list[int]:
    """The pids still alive after up to guard_s (a killed process may take a moment to reap)."""
    deadline = time.monotonic() + guard_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def _leave_without_finalize():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    comm.Barrier()
    if comm.rank == 0:
        os._exit(0)
    comm.Barrier()
    time.sleep(600)


def _sleep_in_mpi():
    from mpi4py import MPI
    MPI.COMM_WORLD.Barrier()
    time.sleep(600)


# ---- a rank leaving without MPI_Finalize ---------------------------------------------------
def test_mpirun_cli_ends_the_job_when_a_rank_exits_0_without_finalize():
    proc, elapsed = _cli("mpirun", "-n", "2", "--", sys.executable, "-m", "tests.sparkmpi_dl.mpi_programs",
                         "exit_without_finalize")
    print(f"mpirun, rank 0 exits 0 without MPI_Finalize: job ended in {elapsed:.2f} s")
    assert proc.returncode == 1, proc.stderr
    assert NO_FINALIZE in proc.stderr
    assert "[rank 0] rank 0 leaving without MPI_Finalize" in proc.stdout


def test_run_local_names_the_rank_and_leaves_no_process():
    with pytest.raises(JobFailed) as info:
        run_local(_leave_without_finalize, 2, output=Lines())
    failure = info.value.failure
    assert failure.rank == 0 and failure.exit_code == 1
    assert "without calling MPI_Finalize" in failure.reason
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 2 and _wait_gone(pids) == []


def test_a_rank_that_never_used_mpi_may_exit_first():
    """Hydra's rule too: only a process that spoke PMI must finalize (plain commands are fine)."""
    out = Lines()
    code = mpirun(["sh", "-c", 'if [ "$PMI_RANK" = 1 ]; then sleep 0.5; fi; echo done $PMI_RANK'],
                  2, output=out)
    assert code == 0
    assert sorted(line for _, stream, line in out.lines if stream == "stdout") == ["done 0", "done 1"]


def test_spark_ends_the_job_when_a_rank_exits_0_without_finalize(spark):
    start = time.monotonic()
    with pytest.raises(sparkmpi_dl.JobFailed) as info:
        sparkmpi_dl.run_command(PROGRAM + ["exit_without_finalize"], 2, spark=spark, output=Lines())
    print(f"Spark local, rank 0 exits 0 without MPI_Finalize: job ended in {time.monotonic() - start:.2f} s")
    assert info.value.failure.rank == 0
    assert NO_FINALIZE in str(info.value)
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 2 and _wait_gone(pids) == []


def test_spark_run_cli_offers_the_timeout():
    """spark-run passes --timeout to run_command (whose Spark behaviour is tested above and
    below in this process's Spark session: a second JVM would cost a minute on this box)."""
    proc, _ = _cli("spark-run", "--help", timeout=60)
    assert proc.returncode == 0 and "--timeout SECONDS" in proc.stdout


# ---- the job's timeout -----------------------------------------------------------------------
def test_mpirun_cli_timeout_kills_every_rank_and_its_children(tmp_path):
    # each rank starts a grandchild and records its pid before waiting on it
    script = f'sleep 600 & echo $! > {tmp_path}/child-$PMI_RANK; wait'
    proc, elapsed = _cli("mpirun", "-n", "2", "--timeout", "3", "--", "sh", "-c", script)
    assert proc.returncode == 124, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines == [lines[0]] and "timed out after 3 s (the job's timeout)" in lines[0], proc.stderr
    children = [int((tmp_path / f"child-{r}").read_text()) for r in range(2)]
    assert _wait_gone(children) == []
    assert elapsed < 60


def test_cli_refuses_a_non_positive_timeout():
    proc, _ = _cli("mpirun", "-n", "1", "--timeout", "0", "--", "true", timeout=60)
    assert proc.returncode != 0
    assert "--timeout must be a positive number of seconds" in proc.stderr


def test_run_local_timeout_raises_naming_it_and_leaves_no_process():
    start = time.monotonic()
    with pytest.raises(JobFailed) as info:
        run_local(_sleep_in_mpi, 2, output=Lines(), timeout=4)
    assert time.monotonic() - start < 60
    assert info.value.failure.rank == -1 and info.value.failure.exit_code == 124
    assert str(info.value) == "timed out after 4 s (the job's timeout); every rank was stopped"
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 2 and _wait_gone(pids) == []
    assert not [t.name for t in threading.enumerate()
                if t.name.startswith("rank-") or t.name == "sparkmpi-job-service"]


def test_spark_run_timeout_raises_naming_it_and_leaves_no_process(spark):
    with pytest.raises(sparkmpi_dl.JobFailed) as info:
        sparkmpi_dl.run(_sleep_in_mpi, 2, spark=spark, output=Lines(), timeout=6)
    assert "timed out after 6 s (the job's timeout)" in str(info.value)
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 2 and _wait_gone(pids) == []


def test_timeout_ends_a_job_whose_ranks_never_joined():
    """E.g. Spark never scheduled the tasks: the service still ends the job and says so."""
    seen = []
    with JobService(2, timeout=0.5, on_failure=seen.append) as service:
        outcome = service.wait(30)
        late = service.failure_of()
    assert outcome is not None and outcome.failure.rank == -1
    assert "timed out after 0.5 s" in outcome.failure.reason and late is outcome.failure
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == [outcome.failure]


def test_a_job_that_finishes_in_time_is_not_touched_by_its_timeout():
    assert mpirun(PROGRAM + ["collectives"], 2, output=Lines(), timeout=120) == 0
