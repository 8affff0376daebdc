"""Steer a user's reconstruction with a trained tuning agent.

Every ``every`` iterations the agent reads the measured observation the tuning env uses
(``recon_env.observation``: model error, its slopes, exit-wave change, beta, algorithm,
budget used; no ground truth) and picks the algorithm and the beta for the next chunk.

    from agents.steer import load_agent, steer
    schedule = steer(reconstructor, load_agent("pretrained"), every=5, iterations=100)

Acting needs no TensorFlow: the greedy Q network is evaluated with NumPy from the run's
``checkpoint.npz``, so steering also runs where only the reconstruction stack is installed
(the GPU machine). With MPI ranks every rank steers its share; rank 0's choice is broadcast
so that all ranks always run the same relaxation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recon_env.comm import Communicator
from recon_env.observation import BETAS, N_ACTIONS, OBS_SIZE, MeasuredTrack, discrete_action

PRETRAINED = Path(__file__).resolve().parent / "pretrained" / "ptycho_tuning_offline"
DISCRETE_ENV = "recon_env/PtychoTuning-v0"
ENV_DEFAULTS = {"iterations_per_step": 5, "betas": BETAS, "initial_beta": 1.0,
                "initial_algorithm": "dm"}


@dataclass
class Agent:
    """A trained discrete tuning agent: greedy Q network weights and the env settings it
    was trained with (decision interval, beta ladder, start setting)."""

    source: str
    weights: list[np.ndarray]
    every: int = 5
    betas: tuple[float, ...] = BETAS
    initial_beta: float = 1.0
    initial_algorithm: str = "dm"
    trained: dict[str, Any] = field(default_factory=dict)

    def act(self, obs: np.ndarray) -> int:
        """Greedy action: argmax of the ReLU MLP's Q values (same maths as agents.dqn)."""
        x = np.asarray(obs, np.float32)
        w = self.weights
        for i in range(0, len(w) - 2, 2):
            x = np.maximum(x @ w[i] + w[i + 1], 0.0)
        return int(np.argmax(x @ w[-2] + w[-1]))


def resolve_agent_dir(spec: str | Path) -> Path:
    """``"pretrained"`` -> the shipped agent; anything else is a run directory."""
    return PRETRAINED if str(spec) == "pretrained" else Path(spec)


def load_agent(spec: str | Path) -> Agent:
    """Load a run directory of ``sparkmpi-dl agent train`` (``config.json`` +
    ``checkpoint.npz``) or ``"pretrained"``; ValueError naming the folder if it is not one
    this steering can play (a discrete ``recon_env/PtychoTuning-v0`` agent)."""
    from agents.checkpoint import load_checkpoint

    run_dir = resolve_agent_dir(spec)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"agent {run_dir}: no config.json (not a run directory of "
                         "`sparkmpi-dl agent train`, nor 'pretrained')")
    try:
        config = json.loads(config_path.read_text())
        run = config["run"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"agent {config_path}: not a run config ({err})") from err
    if run.get("env_id") != DISCRETE_ENV:
        raise ValueError(f"agent {run_dir}: trained on {run.get('env_id')!r}; steering plays "
                         f"{DISCRETE_ENV!r} agents")
    _, arrays = load_checkpoint(run_dir / "checkpoint.npz")
    learner = arrays.get("learner", {})
    keys = sorted((k for k in learner if k.startswith("q/")), key=lambda k: int(k.split("/")[1]))
    weights = [np.asarray(learner[k], np.float32) for k in keys]
    if len(weights) < 2 or len(weights) % 2 or weights[0].shape[0] != OBS_SIZE \
            or weights[-1].shape != (N_ACTIONS,):
        raise ValueError(f"agent {run_dir}: checkpoint.npz holds no Q network for "
                         f"{OBS_SIZE} observations and {N_ACTIONS} actions")
    kwargs = {**ENV_DEFAULTS, **{k: v for k, v in run.get("env_kwargs", {}).items()
                                 if k in ENV_DEFAULTS}}
    betas = tuple(float(b) for b in kwargs["betas"])
    if float(kwargs["initial_beta"]) not in betas:
        raise ValueError(f"agent {run_dir}: initial_beta {kwargs['initial_beta']} is not on "
                         f"its beta ladder {betas}")
    return Agent(source=str(run_dir), weights=weights, every=int(kwargs["iterations_per_step"]),
                 betas=betas, initial_beta=float(kwargs["initial_beta"]),
                 initial_algorithm=str(kwargs["initial_algorithm"]),
                 trained={"env_id": run["env_id"], "total_steps": run.get("total_steps"),
                          "seed": run.get("seed"), "env_kwargs": run.get("env_kwargs", {})})


def _agree(comm: Communicator, action: int) -> int:
    """Rank 0's action on every rank (their observations agree, but never bet on it)."""
    return int(comm.bcast(int(action), root=0)) if comm.size > 1 else int(action)


def steer(reconstructor, agent: Agent | str | Path, every: int | None = None,
          iterations: int = 100,
          on_step: Callable[[dict[str, Any], dict], None] | None = None) -> list[dict[str, Any]]:
    """Run ``iterations`` iterations of ``reconstructor``, the agent choosing algorithm and
    beta every ``every`` iterations (default: the interval it was trained with).

    Returns the schedule played: one entry per decision with ``start`` (iteration count
    before it), ``iterations``, ``action``, ``algorithm``, ``beta`` and the ``model_error``
    after it. ``on_step(entry, history_of_the_chunk)`` is called after every chunk.
    Raises ReconstructionDiverged like ``Reconstructor.step``.
    """
    if not isinstance(agent, Agent):
        agent = load_agent(agent)
    every = agent.every if every is None else int(every)
    if every < 1:
        raise ValueError(f"steer: every must be >= 1, got {every}")
    if not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"steer: iterations must be an integer >= 0, got {iterations!r}")
    track = MeasuredTrack()
    track.start(reconstructor.step(0)["model_error"])
    beta_index = agent.betas.index(agent.initial_beta)
    algorithm = agent.initial_algorithm
    schedule: list[dict[str, Any]] = []
    done = 0
    first = reconstructor.iteration
    while done < iterations:
        obs = track.observation(agent.betas[beta_index], algorithm, max(iterations, 1))
        action = _agree(reconstructor.comm, agent.act(obs))
        algorithm, beta_index = discrete_action(action, beta_index, len(agent.betas))
        beta = agent.betas[beta_index]
        n = min(every, iterations - done)
        out = reconstructor.step(n, algorithm=algorithm, beta=beta)
        track.record(out["fourier_error"], out["exit_change"][-1], out["model_error"])
        entry = {"start": first + done, "iterations": n, "action": action,
                 "algorithm": algorithm, "beta": beta, "model_error": float(out["model_error"])}
        schedule.append(entry)
        done += n
        if on_step is not None:
            on_step(entry, out)
    return schedule
