"""The `sparkmpi-dl` command line: every subcommand answers --help; the benchmark's JSON."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sparkmpi_dl", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["mpirun"], ["spark-run"], ["bench", "allreduce"], ["bench", "wireup"]])
def test_core_subcommands_have_help(command):
    proc = _cli(*command, "--help")
    assert proc.returncode == 0 and "usage: sparkmpi-dl" in proc.stdout


def test_mpirun_without_a_command_says_what_is_missing():
    proc = _cli("mpirun", "-n", "2")
    assert proc.returncode != 0 and "give the command to run after '--'" in proc.stderr


def test_bench_allreduce_prints_table_and_json_line():
    proc = _cli("bench", "allreduce", "--ranks", "2", "--size", "1000", "--repeat", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"ranks", "bytes", "spark_collect_s", "spark_treereduce_s", "spark_mpi_s",
            "native_mpi_s"} <= result.keys()
    assert result["ranks"] == 2 and result["bytes"] == 4000
    assert all(result[k] > 0 for k in ("spark_collect_s", "spark_mpi_s", "native_mpi_s"))
    assert "Spark-MPI / native mpiexec" in proc.stdout


def test_seed_allreduce_example_under_spark_submit():
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("PYSPARK_PYTHON", None)  # the launcher points executors at this Python itself
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "spark-submit"),
                           "--master", "local[2]", os.path.join(REPO, "examples", "allreduce.py"), "2"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: allreduce of 8 MB" in proc.stdout and "last element 10 (expected 10)" in proc.stdout
