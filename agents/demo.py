"""Demo stage: a reconstruction steered by the trained DQN agent, next to plain DM.

The agent in ``agents/pretrained/ptycho_tuning_16k`` was trained in this project for 16,000
environment steps on recon_env/PtychoTuning-v0 (see BENCHMARKS.md, issue 5 section); the
checkpoint holds its network weights only (no replay buffer).
"""
from __future__ import annotations

from pathlib import Path

PRETRAINED = Path(__file__).resolve().parent / "pretrained" / "ptycho_tuning_16k"
HELD_OUT_SCAN = 200_000  # the first of the held-out test seeds of `agent compare`


def steered_reconstruction_stage(sc, out: Path) -> dict:
    """One held-out scan: the agent picks DM/RAAR and beta every chunk; plain DM beside it."""
    from agents.cli import _load_policy
    from agents.compare import fixed_policy, run_episode
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, policy = _load_policy(PRETRAINED)
    agent = run_episode(run.env_id, run.env_kwargs, HELD_OUT_SCAN, policy)
    plain = run_episode(run.env_id, run.env_kwargs, HELD_OUT_SCAN, fixed_policy("dm"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(plain.iterations, plain.errors, "o-", label="plain DM (beta=1)")
    ax.semilogy(agent.iterations, agent.errors, "s-", label="DQN-steered")
    ax.set_xlabel("iteration")
    ax.set_ylabel("model error")
    ax.set_title(f"held-out scan {HELD_OUT_SCAN}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "agent_steered_errors.png", dpi=100)
    plt.close(fig)
    print(f"agent-steered: final model error {agent.final_error:.3e} vs plain DM "
          f"{plain.final_error:.3e} after {agent.iterations[-1]} iterations; actions {agent.actions}")
    return {"scan_seed": HELD_OUT_SCAN, "iterations": agent.iterations[-1],
            "agent_final_model_error": agent.final_error, "dm_final_model_error": plain.final_error,
            "agent_phase_nrmse": agent.truth.get("phase_nrmse"), "dm_phase_nrmse": plain.truth.get("phase_nrmse")}


def demo_stages():
    return [("Agent-steered reconstruction: the DQN picks DM/RAAR and beta on a held-out scan",
             steered_reconstruction_stage)]
