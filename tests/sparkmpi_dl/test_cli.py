"""The `sparkmpi-dl` command line: every subcommand answers --help; the benchmark's JSON."""
import argparse
import json
import os
import re
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
    """Run as a new user would: the console script, no activated venv (python3 on the PATH
    is another Python), so executors, mpiexec and friends must come from the venv itself."""
    script = os.path.join(os.path.dirname(sys.executable), "sparkmpi-dl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    proc = subprocess.run([script, "bench", "allreduce", "-n", "2", "--size", "1000",
                           "--repeat", "2", "--json"], capture_output=True, text=True,
                          timeout=300, env={**env, "PATH": "/usr/bin:/bin"})
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


def test_version():
    proc = _cli("--version")
    assert proc.returncode == 0 and re.fullmatch(r"sparkmpi-dl \d+\.\d+\.\d+.*\n", proc.stdout)


def _all_parsers():
    from sparkmpi_dl.cli import _subparsers, build_parser
    parser = build_parser()
    return [parser, *_subparsers(parser)]


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    missing = [(p.prog, a.option_strings) for p in _all_parsers() for a in p._actions
               if a.option_strings and not a.help]
    assert not missing
    proc = _cli("bench", "allreduce", "--help")
    assert re.search(r"--size SIZE\s+.*\(default: 2000000\)", proc.stdout)


# one flag per concept; the first spelling is the one --help shows
CONCEPTS = {"rank count": ("-n", "--num-proc"), "output folder": ("--out",),
            "frame size": ("--frame-size",), "photons": ("--photons",)}
RETIRED = ("--ranks", "--out-dir", "--run-dir", "--shape")


def test_one_flag_name_per_concept_across_subcommands():
    shown = {s for p in _all_parsers() for a in p._actions if a.help != argparse.SUPPRESS
             for s in a.option_strings}
    assert not shown & set(RETIRED) - {"--run-dir"}  # --run-dir stays: a run to *read*
    for names in CONCEPTS.values():
        assert set(names) <= shown
    from sparkmpi_dl.cli import build_parser
    parser = build_parser()
    # the old spellings still work (hidden aliases), with the same meaning
    old = parser.parse_args(["recon", "--simulate", "--ranks", "3", "--shape", "64"])
    new = parser.parse_args(["recon", "--simulate", "-n", "3", "--frame-size", "64"])
    assert (old.ranks, old.frame_size) == (new.ranks, new.frame_size) == (3, 64)
    old = parser.parse_args(["agent", "train", "--run-dir", "r", "--ranks", "2"])
    new = parser.parse_args(["agent", "train", "--out", "r", "-n", "2"])
    assert (str(old.run_dir), old.ranks) == (str(new.run_dir), new.ranks) == ("r", 2)
    assert parser.parse_args(["train", "--out-dir", "x"]).out_dir == "x"
    assert parser.parse_args(["train", "--out", "x"]).out_dir == "x"
    assert parser.parse_args(["bench", "allreduce", "--ranks", "3"]).num_proc == 3
    # photons are photons per frame everywhere (the dataset draws log-uniformly)
    args = parser.parse_args(["dataset", "build", "--out", "d", "--photons", "1e4,1e6"])
    assert args.log10_photons == pytest.approx((4.0, 6.0))
    assert parser.parse_args(["recon", "--simulate", "--photons", "1e6"]).photons == 1e6
    # --master is never silently ignored: on recon it means the Spark path
    assert parser.parse_args(["recon", "--simulate", "--master", "local[2]"]).spark
