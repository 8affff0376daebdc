"""``agent compare``: every method on the same held-out scans, scored by the truth; the
statistics, the BO baseline and the command line."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from agents.bo import minimize_scalar_bo
from agents.compare import CompareConfig, Run, compare, interval95, iterations_to_reach, summarize
from agents.steer import Agent
from recon_env.observation import N_ACTIONS, OBS_SIZE

TINY = CompareConfig(generator={"n_frames": 12, "frame_size": 32}, test_scans=2, train_scans=1,
                     iterations=6, betas=(0.5, 1.0), bo_trials=3, bo_budget_trials=2)


def keep_plain_dm() -> Agent:
    """An agent whose greedy action is always 1 (DM, keep beta 1): plain DM."""
    bias = np.zeros(N_ACTIONS, np.float32)
    bias[1] = 1.0
    return Agent("keep-dm", [np.zeros((OBS_SIZE, N_ACTIONS), np.float32), bias], every=3)


def test_every_method_runs_on_the_same_scans(tmp_path: Path):
    result = compare({"keep": keep_plain_dm()}, TINY, tmp_path, log=lambda m: None)
    runs = result["runs"]
    # the plain-DM agent and ptypy's DM default see the same scans, start and budget
    assert [r["phase_rms"] for r in runs["agent keep"]] == \
        [r["phase_rms"] for r in runs["(b) ptypy DM alpha 1"]]
    names = [row["method"] for row in result["summary"]]
    assert names[0] == "agent keep" and any(n.startswith("(a) best fixed") for n in names)
    assert "(d) BO 3x6 it" in names and "(d) BO 2x3 it (same budget)" in names
    assert len(result["grid"]) == 4 and all(row["scans"] == 2 for row in result["summary"])
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["best_fixed"] == result["best_fixed"]
    table = (tmp_path / "comparison.md").read_text()
    assert table.count("\n") == 2 + len(names) and "95 % CI" in table
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_summary_statistics():
    ref = [Run("a", i, v, 0.1) for i, v in enumerate([0.10, 0.20, 0.30, 0.40])]
    agent = [Run("x", i, v, 0.05) for i, v in enumerate([0.105, 0.25, 0.20])]
    agent.append(Run("x", 3, math.inf, math.inf, diverged=True))
    rows = summarize({"a": ref, "x": agent}, "a")
    row = rows[1]
    assert row["worse_than_best_fixed_by_10pct"] == 0.5  # 0.25 > 0.22 and diverged (1 rad)
    assert row["diverged"] == 1 and row["mean_phase_rms"] == pytest.approx(1.555 / 4)
    mean, low, high = interval95([1.0, 2.0, 3.0, 4.0])
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert (mean, low, high) == pytest.approx((2.5, 2.5 - half, 2.5 + half))


def test_bo_finds_a_minimum_within_its_trials():
    calls = []

    def f(x: float) -> float:
        calls.append(x)
        return (x - 0.37) ** 2

    x, value = minimize_scalar_bo(f, 0.1, 1.0, 12, np.random.default_rng(0))
    assert len(calls) == 12 and all(0.1 <= c <= 1.0 for c in calls)
    assert abs(x - 0.37) < 0.03 and value == min(f(c) for c in list(calls))


def test_iterations_to_reach():
    assert iterations_to_reach([0, 5, 10, 15], [1.0, 0.5, 0.2, 0.1], 0.3) == 10
    assert iterations_to_reach([0, 5], [1.0, 0.5], 0.1) is None


def test_console_script_error_is_one_line(tmp_path: Path):
    proc = subprocess.run([str(Path(sys.executable).parent / "sparkmpi-dl"), "agent", "compare",
                           "--out", str(tmp_path / "c")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert (proc.stdout + proc.stderr).strip().splitlines() == [
        "agent compare: error: give at least one --agent RUN_DIR (or --agent pretrained)"]


@pytest.mark.parametrize("args, message", [
    (["--agent", "no/such/run"], "no/such/run: no config.json"),
    (["--agent", "pretrained", "--bo-budget-trials", "1"], "--bo-budget-trials in"),
    (["--agent", "pretrained", "--generator", "huge"], "unknown preset 'huge'"),
])
def test_bad_arguments_are_one_line(args, message, tmp_path: Path, capsys):
    from sparkmpi_dl.cli import main

    assert main(["agent", "compare", "--out", str(tmp_path / "c"), *args]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("agent compare: error")
