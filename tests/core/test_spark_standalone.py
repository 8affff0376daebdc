"""A Spark standalone cluster (master + 2 workers started here with spark-class) runs MPI ranks."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log_path, env):
    log = open(log_path, "w")
    return subprocess.Popen([os.path.join(BIN, "spark-class")] + args, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for(path, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout} s:\n" + open(path).read()[-2000:])


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("spark-standalone")
    gpus = os.path.join(REPO, "tests", "core", "scripts", "fake_gpus.sh")
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
        _wait_for(logs / "master.log", "I have been elected leader", 90)
        for i in range(2):
            procs.append(_start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                                 "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port())],
                                logs / f"worker{i}.log", env))
        for i in range(2):
            _wait_for(logs / f"worker{i}.log", "Successfully registered with master", 90)
        yield url, env
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _spark_run(url, env, ranks, *cmd, conf=()):
    confs = [arg for item in conf for arg in ("--conf", item)]
    return subprocess.run([sys.executable, "-m", "sparkmpi_dl", "spark-run", "--master", url,
                           "--bind", "127.0.0.1", "-n", str(ranks)] + confs + ["--"] + list(cmd),
                          capture_output=True, text=True, timeout=240, env=env)


def _rank_lines(stdout):
    return sorted(l for l in stdout.splitlines() if l.startswith("[rank "))


def test_mpi_ranks_on_two_standalone_workers(standalone_cluster):
    url, env = standalone_cluster
    proc = _spark_run(url, env, 2, sys.executable, "-m", "tests.core.mpi_programs", "collectives")
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
