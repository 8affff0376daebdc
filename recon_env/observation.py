"""The measured state of a running reconstruction, as the tuning agent sees it.

One implementation shared by the Gymnasium env (``recon_env.tuning_env``, training) and the
steering loop (``agents.steer``, a user's reconstruction), so that an agent trained in the env
reads exactly the same features on real data. Import-light: NumPy only.

Observation (``OBS_SIZE`` float32 entries, measured quantities only, no ground truth), with
M_t the engine's ``model_error`` after decision t and L = log10:
    0  L M_t                         1  L M_t - L M_{t-1}        2  L M_{t-1} - L M_{t-2}
    3  L e_last - L e_prev (per-iteration fourier_error slope, last iteration)
    4  L M_t - min_s L M_s           5  L exit-wave change (last iteration)
    6  beta in use                   7  1 if DM else 0           8  1 if RAAR else 0
    9  fraction of budget used       10 1 once the first chunk ran
Every entry is clipped to [-CLIP, CLIP].

Discrete actions (``N_ACTIONS``): ``algorithm = ALGORITHMS[a // 3]`` and the beta index on the
ladder moves by ``(a % 3) - 1`` (down / keep / up), clamped at the ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALGORITHMS = ("dm", "raar")
BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the default beta ladder
OBS_SIZE = 11
N_ACTIONS = 2 * 3
CLIP = 10.0


def log10(x: float) -> float:
    """log10 that maps 0 to -30 and keeps NaN for non-finite input."""
    return math.log10(max(x, 1e-30)) if math.isfinite(x) else math.nan


def discrete_action(action: int, beta_index: int, n_betas: int) -> tuple[str, int]:
    """(algorithm, new beta index) chosen by a discrete action (see the module docstring)."""
    action = int(action)
    if not 0 <= action < N_ACTIONS:
        raise ValueError(f"action must be in 0..{N_ACTIONS - 1}, got {action}")
    return ALGORITHMS[action // 3], min(max(beta_index + action % 3 - 1, 0), n_betas - 1)


@dataclass
class MeasuredTrack:
    """Measured history of one reconstruction, decision by decision."""

    model_errors: list[float] = field(default_factory=list)  # L M_0, L M_1, ...
    last_iters: list[float] = field(default_factory=list)  # last two log10 fourier_error
    exit_change: float = 0.0
    iterations: int = 0

    def start(self, model_error: float) -> None:
        """M_0: the model error of the start guess (``Reconstructor.step(0)``)."""
        self.model_errors.append(log10(model_error))

    def record(self, errors: list[float], exit_change: float, model_error: float) -> float:
        """Append a chunk's measurements; return L M_{t-1} - L M_t (decades removed)."""
        logs = [log10(e) for e in errors]
        self.last_iters = ((self.last_iters or logs[:1]) + logs)[-2:]
        self.exit_change = log10(exit_change)
        self.iterations += len(errors)
        self.model_errors.append(log10(model_error))
        return self.model_errors[-2] - self.model_errors[-1]

    def observation(self, beta: float, algorithm: str, budget: int) -> np.ndarray:
        """The ``OBS_SIZE`` feature vector (see the module docstring)."""
        obs = np.zeros(OBS_SIZE, np.float32)
        m = self.model_errors
        if m:
            obs[0] = m[-1]
            obs[4] = m[-1] - min(m)
        if len(m) >= 2:
            obs[1] = m[-1] - m[-2]
            obs[2] = m[-2] - m[-3] if len(m) >= 3 else 0.0
            obs[3] = self.last_iters[-1] - self.last_iters[0]
            obs[5] = self.exit_change
            obs[10] = 1.0
        obs[6] = beta
        obs[7 + ALGORITHMS.index(algorithm)] = 1.0
        obs[9] = self.iterations / budget
        return np.clip(np.nan_to_num(obs, nan=0.0), -CLIP, CLIP)
