"""Does the agent pay? Trained agents against fixed and searched relaxation, on held-out scans.

Every method reconstructs the same held-out scans (drawn by the env's ``ScanGenerator`` from
seeds no training used) from the same start, and is scored by the true phase RMS after
registration (``Reconstructor.quality()``: global phase, ramp and sub-pixel shift removed),
with the measured model error beside it. Methods:
  agents          each given agent steers its reconstruction (``agents.steer``), budget B;
  (a) best fixed  the (algorithm, beta) with the lowest mean log10 true phase RMS over a grid
                  search on *training* scans (the whole ladder, both algorithms), budget B;
  (b) ptypy       ptypy's defaults: DM alpha 1 (beta 1 here) and RAAR beta 0.75, budget B;
  (c) hand        DM beta 1 for 40 % of B, RAAR 0.9 for 40 %, then a damped RAAR 0.5 (the
                  engine has no error reduction; this is its nearest step);
  (d) BO          per-scan Bayesian optimisation (a Gaussian process, expected improvement)
                  of the beta of the best fixed algorithm, scored by the *measured* final
                  model error (no truth on a user's scan): ``bo_budget_trials`` trials of
                  B / trials iterations (the same total budget as one run), and separately
                  ``bo_trials`` (20) full trials of B; the result is the best trial's image.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.bo import minimize_scalar_bo
from agents.envs import make_env

Log = Callable[[str], None]


@dataclass
class CompareConfig:
    """What is compared and on what."""

    generator: dict[str, Any] | str = "train"     # held-out and training scan distribution
    heldout_objects: tuple[str, ...] | None = None  # None: the generator's objects
    test_scans: int = 24
    train_scans: int = 8                           # for the grid search of (a)
    iterations: int = 60                           # B, every method's budget (BO-20: per trial)
    betas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    bo_trials: int = 20
    bo_budget_trials: int = 4
    engine: dict[str, Any] = field(default_factory=dict)
    backend: str = "numpy"
    test_seed: int = 200_000                        # scan i is drawn from seed test_seed + i
    train_seed: int = 100_000

    def check(self) -> None:
        if self.test_scans < 1 or self.train_scans < 1:
            raise ValueError("compare: --test-scans and --train-scans must be >= 1")
        if self.iterations < 2:
            raise ValueError(f"compare: --iterations must be >= 2, got {self.iterations}")
        if self.bo_trials < 2 or not 2 <= self.bo_budget_trials <= self.iterations:
            raise ValueError("compare: --bo-trials must be >= 2 and --bo-budget-trials in "
                             "[2, --iterations]")


@dataclass
class Run:
    """One method on one scan."""

    method: str
    scan: int
    phase_rms: float            # rad, registered, inf when diverged
    model_error: float          # measured, final
    diverged: bool = False
    beta: float | None = None   # the fixed beta used / found (BO)
    curve: list[list[float]] = field(default_factory=list)  # [iteration, phase_rms]


def draw_scans(config: CompareConfig, seed0: int, count: int, heldout: bool) -> list[dict]:
    """Scan parameters for seeds seed0 .. seed0 + count - 1 (the env's draw)."""
    from recon_env.tuning_env import ScanGenerator

    generator = ScanGenerator.from_spec(config.generator)
    if heldout and config.heldout_objects:
        generator.objects = tuple(config.heldout_objects)
    generator.check()
    return [generator.draw(np.random.default_rng(seed0 + i)) for i in range(count)]


class ScanCase:
    """One scan's data, simulated once; fresh reconstructions of it on demand."""

    def __init__(self, scan: dict[str, Any], config: CompareConfig) -> None:
        from recon_env.tuning_env import simulate_scan

        self.scan = scan
        self.config = config
        self.data = simulate_scan(scan)

    def reconstructor(self):
        from recon_env.engine import EngineConfig, Reconstructor

        return Reconstructor(self.data, EngineConfig(**self.config.engine),
                             backend=self.config.backend)

    def play(self, phases: list[tuple[str, float, int]], curve_every: int = 0
             ) -> tuple[float, float, bool, list[list[float]]]:
        """Run (algorithm, beta, iterations) phases from a fresh start; (true phase RMS,
        model error, diverged, [iteration, phase RMS] every ``curve_every`` iterations)."""
        from recon_env.errors import ReconstructionDiverged

        rec = self.reconstructor()
        model_error = float(rec.step(0)["model_error"])
        curve = [[0, float(rec.quality()["phase_rms"])]] if curve_every else []
        try:
            for algorithm, beta, n in phases:
                done = 0
                while done < n:
                    k = min(n - done, curve_every or n)
                    model_error = float(rec.step(k, algorithm=algorithm, beta=beta)["model_error"])
                    done += k
                    if curve_every:
                        curve.append([rec.iteration, float(rec.quality()["phase_rms"])])
        except ReconstructionDiverged:
            return math.inf, math.inf, True, curve
        if not math.isfinite(model_error):
            return math.inf, math.inf, True, curve
        return float(rec.quality()["phase_rms"]), model_error, False, curve

    def steer(self, agent, iterations: int, curve_every: bool = False
              ) -> tuple[float, float, bool, list[list[float]]]:
        """The agent steers a fresh reconstruction (the measured observation only)."""
        from agents.steer import steer
        from recon_env.errors import ReconstructionDiverged

        rec = self.reconstructor()
        curve: list[list[float]] = []
        if curve_every:
            curve.append([0, float(rec.quality()["phase_rms"])])

        def record(entry: dict, _out: dict) -> None:
            if curve_every:
                curve.append([rec.iteration, float(rec.quality()["phase_rms"])])

        try:
            schedule = steer(rec, agent, iterations=iterations, on_step=record)
        except ReconstructionDiverged:
            return math.inf, math.inf, True, curve
        error = schedule[-1]["model_error"] if schedule else math.nan
        if not math.isfinite(error):
            return math.inf, math.inf, True, curve
        return float(rec.quality()["phase_rms"]), float(error), False, curve


def log10_score(value: float) -> float:
    """log10 of an error; a diverged run (inf) scores 1 decade above 1 rad: never best."""
    return math.log10(value) if math.isfinite(value) and value > 0 else 1.0


def grid_search(cases: list[ScanCase], config: CompareConfig, log: Log
                ) -> tuple[tuple[str, float], list[dict[str, Any]]]:
    """Every (algorithm, beta) of the ladder on the training scans; lowest mean log10 true
    phase RMS wins (the training scans have truth)."""
    table = []
    for algorithm in ("dm", "raar"):
        for beta in config.betas:
            scores = [log10_score(c.play([(algorithm, beta, config.iterations)])[0])
                      for c in cases]
            table.append({"algorithm": algorithm, "beta": beta,
                          "mean_log10_phase_rms": float(np.mean(scores))})
            log(f"grid {algorithm} beta={beta:.2f}: mean log10 true phase RMS "
                f"{table[-1]['mean_log10_phase_rms']:.3f}")
    best = min(table, key=lambda r: r["mean_log10_phase_rms"])
    return (best["algorithm"], best["beta"]), table


def bayes_opt(case: ScanCase, algorithm: str, trials: int, iterations: int, lo: float,
              hi: float, seed: int) -> tuple[float, float, bool, float]:
    """Per-scan BO of a fixed beta in [lo, hi], each trial a fresh reconstruction of
    ``iterations``, scored by the measured final model error; returns the best trial's
    (true phase RMS, model error, diverged, beta)."""
    results: dict[float, tuple[float, float, bool]] = {}

    def objective(beta: float) -> float:
        results[beta] = case.play([(algorithm, beta, iterations)])[:3]
        return log10_score(results[beta][1])

    best_beta, _ = minimize_scalar_bo(objective, lo, hi, trials, np.random.default_rng(seed))
    phase, model, diverged = results[best_beta]
    return phase, model, diverged, best_beta


def hand_schedule(iterations: int) -> list[tuple[str, float, int]]:
    """(c): DM beta 1 for 40 %, RAAR 0.9 for 40 %, damped RAAR 0.5 for the rest."""
    first = int(round(0.4 * iterations))
    second = int(round(0.4 * iterations))
    return [("dm", 1.0, first), ("raar", 0.9, second), ("raar", 0.5, iterations - first - second)]


def interval95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the Student-t 95 % interval of the mean."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(runs: dict[str, list[Run]], reference: str) -> list[dict[str, Any]]:
    """Per method: mean and 95 % interval of the true phase RMS (a diverged run counts as
    1 rad), its ratio to ``reference``'s mean, the share of scans worse than ``reference`` by
    more than 10 %, the geometric-mean final model error, the diverged count."""
    ref = [r.phase_rms for r in runs[reference]]
    rows = []
    for name, rs in runs.items():
        phase = [r.phase_rms if math.isfinite(r.phase_rms) else 1.0 for r in rs]
        mean, low, high = interval95(phase)
        model = [r.model_error for r in rs if math.isfinite(r.model_error)]
        worse = sum(p > 1.1 * q for p, q in zip(phase, ref))
        rows.append({"method": name, "scans": len(rs), "mean_phase_rms": mean,
                     "ci95_low": low, "ci95_high": high,
                     "vs_best_fixed": mean / float(np.mean(ref)),
                     "worse_than_best_fixed_by_10pct": worse / len(rs),
                     "geomean_model_error": float(10 ** np.mean(np.log10(model))) if model
                     else math.nan,
                     "diverged": int(sum(r.diverged for r in rs))})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | true phase RMS (rad), mean [95 % CI] | vs best fixed | scans worse "
             "than best fixed by > 10 % | model error (geo-mean) | diverged |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['mean_phase_rms']:.4f} [{r['ci95_low']:.4f}, "
                     f"{r['ci95_high']:.4f}] | {r['vs_best_fixed']:.3f} | "
                     f"{r['worse_than_best_fixed_by_10pct']:.0%} | "
                     f"{r['geomean_model_error']:.4g} | {r['diverged']}/{r['scans']} |")
    return "\n".join(lines) + "\n"


