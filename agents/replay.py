"""Fixed-size ring replay buffer in NumPy whose whole state goes into a checkpoint.

It stores ``terminated``, not ``done``: a transition cut by a time limit (``truncated``) still
bootstraps from its next observation, so the learner must never see it as an end of the world.
"""
from __future__ import annotations

import numpy as np

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """Preallocated arrays written in a circle; the oldest transition is overwritten first."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        if capacity <= 0:
            raise ValueError(f"ReplayBuffer: capacity must be > 0, got {capacity}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs = np.zeros((self.capacity, *self.obs_shape), np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(self.capacity, np.int64)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.pos = 0  # where the next transition goes
        self.size = 0  # how many slots hold data

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        """Store one transition, overwriting the oldest once full."""
        i = self.pos
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = float(terminated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, shape: int | tuple[int, ...]) -> dict[str, np.ndarray]:
        """Uniform sample with replacement; ``shape`` (e.g. ``(steps, batch)``) leads every array."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = rng.integers(0, self.size, size=shape)
        return {name: getattr(self, name)[idx] for name in FIELDS}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Only the filled part is saved, so an early checkpoint stays small."""
        state = {name: getattr(self, name)[: self.size] for name in FIELDS}
        state["pos_size_capacity"] = np.array([self.pos, self.size, self.capacity], np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pos, size, capacity = (int(v) for v in state["pos_size_capacity"])
        if capacity != self.capacity:
            raise ValueError(f"ReplayBuffer: checkpoint capacity {capacity} != buffer capacity "
                             f"{self.capacity}")
        if state["obs"].shape[1:] != self.obs_shape:
            raise ValueError(f"ReplayBuffer: checkpoint observation shape {state['obs'].shape[1:]} "
                             f"!= {self.obs_shape}")
        for name in FIELDS:
            getattr(self, name)[:size] = state[name]
        self.pos, self.size = pos, size
