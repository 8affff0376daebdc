"""A Spark standalone cluster (master + 2 workers started here with spark-class) runs MPI ranks."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.sparkmpi_dl.spark_cluster import (MASTER_READY, WORKER_READY, free_port as _free_port,
                                      start_spark_class as _start, stop_process_groups,
                                      wait_for_log as _wait_for)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("spark-standalone")
    gpus = os.path.join(REPO, "tests", "sparkmpi_dl", "scripts", "fake_gpus.sh")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(logs / "work"),
           "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable,
           # each worker announces two (pretend) GPUs, so tasks can be given one each
           "SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount=2 "
                                f"-Dspark.worker.resource.gpu.discoveryScript={gpus}"}
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = [_start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(port), "--webui-port", str(_free_port())], logs / "master.log", env)]
    try:
        _wait_for(logs / "master.log", MASTER_READY, 90)
        for i in range(2):
            procs.append(_start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                                 "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port())],
                                logs / f"worker{i}.log", env))
        for i in range(2):
            _wait_for(logs / f"worker{i}.log", WORKER_READY, 90)
        yield url, env
    finally:
        stop_process_groups(procs)


def _spark_run(url, env, ranks, *cmd, conf=()):
    confs = [arg for item in conf for arg in ("--conf", item)]
    return subprocess.run([sys.executable, "-m", "sparkmpi_dl", "spark-run", "--master", url,
                           "--bind", "127.0.0.1", "-n", str(ranks)] + confs + ["--"] + list(cmd),
                          capture_output=True, text=True, timeout=240, env=env)


def _rank_lines(stdout):
    return sorted(l for l in stdout.splitlines() if l.startswith("[rank "))


def test_mpi_ranks_on_two_standalone_workers(standalone_cluster):
    url, env = standalone_cluster
    proc = _spark_run(url, env, 2, sys.executable, "-m", "tests.sparkmpi_dl.mpi_programs", "collectives")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((json.loads(l.split("] ", 1)[1]) for l in _rank_lines(proc.stdout)),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert {r["sum"] for r in results} == {3.0}


def test_standalone_cluster_with_too_few_slots_fails_fast(standalone_cluster):
    url, env = standalone_cluster
    start = time.monotonic()
    proc = _spark_run(url, env, 3, "true")
    assert proc.returncode == 2, proc.stderr[-3000:]
    # executors of a new application may still be registering: 0, 1 or 2 slots are offered
    assert re.search(r"needs 3 task slots .* offers [0-2]: add executors or cores", proc.stderr)
    assert time.monotonic() - start < 180  # JVM start-up included; Spark alone would wait ~10 min


def test_gpus_spark_assigns_become_cuda_visible_devices(standalone_cluster):
    url, env = standalone_cluster
    proc = _spark_run(url, env, 2, "sh", "-c", 'echo "gpus=$CUDA_VISIBLE_DEVICES"',
                      conf=["spark.executor.resource.gpu.amount=1", "spark.task.resource.gpu.amount=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _rank_lines(proc.stdout)
    assert len(lines) == 2 and all(l.split("] ")[1] in ("gpus=0", "gpus=1") for l in lines)


_WHERE = ("import json, sys, sparkmpi_dl; "
          "print(json.dumps(sparkmpi_dl.run(lambda: sys.executable, 2, master=sys.argv[1], "
          "bind_host='127.0.0.1')))")


def test_executors_run_the_drivers_venv_python_with_a_plain_path(standalone_cluster):
    url, env = standalone_cluster
    plain = {k: v for k, v in env.items() if k != "PYSPARK_PYTHON"}
    proc = subprocess.run([sys.executable, "-c", _WHERE, url], capture_output=True, text=True,
                          timeout=240, env={**plain, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [sys.executable] * 2


def test_executors_on_another_python_fail_at_once_naming_it(standalone_cluster):
    url, env = standalone_cluster
    start = time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "sparkmpi-dl"),
                           "spark-run", "--master", url, "--bind", "127.0.0.1", "-n", "2", "--",
                           "true"], capture_output=True, text=True, timeout=240,
                          env={**env, "PYSPARK_PYTHON": "/usr/bin/python3"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"sparkmpi-dl: error: the executor on \S+ runs /usr/bin/python3 "
                    r"\(Python 3\.\d+\.\d+, numpy missing\), but this driver runs "
                    + re.escape(sys.executable), last)
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 180  # JVM start-up included; no rank was started
