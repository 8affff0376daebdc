"""``agent compare``: every method on the same held-out scans, scored by the truth; the
statistics, the BO baseline and the command line."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from agents.bo import minimize_scalar_bo
from agents.compare import (CompareConfig, Run, compare, interval95, iterations_fraction, merge,
                            reach, reach_summary, score_scan, summarize, sustained_fraction)
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


def test_agents_only_runs_the_agents_and_best_fixed_on_the_same_scans(tmp_path: Path):
    config = dataclasses.replace(TINY, baselines=False, best_fixed=("dm", 1.0))
    result = compare({"keep": keep_plain_dm()}, config, tmp_path, log=lambda m: None)
    assert [row["method"] for row in result["summary"]] == ["agent keep", "(a) best fixed DM 1"]
    assert [r["phase_rms"] for r in result["runs"]["agent keep"]] == \
        [r["phase_rms"] for r in result["runs"]["(a) best fixed DM 1"]]
    assert result["best_fixed"]["source"] == "given" and result["grid"] == []


def test_merge_joins_scan_ranges_and_methods_run_apart(tmp_path: Path):
    """Scans 0-1 and 2 run apart, and a second agent run later on scans 0-1 only: the merge
    has 3 scans, the complete methods, and refuses parts whose best fixed runs disagree."""
    config = dataclasses.replace(TINY, baselines=False, best_fixed=("dm", 1.0), iterations=3)
    one = compare({"keep": keep_plain_dm()}, config, tmp_path / "a", log=lambda m: None)
    two = compare({"keep": keep_plain_dm()}, dataclasses.replace(config, test_scans=1,
                  test_seed=config.test_seed + 2), tmp_path / "b", log=lambda m: None)
    compare({"late": keep_plain_dm()}, config, tmp_path / "c", log=lambda m: None)
    said: list[str] = []
    merged = merge([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "m", said.append)
    best = "(a) best fixed DM 1"
    assert [r["phase_rms"] for r in merged["runs"][best]] == \
        [r["phase_rms"] for r in one["runs"][best] + two["runs"][best]]
    assert set(merged["runs"]) == {"agent keep", best}
    assert any("agent late ran on 2 of 3 scans" in line for line in said)
    assert (tmp_path / "m" / "comparison.png").is_file()
    # a diverged run is stored as "inf" and counts as diverged (1 rad) after the merge
    data = json.loads((tmp_path / "b" / "comparison.json").read_text())
    data["runs"]["agent keep"][0].update(phase_rms="inf", model_error="inf", diverged=True)
    (tmp_path / "b" / "comparison.json").write_text(json.dumps(data))
    again = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m1", lambda line: None)
    assert next(r for r in again["summary"] if r["method"] == "agent keep")["diverged"] == 1
    data = json.loads((tmp_path / "c" / "comparison.json").read_text())
    data["runs"][best][0]["phase_rms"] *= 2  # a part whose engine or scans differ
    (tmp_path / "c" / "comparison.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="scan seed 200000"):
        merge([tmp_path / "a", tmp_path / "c"], tmp_path / "m2")
    data["config"]["iterations"] = 4  # another budget: refused whatever the scans
    (tmp_path / "c" / "comparison.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="was run with"):
        merge([tmp_path / "a", tmp_path / "c"], tmp_path / "m3")
    with pytest.raises(ValueError, match="not the comparison.json"):
        merge([tmp_path / "a", tmp_path / "m-missing"], tmp_path / "m4")


def test_summary_statistics():
    ref = [Run("a", i, v, 0.1) for i, v in enumerate([0.10, 0.20, 0.30, 0.40])]
    agent = [Run("x", i, v, 0.05) for i, v in enumerate([0.105, 0.25, 0.20])]
    agent.append(Run("x", 3, math.inf, math.inf, diverged=True))
    rows = summarize({"a": ref, "x": agent}, "a")
    row = rows[1]
    assert row["worse_than_best_fixed_by_10pct"] == 0.5  # 0.25 > 0.22 and diverged (1 rad)
    assert row["diverged"] == 1 and row["mean_phase_rms"] == pytest.approx(1.555 / 4)
    # paired: geometric mean of 1.05, 1.25, 2/3 and 1/0.4 (the diverged run counts as 1 rad)
    assert row["paired_ratio"] == pytest.approx((1.05 * 1.25 * (2 / 3) * 2.5) ** 0.25)
    assert row["paired_ci95_low"] < row["paired_ratio"] < row["paired_ci95_high"]
    assert rows[0]["paired_ratio"] == 1.0
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
    (["--agent", "pretrained", "--reach", "--best-fixed", "er:0.5"], "--best-fixed wants"),
    (["--agent", "pretrained", "--best-fixed", "raar:1.5"], "got 'raar:1.5'"),
])
def test_bad_arguments_are_one_line(args, message, tmp_path: Path, capsys):
    from sparkmpi_dl.cli import main

    assert main(["agent", "compare", "--out", str(tmp_path / "c"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("agent compare: error")


def test_reach_is_counted_after_the_start_and_flags_scans_that_got_worse():
    # every run starts at iteration 0 with the start error: that never counts as reaching
    assert iterations_fraction([[0, 0.1], [5, 0.3], [10, 0.2]], 0.2, 10) == 1.0
    assert iterations_fraction([[0, 0.1], [5, 0.3]], 0.2, 10) == math.inf
    # reached for good: from the point after which it never rises above the target again
    assert sustained_fraction([[0, 0.1], [5, 0.1], [10, 0.3], [15, 0.2], [20, 0.1]], 0.2,
                              20) == 0.75
    assert sustained_fraction([[0, 0.1], [5, 0.1], [10, 0.3]], 0.2, 10) == math.inf
    assert sustained_fraction([[0, 0.3], [5, 0.1], [10, 0.2]], 0.2, 10) == 0.5
    summary = reach_summary([0.5, 0.9, math.inf, 0.25], [True, True, False, False])
    assert summary["median_fraction"] == pytest.approx(0.7)  # median of 0.25, 0.5, 0.9, inf
    assert summary["scans_within_target"] == 2 and summary["scans_reached"] == 3
    assert summary["median_fraction_where_best_fixed_improved"] == pytest.approx(0.7)
    assert summary["within_target_where_best_fixed_improved"] == 1


def test_reach_with_a_given_best_fixed_setting(tmp_path: Path):
    """--reach --best-fixed: no grid search; plain-DM agent vs best fixed DM 1 play the same
    iterations, so the agent reaches the final error at the latest at the end of the budget."""
    config = dataclasses.replace(TINY, best_fixed=("dm", 1.0))
    result = reach({"keep": keep_plain_dm()}, config, tmp_path, log=lambda m: None)
    assert result["grid"] == [] and result["best_fixed"]["source"] == "given"
    for row in result["scans"]:
        agent = row["agents"]["keep"]
        assert agent["phase_rms"] == pytest.approx(row["best_fixed_phase_rms"], rel=1e-12)
        assert 0 < agent["fraction"] <= agent["sustained_fraction"] <= 1.0
        assert agent["curve"][0][0] == 0
        assert row["best_fixed_improved"] == (row["best_fixed_phase_rms"]
                                              < row["start_phase_rms"])
    assert result["summary"]["keep"]["first"]["scans"] == 2
    table = (tmp_path / "reach.md").read_text()
    assert "| keep | first |" in table and "| keep | sustained |" in table
    assert (tmp_path / "reach.png").stat().st_size > 5_000


def test_demo_scoring_of_one_held_out_scan():
    """The demo's agent stage: agent, best fixed and plain DM on the same held-out scan as
    `agent compare` draws it, truth-scored from the same start."""
    from agents.compare import draw_scans
    from agents.demo import verdict

    runs = score_scan(keep_plain_dm(), TINY, 1, ("raar", 0.5))
    agent, best, plain = runs.values()
    assert best.method == "best fixed RAAR 0.5" and plain.method == "plain DM (beta 1)"
    assert agent.phase_rms == pytest.approx(plain.phase_rms, rel=1e-12)  # keep-dm is plain DM
    assert agent.curve[0] == best.curve[0] == plain.curve[0]  # same scan, same start
    assert [p[0] for p in plain.curve] == [0, 5, 6] and [p[0] for p in agent.curve] == [0, 3, 6]
    # scan index 1 is the second held-out scan of `agent compare`
    assert draw_scans(TINY, TINY.test_seed, 2, heldout=True)[1] == \
        draw_scans(TINY, TINY.test_seed + 1, 1, heldout=True)[0]
    assert verdict(0.8, 1.0, "X") == "agent 20% better than X"
    assert verdict(1.25, 1.0, "X") == "agent 25% worse than X"
    assert verdict(1.005, 1.0, "X") == "agent level with X"
