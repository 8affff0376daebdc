"""Executors run the project's interpreter even when ``python3`` on the PATH is another one.

The driver here is a plain Python process started from the venv with PATH=/usr/bin:/bin,
as `.venv/bin/sparkmpi-dl` is without an activated venv. PySpark's default would run the
executors on /usr/bin/python3 (no numpy, no project); see FEASIBILITY.md section 7.
"""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAIN_PATH = "/usr/bin:/bin"

DRIVER = textwrap.dedent("""
    import json, sys
    import sparkmpi_dl
    from sparkmpi_dl.launch.spark import spark_context
    from sparkmpi_dl.launch.spark_setup import InterpreterMismatch, check_interpreter

    def where(_):
        import sys
        return sys.executable

    sc = spark_context(master="local[1]")
    report = {"tasks": sc.parallelize([0], 1).map(where).collect(),
              "ranks": sparkmpi_dl.run(lambda: sys.executable, 1, spark=sc)}
    sc.pythonExec = "/usr/bin/python3"  # as if PYSPARK_PYTHON named the system Python
    try:
        check_interpreter(sc)
    except InterpreterMismatch as err:
        report["mismatch"] = str(err)
    print(json.dumps(report))
""")


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYSPARK_", "SPARKMPI_DL_", "VIRTUAL_ENV"))}
    return {**env, "PATH": PLAIN_PATH, "PYTHONPATH": REPO}


def test_executors_run_the_venv_python_without_an_activated_venv(tmp_path):
    assert not os.path.realpath(sys.executable).startswith("/usr/bin"), "run from the venv"
    proc = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True,
                          timeout=240, env=_plain_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["tasks"] == [sys.executable]
    assert report["ranks"] == [sys.executable]
    # the check names the interpreter it found and what it lacks, in one line
    mismatch = report["mismatch"]
    assert "/usr/bin/python3" in mismatch and "numpy missing" in mismatch
    assert "PYSPARK_PYTHON" in mismatch and "\n" not in mismatch

