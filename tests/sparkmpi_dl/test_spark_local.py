"""The Spark launcher on a local[4] Spark: barrier tasks as MPI ranks, end to end."""
import json
import os
import subprocess
import sys
import time

import pytest

import sparkmpi_dl
from sparkmpi_dl.launch.spark import NotEnoughSlots, available_slots

from .test_mpirun import PROGRAM, Lines
from .processes import alive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_function_results_come_back_ordered_by_rank(spark):
    def whoami(scale):
        import os
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        return {"rank": comm.rank, "sum": comm.allreduce(scale * (comm.rank + 1)),
                "pmix_rank": os.environ["PMIX_RANK"]}

    results = sparkmpi_dl.run(whoami, 3, args=(10,), spark=spark, output=Lines())
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert {r["sum"] for r in results} == {60}
    assert [r["pmix_rank"] for r in results] == ["0", "1", "2"]


def test_command_mode_runs_mpi_collectives_in_tasks(spark):
    out = Lines()
    sparkmpi_dl.run_command(PROGRAM + ["collectives"], 4, spark=spark, output=out)
    results = out.json_of()
    assert [r["rank"] for r in results] == [0, 1, 2, 3]
    assert {r["sum"] for r in results} == {10.0}
    assert {r["node_size"] for r in results} == {4}


def test_too_few_slots_fails_fast_with_advice(spark):
    assert available_slots(spark.sparkContext) == 4
    start = time.monotonic()
    with pytest.raises(NotEnoughSlots, match=r"needs 6 task slots .* offers 4: use --master local\[6\]"):
        sparkmpi_dl.run(len, 6, args=("x",), spark=spark, slot_wait_s=1)
    assert time.monotonic() - start < 5


def test_a_failing_rank_fails_the_job_fast_with_its_traceback(spark):
    def diverge():
        import time
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        comm.Barrier()
        if comm.rank == 2:
            raise FloatingPointError("reconstruction diverged at iteration 12")
        time.sleep(0.5)
        comm.Barrier()  # the others wait here for a rank that is gone
        time.sleep(600)

    start = time.monotonic()
    with pytest.raises(sparkmpi_dl.JobFailed) as info:
        sparkmpi_dl.run(diverge, 3, spark=spark, output=Lines())
    assert time.monotonic() - start < 15
    assert info.value.failure.rank == 2
    assert "FloatingPointError: reconstruction diverged at iteration 12" in str(info.value)
    # no rank process of this job is left behind
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 3
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


def test_horovod_mpi_controller_in_spark_tasks(spark):
    def hvd_allreduce():
        import horovod.tensorflow as hvd
        import tensorflow as tf
        hvd.init()
        total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum)
        return hvd.rank(), hvd.size(), hvd.mpi_enabled(), float(total.numpy()[0])

    results = sparkmpi_dl.run(hvd_allreduce, 2, spark=spark, output=Lines(),
                              env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert results == [(0, 2, True, 3.0), (1, 2, True, 3.0)]


def test_spark_submit_with_stage_retry_gets_a_fresh_epoch(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable}
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    proc = subprocess.run([spark_submit, "--master", "local[2,2]", "--conf", "spark.ui.enabled=false",
                           os.path.join(REPO, "tests/sparkmpi_dl/scripts/retry_job.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "failed-once").exists()
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    (sum0, epoch0), (sum1, epoch1) = json.loads(line[len("RESULT "):])
    assert sum0 == sum1 == 3
    assert epoch0 == epoch1 and int(epoch0) > 0  # the retried attempt's epoch, not the first's
    # the first attempt's failure is not hidden, with Spark's logging on or off (a session
    # that started a quiet Spark before leaves its log4j option in SPARK_SUBMIT_OPTS);
    # spark-submit merges the Python driver's stderr into its stdout
    said = [line for line in proc.stdout.splitlines() if line.startswith("sparkmpi-dl: attempt 1 failed")]
    assert said and "rank 1" in said[0] and "transient detector glitch" in said[0], proc.stdout


def test_a_master_other_than_the_running_sessions_is_refused_not_ignored(spark):
    from sparkmpi_dl.launch.spark_setup import SparkSetupError
    with pytest.raises(SparkSetupError, match=r"master local\[4\] is already running .* "
                                              r"master local\[2\] cannot be used"):
        sparkmpi_dl.run(len, 1, args=("x",), spark=spark, master="local[2]")
    with pytest.raises(SparkSetupError, match=r"already running"):
        sparkmpi_dl.run(len, 1, args=("x",), master="local[2]")  # the active session
    # the running session's own master is honoured
    assert sparkmpi_dl.run(len, 1, args=("xy",), master="local[4]", output=Lines()) == [2]


def test_a_local_master_does_not_wait_for_executors_that_cannot_join(spark, capsys):
    with pytest.raises(NotEnoughSlots, match=r"needs 5 task slots .* offers 4"):
        sparkmpi_dl.run(len, 5, args=("x",), spark=spark)  # default slot_wait_s=15
    assert "waiting up to" not in capsys.readouterr().out
