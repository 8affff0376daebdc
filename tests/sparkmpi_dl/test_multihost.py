"""Real separate hosts on one machine: a Spark standalone cluster across network namespaces.

Four namespaces on a private bridge (tests/sparkmpi_dl/netns.py), each with its own address and
hostname: a Spark master, two workers, and the driver (``sparkmpi-dl spark-run`` started
inside its namespace). The two MPI ranks therefore run on different "machines": MPICH must
be told so by the PMI service (``PMI_process_mapping``) and talk TCP between them, the job
service must listen on the driver's own address, and a worker host that goes down must end
the job at once, naming that host.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkmpi_dl.pmi import keepalive
from tests.sparkmpi_dl import netns
from tests.sparkmpi_dl.spark_cluster import MASTER_READY, start_spark_class, wait_for_log

REPO = Path(__file__).resolve().parents[2]
MASTER_PORT = 7077  # each host has a network of its own: fixed ports cannot collide
HANG_GUARD_S = 300.0
# The driver's context waits (up to the hang guard) until both workers' executors have
# registered, however slow their JVMs start on a busy machine.
DRIVER_CONF = ("spark.ui.enabled=false", "spark.cores.max=2",
               "spark.scheduler.minRegisteredResourcesRatio=1.0",
               f"spark.scheduler.maxRegisteredResourcesWaitingTime={HANG_GUARD_S:.0f}s")


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_LOCAL_IP", "SPARK_LOCAL_HOSTNAME", "SPARK_MASTER_HOST")}
    env.update(SPARK_WORKER_DIR=str(workdir / "work"), PYSPARK_PYTHON=sys.executable,
               PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
               # The hosts share one kernel, so UCX (MPICH's netmod) would carry traffic
               # between them through its own shared-memory transports (sysv, cma); separate
               # machines have only the network. MPICH's own shared memory is not affected:
               # it is used exactly when PMI_process_mapping puts two ranks on one node.
               UCX_TLS="tcp,self")
    return env


@pytest.fixture
def cluster(tmp_path):
    """A master and two workers, each on its own host; yields (network, master URL, env).

    The workers are still starting when this yields: the driver starts alongside them.
    """
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"separate hosts need network namespaces: {reason}")
    net = netns.Network(("driver", "master", "worker1", "worker2"), tmp_path)
    env = _env(tmp_path)
    procs: list[subprocess.Popen] = []

    def daemon(host: netns.Host, args: list[str]) -> subprocess.Popen:
        proc = start_spark_class(args, tmp_path / f"{host.hostname}.log",
                                 {**env, "SPARK_LOCAL_IP": host.address}, prefix=host.command([]))
        procs.append(proc)
        return proc

    try:
        net.create()
        master = net.hosts["master"]
        url = f"spark://{master.address}:{MASTER_PORT}"
        proc = daemon(master, ["org.apache.spark.deploy.master.Master", "--host", master.address,
                               "--port", str(MASTER_PORT)])
        wait_for_log(tmp_path / f"{master.hostname}.log", MASTER_READY, HANG_GUARD_S, proc)
        for name in ("worker1", "worker2"):
            host = net.hosts[name]
            daemon(host, ["org.apache.spark.deploy.worker.Worker", url, "--host", host.address,
                          "--cores", "1", "--memory", "1g"])
        yield net, url, env
    finally:
        net.close()  # SIGKILLs whatever still runs on any host, then removes the namespaces
        for proc in procs:
            proc.wait(10)


def _wait_for_reports(outdir: Path, driver: subprocess.Popen, log: Path) -> list[dict]:
    deadline = time.monotonic() + HANG_GUARD_S
    paths = [outdir / f"rank{r}.json" for r in range(2)]
    while not all(p.exists() for p in paths):
        if driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) before both ranks reported:\n"
                        + log.read_text()[-3000:])
        if time.monotonic() > deadline:
            pytest.fail("ranks did not report within the hang guard:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    return [json.loads(p.read_text()) for p in paths]


def _wait_for_line(log: Path, prefix: str, driver: subprocess.Popen) -> str:
    """The first line of the driver's log starting with ``prefix`` (failing if it never comes)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        exited = driver.poll() is not None
        found = [line for line in log.read_text().splitlines() if line.startswith(prefix)]
        if found:
            return found[0]
        if exited:
            break
        time.sleep(0.1)
    pytest.fail(f"no line starting {prefix!r} from the driver:\n" + log.read_text()[-3000:])


def _listeners(host: netns.Host, pid: int) -> list[str]:
    """``addr:port`` of every TCP socket process ``pid`` listens on in ``host``'s namespace."""
    found = []
    for line in host.run(["ss", "-Hltnp"]).splitlines():
        fields = line.split()
        if f"pid={pid}," in line:
            found.append(fields[3])
    return found


