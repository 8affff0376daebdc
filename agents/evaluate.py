"""Evaluation episodes: a fixed policy, no exploration, seeds that do not touch training."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np


@dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray
    final_infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def evaluate(policy: Callable[[np.ndarray], int], env: gym.Env, episodes: int,
             seed: int) -> EvalResult:
    """Run ``episodes`` episodes; episode i is reset with seed ``seed + i`` (reproducible)."""
    if episodes <= 0:
        raise ValueError(f"evaluate: episodes must be > 0, got {episodes}")
    returns, lengths, infos = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, n, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            n += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(n)
        infos.append(info)
    return EvalResult(np.array(returns), np.array(lengths), infos)
