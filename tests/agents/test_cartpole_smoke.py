"""A short real training run: DQN must beat a random policy on CartPole by a wide margin."""
from pathlib import Path

import numpy as np

from agents.dqn import DQNConfig
from agents.envs import make_env
from agents.evaluate import evaluate
from agents.train import RunConfig, train


def test_cartpole_learns_clearly_better_than_random(tmp_path: Path):
    cfg = DQNConfig(hidden=(64, 64), learning_starts=500, train_freq=64, gradient_steps=32,
                    exploration_fraction=0.3)
    run = RunConfig("CartPole-v1", total_steps=6000, seed=0, eval_every=0,
                    final_eval_episodes=20, checkpoint_every=0, log_every=10**9)
    result = train(run, cfg, tmp_path, log=lambda msg: None)

    rng = np.random.default_rng(0)
    random = evaluate(lambda obs: int(rng.integers(2)), make_env("CartPole-v1"), 20,
                      seed=run.seed + 2_000_000)  # the same episodes as the final eval
    assert random.mean < 30
    assert result.final_eval.mean >= 60, result.final_eval.returns  # > 2x random; seeds 0-2: 150, 88, 72