@pytest.mark.timeout(2 * HANG_GUARD_S)  # five JVMs and two TensorFlow imports on a busy box
def test_ranks_on_two_hosts_talk_tcp_and_a_lost_host_fails_the_job(cluster, tmp_path):
    net, url, env = cluster
    driver_host = net.hosts["driver"]
    outdir = tmp_path / "ranks"
    outdir.mkdir()
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            driver_host.command([sys.executable, "-m", "sparkmpi_dl", "spark-run", "--master", url,
                                 *(arg for item in DRIVER_CONF for arg in ("--conf", item)), "-n", "2",
                                 "--", sys.executable, "-m", "tests.sparkmpi_dl.multihost_program", "ranks",
                                 str(outdir)]),
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        reports = _wait_for_reports(outdir, driver, log)
        workers = {h.hostname: h for name, h in net.hosts.items() if name.startswith("worker")}

        # one rank on each worker host, each seeing itself alone on its node
        assert sorted(r["hostname"] for r in reports) == sorted(workers)
        assert [r["processor_name"] for r in reports] == [r["hostname"] for r in reports]
        for r in reports:
            seen = json.dumps(r)
            assert r["process_mapping"] == "(vector,(0,2,1))", seen  # 2 nodes, 1 rank each
            assert r["node_size"] == 1 and r["local_nranks"] == "1", seen  # ... and MPICH agrees
            assert r["mpi_sum"] == [3.0] * 4, seen
            assert r["hvd"] == {"rank": r["rank"], "size": 2, "local_size": 1, "cross_size": 2,
                                "mpi": True, "sum": [3.0] * 3}, seen
            # MPI traffic went over TCP to the other worker's address (not shared memory)
            other = next(h for h in workers.values() if h.hostname != r["hostname"])
            assert any(p.split(":")[0] == other.address for p in r["tcp_peers"]), seen
            # the job service is reached at the driver's own address
            assert r["service"].rsplit(":", 1)[0] == driver_host.address, seen

        # ... and listens there alone: no wildcard socket in the driver's process
        service_port = reports[0]["service"].rsplit(":", 1)[1]
        python_pid = _driver_python_pid(driver_host, driver.pid)
        listening = _listeners(driver_host, python_pid)
        assert f"{driver_host.address}:{service_port}" in listening, listening
        for address in listening:
            ip = ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]").replace("*", "0.0.0.0"))
            assert ip.is_loopback or str(ip) == driver_host.address, listening

        # take down the host of rank 1 mid-job: the job fails in seconds, naming that host
        lost = workers[reports[1]["hostname"]]
        survivor_pid = reports[0]["pid"]
        start = time.monotonic()
        lost.crash()
        error = _wait_for_line(log, "sparkmpi-dl: job failed", driver)
        elapsed = time.monotonic() - start
        print(f"the job failed {elapsed:.1f} s after its host went down: {error}")
        assert lost.hostname in error, error
        assert elapsed < 20, f"the job took {elapsed:.1f} s to fail after its host went down"
        assert driver.wait(HANG_GUARD_S) != 0
        # nothing of the job is left on the surviving host
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{survivor_pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{survivor_pid}"), "the surviving rank was not stopped"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)


def test_a_host_that_goes_silent_fails_the_job_within_the_keepalive_time(tmp_path):
    """A worker host whose network is cut sends no FIN or RST: only keepalive can tell.

    The job service (driver host) and two launching tasks (worker hosts) run as the Spark
    path runs them, without Spark; each rank does an MPI Allreduce, then idles in the job.
    """
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"separate hosts need network namespaces: {reason}")
    program = [sys.executable, "-m", "tests.sparkmpi_dl.multihost_program"]
    env = _env(tmp_path)
    info, log = tmp_path / "job.json", tmp_path / "service.log"
    procs: list[subprocess.Popen] = []

    def start(host: netns.Host, args: list[str], out: Path) -> subprocess.Popen:
        with open(out, "w") as stream:
            procs.append(subprocess.Popen(host.command(program + args), stdout=stream,
                                          stderr=subprocess.STDOUT, env=env))
        return procs[-1]

    net = netns.Network(("driver", "worker1", "worker2"), tmp_path)
    try:
        net.create()
        service = start(net.hosts["driver"], ["service", str(info), net.hosts["driver"].address], log)
        while not info.exists() and service.poll() is None:
            time.sleep(0.05)
        tasks = [start(net.hosts[f"worker{r + 1}"], ["task", str(info), str(r)], tmp_path / f"task{r}.log")
                 for r in range(2)]
        for r in range(2):
            wait_for_log(log, f"[rank {r}] allreduce 2", 60, service)
        lost = net.hosts["worker2"]
        start_s = time.monotonic()
        lost.run(["ip", "link", "set", "eth0", "down"])
        silent_s = keepalive.IDLE_S + keepalive.INTERVAL_S * keepalive.PROBES
        wait_for_log(log, "outcome:", silent_s + 30, service)
        elapsed = time.monotonic() - start_s
        outcome = next(line for line in log.read_text().splitlines() if line.startswith("outcome:"))
        print(f"the job failed {elapsed:.1f} s after its host went silent: {outcome}")
        assert f"rank 1 lost contact with its launching task on host {lost.hostname}" in outcome
        assert elapsed < silent_s + 10
        # the cut-off side stops its rank too: its task lost the driver the same way
        assert tasks[1].wait(30) != 0
        assert "stopped because lost contact with the driver" in (tmp_path / "task1.log").read_text()
    finally:
        net.close()
        for proc in procs:
            proc.wait(10)


def _driver_python_pid(host: netns.Host, launcher_pid: int) -> int:
    """The driver's Python process: ``ip netns exec``, ``unshare`` and ``sh`` exec into it."""
    assert launcher_pid in host.pids()
    assert b"sparkmpi_dl" in Path(f"/proc/{launcher_pid}/cmdline").read_bytes()
    return launcher_pid
