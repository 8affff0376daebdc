"""``agent train --num-envs N``: envs in worker processes feed one learner."""
import json
from pathlib import Path

import numpy as np

from agents.config import DQNConfig
from agents.train import RunConfig, train

TINY_ENV = {"iterations_per_step": 2, "iteration_budget": 4,
            "generator": {"n_frames": 8, "frame_size": 16, "probe_diameter_frac": [0.4, 0.45]}}
TINY_DQN = DQNConfig(hidden=(8,), batch_size=4, buffer_size=64, learning_starts=4,
                     train_freq=2, gradient_steps=1, target_update_interval=4)


def test_two_envs_fill_one_replay(tmp_path: Path):
    cfg = RunConfig("recon_env/PtychoTuning-v0", total_steps=12, seed=5, env_kwargs=TINY_ENV,
                    eval_every=0, final_eval_episodes=1, checkpoint_every=6, log_every=100,
                    num_envs=2)
    result = train(cfg, TINY_DQN, tmp_path / "a", log=lambda m: None)
    episodes = np.asarray(result.progress.episodes)
    assert result.progress.step == 12 and len(episodes) == 6  # 2 steps per episode
    assert list(episodes[:, 2]) == [2] * 6 and list(episodes[:, 0]) == [3, 4, 7, 8, 11, 12]
    assert result.progress.updates == 5  # every 2nd step from step 4 on (4, 6, ..., 12)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["run"]["num_envs"] == 2
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["num_envs"] == 2


def test_true_error_reward_reaches_the_worker_envs(tmp_path: Path):
    """The env's reward option travels to the worker processes: with the same seeds (same
    scans, same random actions before learning starts) the returns are the decades of true
    phase error removed, not of model error."""
    returns = {}
    for reward in ("model_error", "true_error"):
        cfg = RunConfig("recon_env/PtychoTuning-v0", total_steps=8, seed=7,
                        env_kwargs={**TINY_ENV, "reward": reward}, eval_every=0,
                        final_eval_episodes=1, checkpoint_every=0, log_every=100, num_envs=2)
        dqn = DQNConfig(**{**TINY_DQN.__dict__, "learning_starts": 100})  # random actions
        result = train(cfg, dqn, tmp_path / reward, log=lambda m: None)
        returns[reward] = np.asarray(result.progress.episodes)[:, 1]
        saved = json.loads((tmp_path / reward / "config.json").read_text())
        assert saved["run"]["env_kwargs"]["reward"] == reward
    assert len(returns["true_error"]) == len(returns["model_error"]) == 4
    assert not np.allclose(returns["true_error"], returns["model_error"])
