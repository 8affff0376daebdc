"""The standalone trainer script (`spark-submit trainers/image_classifier.py ...`) is
`sparkmpi-dl train`: the same flags from the same parser code, and the CLI's error
convention (one line on stderr, 2 for usage, 1 for a failure, a traceback only with --debug)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(__file__).resolve().parents[2] / "trainers" / "image_classifier.py")
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "PMIX_RANK", "HOROVOD_RANK", "HOROVOD_SIZE")


def _script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True,
                          timeout=120, env={**base, **(env or {})}, check=False)


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    """Each flag spelling -> what it sets and how (hidden aliases included)."""
    return {name: (action.dest, action.default, action.type, action.choices, action.nargs)
            for action in parser._actions for name in action.option_strings}


def test_the_script_takes_exactly_the_train_subcommands_flags():
    from sparkmpi_dl.cli import _subparsers, build_parser
    from trainers.cli import build_parser as script_parser

    train = next(sub for sub in _subparsers(build_parser()) if sub.prog == "sparkmpi-dl train")
    script = _options(script_parser())
    assert {k: v for k, v in script.items() if k not in ("--debug", "--verbose")} == _options(train)
    assert "--debug" in script and "--verbose" in script  # the convention's own flags
    assert "--out-dir" in script and "--ranks" in script  # older spellings still accepted


def test_a_usage_error_is_one_line_and_exit_code_2():
    proc = _script("-n", "2")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "image_classifier.py: error: give exactly one of --data DIR or --synthetic "
        "(see image_classifier.py --help)"]
    proc = _script("--synthetic", "-n", "0")
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [
        "image_classifier.py: error: --num-proc must be >= 1, got 0 (see image_classifier.py --help)"])
    proc = _script("--synthetic", "-n", "3", env={"PMI_RANK": "0", "PMI_SIZE": "2"})
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "image_classifier.py: error: --num-proc 3 disagrees with the launcher's 2 ranks "
        "(see image_classifier.py --help)"], proc.stderr


def test_a_failure_is_one_line_and_exit_code_1_its_traceback_only_with_debug(tmp_path):
    missing = str(tmp_path / "no-such-dataset")
    proc = _script("--data", missing, "--out", str(tmp_path / "run"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"image_classifier.py: error: FileNotFoundError: Parquet dataset directory {missing!r} "
        "does not exist (run with --debug for the traceback)")

    debug = _script("--data", missing, "--out", str(tmp_path / "run2"), "--debug")
    assert debug.returncode == 1, debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"FileNotFoundError: Parquet dataset directory "
                                          f"{missing!r} does not exist"), debug.stderr
