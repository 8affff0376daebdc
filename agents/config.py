"""DQN hyperparameters and run settings, kept free of TensorFlow so the CLI can build its flags from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class DQNConfig:
    """Hyperparameters. Defaults are RL-Zoo's DQN settings for CartPole-v1. Each field is a
    flag of `sparkmpi-dl agent train` (its docstring is the flag's help)."""

    hidden: tuple[int, ...] = (256, 256)
    """hidden layer widths, e.g. 256,256"""
    learning_rate: float = 2.3e-3
    """Adam learning rate"""
    lr_final_fraction: float = 1.0
    """lr falls linearly to this fraction at the last step"""
    gamma: float = 0.99
    """discount factor"""
    batch_size: int = 64
    """minibatch size"""
    buffer_size: int = 100_000
    """replay capacity (transitions)"""
    learning_starts: int = 1000
    """env steps of random actions before learning"""
    train_freq: int = 256
    """env steps between update rounds"""
    gradient_steps: int = 128
    """minibatch updates per round"""
    target_update_interval: int = 10
    """env steps between target-network updates"""
    tau: float = 1.0
    """target update weight: 1 = hard copy, < 1 = Polyak averaging"""
    max_grad_norm: float = 10.0
    """global gradient-norm clip"""
    huber_delta: float = 1.0
    """Huber loss threshold"""
    double: bool = True
    """Double DQN targets (true) or plain max over the target net"""
    eps_start: float = 1.0
    """initial exploration epsilon"""
    eps_end: float = 0.04
    """final exploration epsilon"""
    exploration_fraction: float = 0.16
    """share of total steps over which epsilon decays"""

    def check(self) -> None:
        """Raise ValueError naming the first hyperparameter outside its range."""
        checks = [
            ("hidden", all(h > 0 for h in self.hidden), "positive layer widths"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("lr_final_fraction", 0.0 <= self.lr_final_fraction <= 1.0, "in [0, 1]"),
            ("gamma", 0.0 <= self.gamma <= 1.0, "in [0, 1]"),
            ("batch_size", self.batch_size > 0, "> 0"),
            ("buffer_size", self.buffer_size > 0, "> 0"),
            ("learning_starts", self.learning_starts >= 0, ">= 0"),
            ("train_freq", self.train_freq > 0, "> 0"),
            ("gradient_steps", self.gradient_steps > 0, "> 0"),
            ("target_update_interval", self.target_update_interval > 0, "> 0"),
            ("tau", 0.0 < self.tau <= 1.0, "in (0, 1]"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("huber_delta", self.huber_delta > 0, "> 0"),
            ("eps_start", 0.0 <= self.eps_start <= 1.0, "in [0, 1]"),
            ("eps_end", 0.0 <= self.eps_end <= 1.0, "in [0, 1]"),
            ("exploration_fraction", 0.0 <= self.exploration_fraction <= 1.0, "in [0, 1]"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"DQNConfig.{name} must be {rule}, got {getattr(self, name)!r}")


@dataclass
class RunConfig:
    """What to train on and for how long; the rest of a run besides the hyperparameters.
    The fields but keep_checkpoints are flags of `sparkmpi-dl agent train`."""

    env_id: str
    """Gymnasium env ID, e.g. CartPole-v1 or recon_env/PtychoTuning-v0 (not needed with --resume)"""
    total_steps: int = 50_000
    """total env steps"""
    seed: int = 0
    """env and exploration seed"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON object passed to gym.make"""
    eval_every: int = 5_000
    """env steps between evaluations (0: none)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    final_eval_episodes: int = 100
    """episodes of the final evaluation"""
    checkpoint_every: int = 10_000
    """env steps between checkpoints (taken at the next episode end)"""
    keep_checkpoints: bool = False
    """also keep checkpoint-<step>.npz copies"""
    log_every: int = 5_000
    """env steps between progress lines"""
    num_envs: int = 1
    """envs stepping in parallel worker processes (gymnasium AsyncVectorEnv); 2 gave 2.3x
    the env steps/s of 1 on the 96x64^2 tuning scans on the crowded 2-core box (BENCHMARKS.md)"""

    def check(self) -> None:
        """Raise ValueError naming the first field outside its range."""
        for name in ("total_steps", "eval_episodes", "final_eval_episodes", "log_every",
                     "num_envs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RunConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"RunConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class CompareConfig:
    """What `agent compare` compares and on what (agents/compare.py). The fields but betas,
    engine, the seeds and curve_every are its flags."""

    generator: dict[str, Any] | str = "train"
    """scan distribution: a ScanGenerator preset (toy, train: 96 frames of 64x64, heldout) or
    a JSON object of its fields"""
    heldout_objects: tuple[str, ...] | None = None
    """comma-separated objects of the held-out scans (default: the generator's; held-out
    scans always use other seeds)"""
    test_scans: int = 24
    """held-out scans"""
    train_scans: int = 8
    """training scans of the (algorithm, beta) grid search"""
    iterations: int = 60
    """iteration budget per method (BO: per trial)"""
    betas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    """the betas of the grid search for (a) best fixed"""
    bo_trials: int = 20
    """trials of the full-budget per-scan BO"""
    bo_budget_trials: int = 4
    """trials of the same-budget BO (each ITERATIONS/N iterations)"""
    engine: dict[str, Any] = field(default_factory=dict)
    """EngineConfig fields of every reconstruction"""
    backend: Literal["numpy", "cupy"] = "numpy"
    """reconstruction backend"""
    test_seed: int = 200_000
    """held-out scan i is drawn from seed test_seed + i"""
    train_seed: int = 100_000
    """training scan i is drawn from seed train_seed + i"""
    best_fixed: tuple[str, float] | None = None
    """use this setting as (a), e.g. raar:0.9, instead of the grid search on training scans
    (where the grid is unaffordable; reported as given)"""
    baselines: bool = True
    """also ptypy's defaults, the hand schedule and BO (else only the agents and (a))"""
    curve_every: int = 5
    """iterations between points of (a)'s curve"""

    def check(self) -> None:
        """Raise ValueError naming the first option outside its range."""
        if self.test_scans < 1 or self.train_scans < 1:
            raise ValueError("compare: --test-scans and --train-scans must be >= 1")
        if self.iterations < 2:
            raise ValueError(f"compare: --iterations must be >= 2, got {self.iterations}")
        if self.bo_trials < 2 or not 2 <= self.bo_budget_trials <= self.iterations:
            raise ValueError("compare: --bo-trials must be >= 2 and --bo-budget-trials in "
                             "[2, --iterations]")
        if self.curve_every < 1:
            raise ValueError(f"compare: curve_every must be >= 1, got {self.curve_every}")


# DQNConfig fields that mean nothing offline (they count env steps or shape exploration)
UNUSED_HYPERPARAMETERS = ("buffer_size", "learning_starts", "train_freq",
                          "target_update_interval", "eps_start", "eps_end",
                          "exploration_fraction")


@dataclass
class OfflineConfig:
    """How long to learn. Each field is a flag of `sparkmpi-dl agent learn`."""

    data: tuple[str, ...] = ()
    """collection folders of `sparkmpi-dl agent collect`, one or more after one --data"""
    updates: int = 40_000
    """minibatch updates in all"""
    target_update_every: int = 1_000
    """updates between hard copies of the online network into the target network"""
    n_step: int = 1
    """bootstrap after n steps of stored rewards (>= the episode length: Monte Carlo
    returns, no bootstrap at all); fewer bootstraps overestimate less on noisy rewards, but
    n > 1 learns toward the behaviour policy's value (no off-policy correction)"""
    seed: int = 0
    """network initialisation and minibatch seed"""
    log_every: int = 5_000
    """updates between progress lines"""

    def check(self) -> None:
        """Raise ValueError naming the first option outside its range."""
        if not self.data:
            raise ValueError("agent learn: give at least one --data COLLECTION_DIR")
        for name in ("updates", "target_update_every", "log_every", "n_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent learn: --{name.replace('_', '-')} must be >= 1, "
                                 f"got {getattr(self, name)}")


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """Linear from ``start`` to ``end`` over ``duration`` steps, then constant (epsilon, lr)."""
    if duration <= 0:
        return end
    frac = min(step / duration, 1.0)
    return start + frac * (end - start)
