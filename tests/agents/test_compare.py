"""Agent-vs-fixed-beta comparison: grid search, held-out runs, report files."""
import json
from pathlib import Path

from agents.compare import compare, iterations_to_reach, keep_action
from recon_env.tuning_env import ENV_ID

TINY = {"iterations_per_step": 4, "iteration_budget": 8, "betas": [0.5, 1.0],
        "generator": {"n_frames": 24, "frame_size": 32}}


def test_compare_runs_every_policy_on_the_same_scans(tmp_path: Path):
    test_kwargs = {**TINY, "generator": {**TINY["generator"], "objects": ["siemens"]}}
    # An "agent" that keeps plain DM (the env starts at DM, beta 1) must tie with the
    # plain-DM baseline to the last digit: same scans, same start, same budget.
    result = compare(lambda obs: keep_action("dm"), ENV_ID, TINY, test_kwargs,
                     train_seeds=[1, 2], test_seeds=[3, 4], out_dir=tmp_path, log=lambda m: None)
    agent, best_fixed, plain_dm = result["summary"]
    assert agent["policy"] == "agent" and plain_dm["policy"] == "plain DM (beta=1)"
    assert agent["geomean_final_model_error"] == plain_dm["geomean_final_model_error"]
    assert agent["mean_phase_nrmse"] == plain_dm["mean_phase_nrmse"]
    assert len(result["grid"]) == 4  # 2 algorithms x 2 betas
    scores = {(r["algorithm"], r["beta"]): r["mean_log10_final_error"] for r in result["grid"]}
    chosen = result["best_fixed"]
    assert scores[(chosen["algorithm"], chosen["beta"])] == min(scores.values())
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert all(row["scans"] == 2 for row in saved["summary"])
    assert (tmp_path / "comparison.png").stat().st_size > 5000


def test_iterations_to_reach():
    assert iterations_to_reach([0, 5, 10, 15], [1.0, 0.5, 0.2, 0.1], 0.3) == 10
    assert iterations_to_reach([0, 5], [1.0, 0.5], 0.1) is None
