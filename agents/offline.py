"""The learner of offline (Ape-X style) training: Double DQN on stored transitions.

``agents.collect`` actors play the tuning env where it is fast (worker processes on a GPU
machine, no TensorFlow needed there); this module trains one Q network on everything they
stored, with the same ``agents.dqn.DQN`` update as online training, and writes an ordinary
run folder (``config.json``, ``checkpoint.npz``), so ``agent eval``, ``agent compare``,
``recon --agent`` and ``stream recon --agent`` play it like any trained agent.

Two differences from the online loop, both because there are no env steps here:
- schedules count minibatch updates: ``updates`` in all, ``gradient_steps`` per round,
  a hard target copy every ``target_update_every`` updates, the learning rate falling
  linearly to ``lr_final_fraction`` of itself;
- the end of the iteration budget ends the bootstrap. The budget is part of the task (the
  observation carries the fraction used), so the last step of an episode is terminal;
  bootstrapping from a budget-end state would read a Q value no transition ever trains.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from agents.checkpoint import save_checkpoint
from agents.collect import ENV_ID, load_transitions
from agents.config import DQNConfig, OfflineConfig, RunConfig, linear_schedule
from agents.dqn import DQN
from agents.train import CHECKPOINT, save_run_config
from recon_env.observation import N_ACTIONS, OBS_SIZE

RUN_KIND = "dqn-offline"


def _env_kwargs(folders: tuple[str, ...]) -> dict[str, Any]:
    """The env options the collections share (backend dropped: it is not the agent's)."""
    kwargs = None
    for folder in folders:
        record = json.loads((Path(folder) / "collect.json").read_text())
        mine = {k: v for k, v in record.get("env_kwargs", {}).items() if k != "backend"}
        if kwargs is not None and mine != kwargs:
            raise ValueError(f"agent learn: {folder} was collected with env options {mine}, "
                             f"the first collection with {kwargs}; learn from one env only")
        kwargs = mine
    return kwargs or {}


def n_step_transitions(data: dict[str, np.ndarray], n: int, gamma: float
                       ) -> dict[str, np.ndarray]:
    """Transitions t -> t + n: the discounted sum of the n rewards, the observation n steps
    later, terminal where the episode ends within the n steps (the budget's end included,
    see the module docstring). Stored episodes are contiguous and in step order."""
    ends = data["terminated"] | data["truncated"]
    size = len(ends)
    rewards = np.zeros(size, np.float64)
    last = np.arange(size)  # the index of the last transition summed
    alive = np.ones(size, bool)  # still inside the episode after the k steps summed so far
    for k in range(n):
        idx = np.minimum(np.arange(size) + k, size - 1)
        rewards[alive] += gamma ** k * data["rewards"][idx[alive]]
        last[alive] = idx[alive]
        alive &= ~ends[idx]
    return {"obs": data["obs"], "actions": data["actions"],
            "rewards": rewards.astype(np.float32), "next_obs": data["next_obs"][last],
            "terminated": (~alive).astype(np.float32)}


def learn(off: OfflineConfig, cfg: DQNConfig, run_dir: Path,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the stored transitions of ``off.data`` and write the run folder ``run_dir``
    (must be new or empty). Returns the summary also written to ``offline.json``."""
    from sparkmpi_dl.runs import open_run

    off.check()
    cfg.check()
    if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()):
        raise ValueError(f"agent learn: {run_dir} is not empty; learn into a new folder")
    data = load_transitions([Path(d) for d in off.data])  # ValueError names a bad folder
    env_kwargs = _env_kwargs(off.data)
    run = RunConfig(env_id=ENV_ID, total_steps=len(data["rewards"]), seed=off.seed,
                    env_kwargs=env_kwargs)
    open_run(run_dir, RUN_KIND, {**dataclasses.asdict(off), **dataclasses.asdict(cfg),
                                 "env_kwargs": env_kwargs}, resume=False)
    run_dir = Path(run_dir)
    tf.keras.utils.set_random_seed(off.seed)
    rng = np.random.default_rng(off.seed)
    # an n-step target bootstraps with gamma^n (every non-terminal one spans exactly n steps)
    learner = DQN(OBS_SIZE, N_ACTIONS, dataclasses.replace(cfg, gamma=cfg.gamma ** off.n_step))
    batch_data = n_step_transitions(data, off.n_step, cfg.gamma)
    n = len(batch_data["rewards"])
    episodes = len(np.unique(data["episode"]))
    log(f"agent learn: {n} transitions of {episodes} episodes from {len(off.data)} "
        f"collection(s); {off.updates} updates of {cfg.batch_size}")
    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    started = time.perf_counter()
    done = 0
    curve: list[list[float]] = []
    while done < off.updates:
        k = min(cfg.gradient_steps, off.updates - done)
        idx = rng.integers(n, size=(k, cfg.batch_size))
        learner.set_learning_rate(linear_schedule(done, cfg.learning_rate,
                                                  cfg.learning_rate * cfg.lr_final_fraction,
                                                  off.updates))
        metrics = learner.train({key: v[idx] for key, v in batch_data.items()})
        before, done = done, done + k
        if done // off.target_update_every > before // off.target_update_every:
            learner.update_target()
        with writer.as_default(step=done):
            for name, value in metrics.items():
                tf.summary.scalar(f"losses/{name}", value)
        if done // off.log_every > before // off.log_every or done == off.updates:
            curve.append([done, metrics["loss"], metrics["q_mean"]])
            log(f"update {done:>7}/{off.updates}  loss {metrics['loss']:.5f}  "
                f"mean Q(s,a) {metrics['q_mean']:.3f}  "
                f"{done / (time.perf_counter() - started):,.0f} updates/s")
    writer.flush()
    seconds = time.perf_counter() - started
    starts = data["t"] == 0
    behaviour_return = float(np.bincount(data["episode"] - data["episode"].min(),
                                         weights=data["rewards"]).sum() / episodes)
    greedy_value = float(learner.q_values(data["obs"][starts]).max(axis=1).mean())
    summary = {**dataclasses.asdict(off), "transitions": n, "episodes": episodes, "seconds": seconds, "updates_per_second": done / seconds,
               "behaviour_mean_return": behaviour_return,
               "greedy_q_at_start": greedy_value, "curve": curve}
    save_run_config(run_dir, run, cfg)
    save_checkpoint(run_dir / CHECKPOINT, {"run": dataclasses.asdict(run),
                                           "dqn": dataclasses.asdict(cfg), "offline": summary},
                    {"learner": learner.state_dict()})
    (run_dir / "offline.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"agent learn: done in {seconds:.1f} s; behaviour return {behaviour_return:.3f}, "
        f"greedy Q at the start states {greedy_value:.3f} (decades); wrote {run_dir}")
    return summary
