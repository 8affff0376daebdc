"""Does the feedback loop pay? A trained agent against fixed relaxation on held-out scans.

Baselines run in the same env with the "keep" action, so every policy gets the same scans
(reset seeds), the same start and the same iteration budget:
  (a) the best fixed (algorithm, beta), chosen by a grid search on *training* scans
      (lowest mean final log10 Fourier error);
  (b) plain DM (beta = 1).
Held-out scans come from another generator (other objects) and other seeds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.envs import make_env

Policy = Callable[[np.ndarray], int]


@dataclass
class Episode:
    """One reconstruction: the model error (error of the current estimate) at iteration 0 and
    after each step, the per-iteration fourier_error, and end-of-run truth metrics."""

    iterations: list[int]  # 0, K, 2K, ...
    errors: list[float]  # model error at those iterations
    fourier_errors: list[float]
    truth: dict[str, float]
    diverged: bool
    actions: list[int] = field(default_factory=list)
    phase: np.ndarray | None = None  # final object phase (for pictures)

    @property
    def final_error(self) -> float:
        return self.errors[-1] if not self.diverged else math.inf


def keep_action(algorithm: str) -> int:
    """The action that keeps beta and uses ``algorithm`` (see recon_env.tuning_env)."""
    from recon_env.tuning_env import ALGORITHMS

    return ALGORITHMS.index(algorithm) * 3 + 1


def run_episode(env_id: str, env_kwargs: dict[str, Any], seed: int, policy: Policy,
                keep_phase: bool = False) -> Episode:
    env = make_env(env_id, env_kwargs)
    obs, info = env.reset(seed=seed)
    iterations, errors, fourier, actions = [0], [info["model_error"]], [], []
    done = False
    while not done:
        action = policy(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        fourier += info["fourier_errors"]
        if not info["diverged"]:
            iterations.append(info["iteration"])
            errors.append(info["model_error"])
        done = terminated or truncated
    truth = {k[len("truth_"):]: v for k, v in info.items() if k.startswith("truth_")}
    phase = None
    if keep_phase:
        phase = np.angle(env.unwrapped.recon.result()["object"])
    return Episode(iterations, errors, fourier, truth, bool(info["diverged"]), actions, phase)


def fixed_policy(algorithm: str) -> Policy:
    action = keep_action(algorithm)
    return lambda obs: action


def run_fixed(env_id: str, env_kwargs: dict[str, Any], seeds: list[int], algorithm: str,
              beta: float, keep_phase: bool = False) -> list[Episode]:
    kwargs = {**env_kwargs, "initial_algorithm": algorithm, "initial_beta": beta}
    return [run_episode(env_id, kwargs, s, fixed_policy(algorithm), keep_phase) for s in seeds]


def mean_log_final(episodes: list[Episode]) -> float:
    """Mean log10 final model error (a diverged run counts as +inf: never the best)."""
    return float(np.mean([math.log10(e.final_error) for e in episodes]))


def grid_search(env_id: str, env_kwargs: dict[str, Any], seeds: list[int],
                log: Callable[[str], None] = print) -> tuple[tuple[str, float], list[dict]]:
    """Every (algorithm, beta) on the ladder, on the training scans; returns the best."""
    from recon_env.tuning_env import ALGORITHMS, BETAS

    betas = env_kwargs.get("betas") or BETAS
    table = []
    for algorithm in ALGORITHMS:
        for beta in betas:
            score = mean_log_final(run_fixed(env_id, env_kwargs, seeds, algorithm, beta))
            table.append({"algorithm": algorithm, "beta": beta, "mean_log10_final_error": score})
            log(f"grid: {algorithm} beta={beta:.2f}: mean log10 final model error {score:.3f}")
    best = min(table, key=lambda r: r["mean_log10_final_error"])
    return (best["algorithm"], best["beta"]), table


def iterations_to_reach(iterations: list[int], errors: list[float], level: float) -> int | None:
    """First iteration whose error is <= level (at step granularity); None if never."""
    for it, e in zip(iterations, errors):
        if e <= level:
            return it
    return None


def summarize(name: str, episodes: list[Episode]) -> dict[str, Any]:
    def geomean(values) -> float:
        return float(10 ** np.mean(np.log10(np.asarray(values, float))))

    truth = [e.truth for e in episodes if e.truth]
    return {"policy": name, "scans": len(episodes),
            "diverged": int(sum(e.diverged for e in episodes)),
            "geomean_final_model_error": geomean([e.final_error for e in episodes]),
            "geomean_final_fourier_error": geomean([e.fourier_errors[-1] for e in episodes]),
            "mean_phase_nrmse": float(np.mean([t["phase_nrmse"] for t in truth])) if truth
            else math.nan,
            "mean_phase_rms_rad": float(np.mean([t["phase_rms"] for t in truth])) if truth
            else math.nan}


def compare(agent_policy: Policy, env_id: str, train_kwargs: dict[str, Any],
            test_kwargs: dict[str, Any], train_seeds: list[int], test_seeds: list[int],
            out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Grid-search the best fixed setting on training scans, then run the three policies on
    the held-out scans; writes comparison.json and comparison.png to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (best_alg, best_beta), table = grid_search(env_id, train_kwargs, train_seeds, log)
    log(f"best fixed on training scans: {best_alg} beta={best_beta}")
    runs = {
        "agent": [run_episode(env_id, test_kwargs, s, agent_policy, keep_phase=(i == 0))
                  for i, s in enumerate(test_seeds)],
        f"best fixed ({best_alg}, beta={best_beta})":
            run_fixed(env_id, test_kwargs, test_seeds, best_alg, best_beta, keep_phase=True),
        "plain DM (beta=1)": run_fixed(env_id, test_kwargs, test_seeds, "dm", 1.0,
                                       keep_phase=True),
    }
    summary = [summarize(name, eps) for name, eps in runs.items()]
    agent, fixed = summary[0], summary[1]
    ratio = agent["geomean_final_model_error"] / fixed["geomean_final_model_error"]
    # iterations the agent needs to reach the best fixed run's final error, per scan
    reach = []
    for a, f in zip(runs["agent"], list(runs.values())[1]):
        n = iterations_to_reach(a.iterations, a.errors, f.final_error) if not a.diverged else None
        reach.append(n / f.iterations[-1] if n is not None else math.inf)
    result = {
        "env_id": env_id, "train_kwargs": train_kwargs, "test_kwargs": test_kwargs,
        "train_seeds": train_seeds, "test_seeds": test_seeds, "grid": table,
        "best_fixed": {"algorithm": best_alg, "beta": best_beta}, "summary": summary,
        "agent_over_best_fixed_final_error": ratio,
        "median_fraction_of_iterations_to_reach_best_fixed": float(np.median(reach)),
        "agent_actions_first_scan": runs["agent"][0].actions,
    }
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    from agents.plot import plot_comparison

    truth_phase = _truth_phase(env_id, test_kwargs, test_seeds[0])
    plot_comparison({k: [(e.iterations, e.errors) for e in v] for k, v in runs.items()},
                    {k: v[0].phase for k, v in runs.items()}, truth_phase,
                    out_dir / "comparison.png")
    for row in summary:
        log(f"{row['policy']:<32} final model error (geo-mean) "
            f"{row['geomean_final_model_error']:.4g}  phase NRMSE {row['mean_phase_nrmse']:.4f}"
            f"  phase RMS {row['mean_phase_rms_rad']:.4f} rad  diverged {row['diverged']}/{row['scans']}")
    log(f"agent / best fixed final error: {ratio:.3f}; median share of the budget the agent "
        f"needs to reach best-fixed's final error: {result['median_fraction_of_iterations_to_reach_best_fixed']:.2f}")
    return result


def _truth_phase(env_id: str, env_kwargs: dict[str, Any], seed: int) -> np.ndarray:
    env = make_env(env_id, env_kwargs)
    env.reset(seed=seed)
    return np.angle(env.unwrapped.recon.data.truth_object)
