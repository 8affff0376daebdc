"""Make a Gymnasium env by ID for the agent, and refuse the kinds it cannot drive."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make`` plus: the project's ``recon_env/...`` IDs are registered on demand, and the
    spaces are checked (a flat Box observation and a Discrete action space, what DQN needs)."""
    if env_id.partition("/")[0] == "recon_env":
        from recon_env.tuning_env import register_envs

        register_envs()
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except gym.error.Error as err:
        raise ValueError(f"env {env_id!r}: {err}") from err
    except TypeError as err:  # an unknown keyword in env_kwargs
        raise ValueError(f"env {env_id!r}: bad env kwargs {env_kwargs!r}: {err}") from err
    check_spaces(env_id, env)
    return env


def check_spaces(env_id: str, env: gym.Env) -> None:
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"env {env_id!r}: DQN needs a Discrete action space, got "
                         f"{env.action_space}")
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"env {env_id!r}: DQN needs a flat Box observation space, got {space}")


def obs_dim(env: gym.Env) -> int:
    """Length of the flat Box observation (check_spaces made sure it is one)."""
    shape = env.observation_space.shape
    assert shape is not None
    return int(np.prod(shape))


def n_actions(env: gym.Env) -> int:
    """Number of discrete actions (check_spaces made sure the space is Discrete)."""
    space = env.action_space
    assert isinstance(space, gym.spaces.Discrete)
    return int(space.n)
