"""Demo stage: the shipped agent on a held-out scan, scored by the truth as `agent compare` does.

The scan is the first held-out scan of `sparkmpi-dl agent compare --generator train` (seed
200000: 96 frames of 64x64, never used in training). The agent, the best fixed setting of
that comparison's grid search (``agents.compare.BEST_FIXED_TRAIN``) and plain DM each get
the same 60 iterations from the same start; each is scored by the true phase RMS after
registration (global phase, ramp and shift removed), the measured model error beside it.
The stage says which is better, whichever it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.steer import PRETRAINED

HELD_OUT_INDEX = 0  # scan 1 of `agent compare`'s held-out scans (seed test_seed + 0)


def verdict(agent: float, other: float, name: str) -> str:
    """'agent 12 % better than NAME' / 'worse' / 'level with' (within 1 %)."""
    change = (agent - other) / other
    if abs(change) < 0.01:
        return f"agent level with {name}"
    return f"agent {abs(change):.0%} {'better' if change < 0 else 'worse'} than {name}"


def steered_reconstruction_stage(sc: Any, out: Path) -> dict:
    """One held-out scan: agent vs best fixed vs plain DM, same budget, truth-scored."""
    from agents.compare import BEST_FIXED_TRAIN, CompareConfig, score_scan
    from agents.plot import plot_true_error_curves
    from agents.steer import load_agent

    config = CompareConfig(generator="train")
    runs = score_scan(load_agent(PRETRAINED), config, HELD_OUT_INDEX, BEST_FIXED_TRAIN)
    agent, best, plain = runs.values()
    seed = config.test_seed + HELD_OUT_INDEX
    plot_true_error_curves([(f"held-out scan (seed {seed}), {config.iterations} iterations",
                             {r.method: r.curve for r in (best, agent, plain)})],
                           out / "agent_steered_true_error.png",
                           title="shipped agent vs best fixed vs plain DM, truth-scored")
    lines = [verdict(agent.phase_rms, best.phase_rms, best.method),
             verdict(agent.phase_rms, plain.phase_rms, "plain DM")]
    for r in runs.values():
        print(f"{r.method:>22}: true phase RMS {r.phase_rms:.4f} rad after registration, "
              f"model error {r.model_error:.3e}")
    start = best.curve[0][1]
    worse_than_start = [r.method for r in runs.values() if not r.phase_rms < start]
    if worse_than_start:
        lines.append(f"{', '.join(worse_than_start)} end(s) above the flat start's error "
                     f"({start:.3f} rad) on this scan")
    print(f"start (flat object): true phase RMS {start:.4f} rad; " + "; ".join(lines) +
          " (one scan; `agent compare` in BENCHMARKS.md has 120)")
    return {"scan_seed": seed, "frames": "96 of 64x64", "iterations": config.iterations,
            "start_true_phase_rms": start,
            "agent_true_phase_rms": agent.phase_rms, "best_fixed": best.method,
            "best_fixed_true_phase_rms": best.phase_rms,
            "dm_true_phase_rms": plain.phase_rms,
            "agent_model_error": agent.model_error, "best_fixed_model_error": best.model_error,
            "dm_model_error": plain.model_error,
            "agent_vs_best_fixed": lines[0], "agent_vs_dm": lines[1],
            "worse_than_flat_start": ", ".join(worse_than_start) or "none"}


def demo_stages():
    return [("Agent-steered reconstruction: the DQN vs the best fixed setting and plain DM on a "
             "held-out scan, scored by the true phase error", steered_reconstruction_stage)]
