"""DQN hyperparameters, kept free of TensorFlow so the CLI can build its flags from them."""
from __future__ import annotations

from dataclasses import dataclass, field


def _h(text: str, default):
    """A field with a help text (used for the ``--flag`` of the same name)."""
    return field(default=default, metadata={"help": text})


@dataclass
class DQNConfig:
    """Hyperparameters. Defaults are RL-Zoo's DQN settings for CartPole-v1."""

    hidden: tuple[int, ...] = _h("hidden layer widths, e.g. 256,256", (256, 256))
    learning_rate: float = _h("Adam learning rate", 2.3e-3)
    lr_final_fraction: float = _h("lr falls linearly to this fraction at the last step", 1.0)
    gamma: float = _h("discount factor", 0.99)
    batch_size: int = _h("minibatch size", 64)
    buffer_size: int = _h("replay capacity (transitions)", 100_000)
    learning_starts: int = _h("env steps of random actions before learning", 1000)
    train_freq: int = _h("env steps between update rounds", 256)
    gradient_steps: int = _h("minibatch updates per round", 128)
    target_update_interval: int = _h("env steps between target-network updates", 10)
    tau: float = _h("target update weight: 1 = hard copy, < 1 = Polyak averaging", 1.0)
    max_grad_norm: float = _h("global gradient-norm clip", 10.0)
    huber_delta: float = _h("Huber loss threshold", 1.0)
    double: bool = _h("Double DQN targets (true) or plain max over the target net", True)
    eps_start: float = _h("initial exploration epsilon", 1.0)
    eps_end: float = _h("final exploration epsilon", 0.04)
    exploration_fraction: float = _h("share of total steps over which epsilon decays", 0.16)

    def validate(self) -> None:
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


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """Linear from ``start`` to ``end`` over ``duration`` steps, then constant (epsilon, lr)."""
    if duration <= 0:
        return end
    frac = min(step / duration, 1.0)
    return start + frac * (end - start)
