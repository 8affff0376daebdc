"""What a user sees when something goes wrong: one line naming the problem, never pages of
Py4J or Spark logging; a failing rank's traceback once; Ctrl-C ends without a traceback."""
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "sparkmpi-dl")
# Spark's log4j lines look like "26/11/29 04:09:02 WARN Utils: ..."
SPARK_LOG_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARN|ERROR) |Setting default log level")


def _env() -> dict[str, str]:
    """A plain PATH (no activated venv), as a new user runs .venv/bin/sparkmpi-dl."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARKMPI_DL_"))}
    return {**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO}


def _cli(*args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=cwd)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "py4j" not in proc.stderr.lower(), proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("master, problem", [
    ("nonsense", "is not a Spark master URL"),
    ("spark://no-such-host.invalid:7077", "unknown host no-such-host.invalid"),
    ("spark://127.0.0.1:{port}", "cannot reach the Spark master"),
    ("spark://127.0.0.1:port", "is not HOST:PORT"),
])
def test_a_wrong_master_ends_in_one_line_naming_it(master, problem):
    master = master.format(port=_closed_port())
    line = _one_error_line(_cli("spark-run", "--master", master, "-n", "1", "--", "true",
                                timeout=60))
    assert line.startswith("sparkmpi-dl: error: ") and master in line and problem in line


def test_recon_and_agent_train_take_master_on_their_spark_path(tmp_path):
    line = _one_error_line(_cli("recon", "--simulate", "--spark", "--master", "nonsense",
                                "--out", str(tmp_path / "recon"), cwd=tmp_path, timeout=120))
    assert "--master 'nonsense' is not a Spark master URL" in line
    line = _one_error_line(_cli("agent", "train", "--env", "CartPole-v1", "--out",
                                str(tmp_path / "agent"), "-n", "2", "--launcher", "spark",
                                "--master", "nonsense", cwd=tmp_path, timeout=180))
    assert "--master 'nonsense' is not a Spark master URL" in line


FAILING_RANK = """
from mpi4py import MPI
comm = MPI.COMM_WORLD
comm.Barrier()
if comm.rank == 1:
    raise ValueError("boom-marker")
comm.Barrier()
"""


def test_a_failing_rank_is_reported_once_without_spark_logging(tmp_path):
    program = tmp_path / "fail.py"
    program.write_text(FAILING_RANK)
    proc = _cli("spark-run", "--master", "local[2]", "-n", "2", "--",
                sys.executable, "-m", "mpi4py", str(program))
    assert proc.returncode == 1, proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    # the rank's own traceback, once; then the one-line summary
    assert both.count("Traceback (most recent call last)") == 1, both
    assert both.count("[rank 1] ValueError: boom-marker") == 1, both
    assert proc.stderr.strip().splitlines()[-1].startswith("sparkmpi-dl: job failed: rank 1 ")
    assert not [line for line in proc.stderr.splitlines() if SPARK_LOG_LINE.search(line)], proc.stderr
    assert "py4j" not in both.lower() and "at org.apache" not in both


def test_spark_logging_comes_back_with_verbose():
    proc = _cli("--verbose", "spark-run", "--master", "local[1]", "-n", "1", "--", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if SPARK_LOG_LINE.search(line)]


def test_ctrl_c_ends_cleanly_without_a_traceback():
    # a rank that says it is running, then waits; Ctrl-C goes to the whole process group
    # as a terminal sends it
    rank = "import time; print('rank-is-running', flush=True); time.sleep(600)"
    proc = subprocess.Popen([SCRIPT, "spark-run", "--master", "local[1]", "-n", "1", "--",
                             sys.executable, "-c", rank], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    try:
        for line in proc.stdout:
            if "rank-is-running" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "py4j" not in err.lower(), err
    assert err.strip().splitlines()[-1] == "sparkmpi-dl: interrupted"


# ---- the convention: one line on stderr, 2 for usage, 1 for a failure, a traceback only
# with --debug ------------------------------------------------------------------------------

EXPLODING_COMMAND = '''
import argparse


def _explode(args: argparse.Namespace) -> int:
    raise RuntimeError("disk on fire\\nsecond line of the message")


def register(commands, bench):
    commands.add_parser("explode", help="raises an unexpected error").set_defaults(func=_explode)
'''


@pytest.fixture
def exploding_command(tmp_path, monkeypatch):
    """A subcommand with a bug, installed the way the project's own are (an entry point)."""
    dist = tmp_path / "exploding_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sparkmpi_dl.commands]\nexplode = exploding_cmds:register\n")
    (tmp_path / "exploding_cmds.py").write_text(EXPLODING_COMMAND)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_unexpected_error_is_one_line_and_exit_code_1(exploding_command, capsys):
    from sparkmpi_dl.cli import main

    assert main(["explode"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "sparkmpi-dl: error: RuntimeError: disk on fire (run with --debug for the traceback)"]


def test_debug_prints_the_traceback_of_an_unexpected_error(exploding_command, capsys):
    from sparkmpi_dl.cli import main

    assert main(["--debug", "explode"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "in _explode" in err, err
    assert err.rstrip().endswith("second line of the message"), err


def test_a_usage_error_of_a_handler_is_one_line_and_exit_code_2():
    proc = _cli("mpirun", "-n", "0", "--", "true", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == ["sparkmpi-dl: error: -n must be at least 1, got 0"]


def test_a_bad_flag_is_one_line_and_exit_code_2(capsys):
    from sparkmpi_dl.cli import main

    with pytest.raises(SystemExit) as info:
        main(["mpirun", "-n", "two", "--", "true"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "sparkmpi-dl mpirun: error: argument -n/--num-proc: invalid int value: 'two' "
        "(see sparkmpi-dl mpirun --help)"]
