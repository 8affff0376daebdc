"""The Open MPI / PMIx backend: independently started processes form one COMM_WORLD."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparkmpi_dl.pmix import PmixJob, ompi_prefix
from sparkmpi_dl.pmix import run as pmix_run

RANK = textwrap.dedent("""
    import json
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    total = np.zeros(4)
    comm.Allreduce(np.full(4, comm.rank + 1.0), total)
    root = comm.bcast(f"hello from {comm.rank}" if comm.rank == 0 else None)
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).size
    print(json.dumps({"rank": comm.rank, "size": comm.size, "sum": total.tolist(),
                      "bcast": root, "local": local, "lib": MPI.Get_library_version()[:12]}))
""")


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (a job's temp dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd and str(os.getpid()) != proc.name:
            found.append(cmd)
    return found


def test_independent_processes_form_comm_world_and_nothing_leaks():
    n = 3
    with PmixJob(n) as job:
        marker = str(job._dir)
        assert job.env(1)["PMIX_RANK"] == "1"
        # rank 0 runs Open MPI's venv python, the others this venv's (via MPI4PY_LIBMPI)
        procs = [subprocess.Popen([job.python if r == 0 else sys.executable, "-c", RANK], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **job.env_provider(r, [job.hostname] * n)})
                 for r in range(n)]
        outs = [p.communicate(timeout=90) for p in procs]
        assert _leftovers(marker), "placeholders should be alive while the ranks run"
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    results = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["size"] == n and r["sum"] == [6.0] * 4 for r in results)
    assert all(r["bcast"] == "hello from 0" and r["local"] == n for r in results)
    assert all(r["lib"].startswith("Open MPI") for r in results)
    assert _leftovers(marker) == []


def test_teardown_on_error_leaves_no_processes():
    with pytest.raises(KeyError):
        with PmixJob(2) as job:
            marker = str(job._dir)
            raise KeyError("job failed")
    assert _leftovers(marker) == []
    assert not Path(marker).exists()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="num_proc must be >= 1"):
        PmixJob(0)
    with pytest.raises(FileNotFoundError, match="setup_openmpi.sh"):
        ompi_prefix("/nonexistent/ompi")
    with PmixJob(1) as job:
        with pytest.raises(ValueError, match="rank 1 is outside the PMIx job of 1"):
            job.env(1)
        with pytest.raises(RuntimeError, match="needs every rank on the driver's host"):
            job.env_provider(0, ["some-other-node"])


def test_spark_barrier_tasks_join_the_pmix_job(spark):
    def _mpi4py_rank():  # nested, so cloudpickle ships it by value to the executors
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        return comm.rank, comm.size, comm.allreduce(comm.rank + 1), MPI.Get_library_version()[:8]

    results = pmix_run(_mpi4py_rank, 2, spark=spark)
    assert results == [(0, 2, 3, "Open MPI"), (1, 2, 3, "Open MPI")]


def test_a_failing_rank_fails_the_pmix_job_and_tears_it_down():
    import sparkmpi_dl

    def _rank_fails():
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank == 1:
            raise RuntimeError("rank 1 gives up")
        MPI.COMM_WORLD.barrier()  # rank 0 waits for rank 1 forever unless the job is ended

    before = set(_leftovers("sparkmpi-pmix-"))
    t0 = time.monotonic()
    with pytest.raises(sparkmpi_dl.JobFailed, match="rank 1 gives up"):
        pmix_run(_rank_fails, 2, local=True)
    assert time.monotonic() - t0 < 30
    assert set(_leftovers("sparkmpi-pmix-")) <= before


def test_a_killed_driver_leaves_no_pmix_processes():
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from sparkmpi_dl.pmix import PmixJob
        job = PmixJob(2).start()
        print(job._dir, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    marker = driver.stdout.readline().strip()
    assert marker and _leftovers(marker)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while _leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(marker) == []
    shutil.rmtree(marker, ignore_errors=True)  # the dead driver could not remove it


def test_mpirun_dying_at_start_is_reported_with_its_output(tmp_path):
    # a prefix whose mpirun fails at once, like a broken Open MPI install
    (tmp_path / "bin").mkdir()
    for tool in ("prterun", "python"):
        (tmp_path / "bin" / tool).write_text("")
    mpirun = tmp_path / "bin" / "mpirun"
    mpirun.write_text("#!/bin/sh\necho 'no slots, no luck'\nexit 3\n")
    mpirun.chmod(0o755)
    with pytest.raises(RuntimeError, match="(?s)exited with code 3 before its 2 placeholder.*no luck"):
        PmixJob(2, prefix=tmp_path).start()