def iterations_fraction(agent_curve: list[list[float]], target: float, budget: int) -> float:
    """Share of the budget after which the agent's true error first is <= target (inf if
    never)."""
    for it, err in agent_curve:
        if err <= target:
            return it / budget
    return math.inf


def compare(agents: dict[str, Any], config: CompareConfig, out_dir: Path,
            log: Log = print) -> dict[str, Any]:
    """Run every method on the held-out scans; write comparison.{json,md,png} to out_dir."""
    config.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    B = config.iterations
    train = [ScanCase(s, config) for s in draw_scans(config, config.train_seed,
                                                     config.train_scans, heldout=False)]
    (best_alg, best_beta), grid = grid_search(train, config, log)
    del train
    log(f"best fixed on {config.train_scans} training scans: {best_alg} beta={best_beta}")
    best_name = f"(a) best fixed {best_alg.upper()} {best_beta:g}"
    lo, hi = config.betas[0], config.betas[-1]
    per_trial = B // config.bo_budget_trials
    methods: dict[str, Callable[[ScanCase, int], Run]] = {}
    for name, agent in agents.items():
        methods[f"agent {name}"] = (lambda a: lambda c, i: _agent(c, i, a, B))(agent)
    methods[best_name] = lambda c, i: _fixed(c, i, best_alg, best_beta, B, curve=True)
    methods["(b) ptypy DM alpha 1"] = lambda c, i: _fixed(c, i, "dm", 1.0, B)
    methods["(b) ptypy RAAR 0.75"] = lambda c, i: _fixed(c, i, "raar", 0.75, B)
    methods["(c) hand DM>RAAR 0.9>RAAR 0.5"] = lambda c, i: Run(
        "", i, *c.play(hand_schedule(B))[:3])
    methods[f"(d) BO {config.bo_budget_trials}x{per_trial} it (same budget)"] = \
        lambda c, i: _bo(c, i, best_alg, config.bo_budget_trials, per_trial, lo, hi)
    methods[f"(d) BO {config.bo_trials}x{B} it"] = \
        lambda c, i: _bo(c, i, best_alg, config.bo_trials, B, lo, hi)

    runs: dict[str, list[Run]] = {name: [] for name in methods}
    scans = draw_scans(config, config.test_seed, config.test_scans, heldout=True)
    for i, scan in enumerate(scans):
        case = ScanCase(scan, config)
        parts = []
        for name, method in methods.items():
            run = method(case, i)
            run.method = name
            runs[name].append(run)
            parts.append(f"{name.split(' ')[0] if name.startswith('(') else name}="
                         f"{run.phase_rms:.3f}")
        log(f"scan {i + 1}/{len(scans)} ({scan['object']}, {scan['photons']:.0e} photons): "
            + " ".join(parts))
    rows = summarize(runs, best_name)
    reach = {}
    for name in agents:
        fractions = [iterations_fraction(a.curve, f.phase_rms, B)
                     for a, f in zip(runs[f"agent {name}"], runs[best_name])]
        reach[name] = float(np.median(fractions))
    result = {"config": _plain(asdict(config)), "agents": {n: getattr(a, "source", str(a))
                                                           for n, a in agents.items()},
              "best_fixed": {"algorithm": best_alg, "beta": best_beta}, "grid": grid,
              "summary": rows,
              "median_fraction_of_budget_for_agent_to_reach_best_fixed_final": reach,
              "scans": scans,
              "runs": {n: [_plain(asdict(r)) for r in rs] for n, rs in runs.items()}}
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "comparison.md").write_text(markdown_table(rows))
    from agents.plot import plot_method_comparison

    plot_method_comparison(rows, runs, best_name, out_dir / "comparison.png",
                           title=f"{len(scans)} held-out scans "
                                 f"({scans[0]['n_frames']} frames of "
                                 f"{scans[0]['frame_size']}x{scans[0]['frame_size']}), "
                                 f"{B} iterations")
    log(markdown_table(rows))
    return result


def _agent(case: ScanCase, i: int, agent: Any, B: int) -> Run:
    phase, model, diverged, points = case.steer(agent, B, curve_every=True)
    return Run("", i, phase, model, diverged, None, points)


def _fixed(case: ScanCase, i: int, algorithm: str, beta: float, B: int, curve: bool = False
           ) -> Run:
    phase, model, diverged, points = case.play([(algorithm, beta, B)],
                                               curve_every=5 if curve else 0)
    return Run("", i, phase, model, diverged, beta, points)


def _bo(case: ScanCase, i: int, algorithm: str, trials: int, iterations: int, lo: float,
        hi: float) -> Run:
    phase, model, diverged, beta = bayes_opt(case, algorithm, trials, iterations, lo, hi, i)
    return Run("", i, phase, model, diverged, beta)


def _plain(value: Any) -> Any:
    """JSON-safe: inf/nan as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- single env episodes (the demo's agent stage, env-level checks) ------------------------
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


def iterations_to_reach(iterations: list[int], errors: list[float], level: float) -> int | None:
    """First iteration whose error is <= level (at step granularity); None if never."""
    for it, e in zip(iterations, errors):
        if e <= level:
            return it
    return None
