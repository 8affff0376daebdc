"""Double DQN learner in TensorFlow 2.15 / tf.keras: Q network, target network, update rule.

Acting does not call Keras: after each update the online weights are copied into NumPy and
the greedy action is a small NumPy forward pass (an MLP of a few layers). One Keras call per
environment step costs ~0.5 ms, the NumPy pass ~20 us, and weights only change when we train.
Training runs ``gradient_steps`` minibatch updates inside one ``tf.function`` call.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from agents.config import DQNConfig, linear_schedule

__all__ = ["DQN", "DQNConfig", "build_q_network", "linear_schedule", "td_target"]


def build_q_network(obs_dim: int, n_actions: int, hidden: tuple[int, ...]) -> tf.keras.Model:
    """ReLU MLP, one linear output per action."""
    layers = [tf.keras.Input(shape=(obs_dim,))]
    layers += [tf.keras.layers.Dense(h, activation="relu") for h in hidden]
    layers.append(tf.keras.layers.Dense(n_actions))
    return tf.keras.Sequential(layers)


def td_target(rewards: tf.Tensor, terminated: tf.Tensor, next_q_online: tf.Tensor,
              next_q_target: tf.Tensor, gamma: float, double: bool) -> tf.Tensor:
    """r + gamma * (1 - terminated) * Q_target(s', a*).

    Double DQN: a* = argmax of the online net, rated by the target net (less overestimation);
    plain DQN: a* = argmax of the target net. Only a true termination stops the bootstrap;
    a time-limit truncation is stored with terminated = 0 and bootstraps like any step.
    """
    chooser = next_q_online if double else next_q_target
    next_actions = tf.argmax(chooser, axis=1, output_type=tf.int32)
    next_v = tf.gather(next_q_target, next_actions, batch_dims=1)
    return rewards + gamma * (1.0 - terminated) * next_v


class DQN:
    """Online and target Q networks plus Adam; ``train`` runs one round of updates."""

    def __init__(self, obs_dim: int, n_actions: int, cfg: DQNConfig,
                 grad_reducer: Callable[[list[tf.Tensor]], list[tf.Tensor]] | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        self.grad_reducer = grad_reducer  # e.g. a Horovod average across ranks
        self.n_actions = n_actions
        self.q = build_q_network(obs_dim, n_actions, cfg.hidden)
        self.q_target = build_q_network(obs_dim, n_actions, cfg.hidden)
        self.q_target.set_weights(self.q.get_weights())
        self.optimizer = tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate)
        self.optimizer.build(self.q.trainable_variables)  # slots exist before any restore
        self._huber = tf.keras.losses.Huber(delta=cfg.huber_delta)
        self._np_weights: list[np.ndarray] = []
        self.refresh_policy()

    # ---- acting -------------------------------------------------------------------------
    def refresh_policy(self) -> None:
        """Copy the online weights to NumPy for fast acting (call after weights change)."""
        self._np_weights = [w.astype(np.float32) for w in self.q.get_weights()]

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q(obs, .) for a batch (or one) observation, from the NumPy copy of the weights."""
        x = np.asarray(obs, np.float32)
        w = self._np_weights
        for i in range(0, len(w) - 2, 2):
            x = np.maximum(x @ w[i] + w[i + 1], 0.0)
        return x @ w[-2] + w[-1]

    def greedy(self, obs: np.ndarray) -> int:
        return int(np.argmax(self.q_values(obs)))

    # ---- learning -----------------------------------------------------------------------
    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)

    def train(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """Run one update per leading index of ``batch`` (arrays shaped (steps, batch, ...))."""
        loss, q_mean, grad_norm = self._train_round(
            tf.convert_to_tensor(batch["obs"], tf.float32),
            tf.convert_to_tensor(batch["actions"], tf.int32),
            tf.convert_to_tensor(batch["rewards"], tf.float32),
            tf.convert_to_tensor(batch["next_obs"], tf.float32),
            tf.convert_to_tensor(batch["terminated"], tf.float32),
        )
        self.refresh_policy()
        return {"loss": float(loss), "q_mean": float(q_mean), "grad_norm": float(grad_norm)}

    @tf.function(reduce_retracing=True, autograph=False)
    def _train_round(self, obs, actions, rewards, next_obs, terminated):
        """All updates of a round in one graph: a tf.while_loop over the leading axis."""
        n = tf.shape(obs)[0]

        def body(i, sums):
            step = self._train_step(obs[i], actions[i], rewards[i], next_obs[i], terminated[i])
            return i + 1, sums + step

        _, sums = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.zeros(3)))
        return tf.unstack(sums / tf.cast(n, tf.float32))

    def _train_step(self, obs, actions, rewards, next_obs, terminated):
        """One Double-DQN minibatch update; returns [loss, mean Q(s,a), pre-clip grad norm]."""
        target = tf.stop_gradient(td_target(rewards, terminated, self.q(next_obs),
                                            self.q_target(next_obs), self.cfg.gamma,
                                            self.cfg.double))
        variables = self.q.trainable_variables
        with tf.GradientTape() as tape:
            q_sa = tf.gather(self.q(obs, training=True), actions, batch_dims=1)
            loss = self._huber(target, q_sa)
        grads = tape.gradient(loss, variables)
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        grads, norm = tf.clip_by_global_norm(grads, self.cfg.max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        return tf.stack([loss, tf.reduce_mean(q_sa), norm])

    def update_target(self) -> None:
        """Target <- tau * online + (1 - tau) * target (a hard copy when tau = 1)."""
        tau = self.cfg.tau
        for t, s in zip(self.q_target.weights, self.q.weights):
            t.assign(s if tau == 1.0 else tau * s + (1.0 - tau) * t)

    # ---- checkpoint state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for prefix, values in (("q", self.q.get_weights()),
                               ("q_target", self.q_target.get_weights()),
                               ("opt", [v.numpy() for v in self.optimizer.variables])):
            for i, v in enumerate(values):
                state[f"{prefix}/{i}"] = v
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        def values(prefix: str, expected: int) -> list[np.ndarray]:
            got = sorted((k for k in state if k.startswith(prefix + "/")),
                         key=lambda k: int(k.split("/")[1]))
            if len(got) != expected:
                raise ValueError(f"DQN checkpoint: '{prefix}' has {len(got)} arrays, this "
                                 f"network needs {expected} (different --hidden?)")
            return [state[k] for k in got]

        self.q.set_weights(values("q", len(self.q.weights)))
        self.q_target.set_weights(values("q_target", len(self.q_target.weights)))
        for var, v in zip(self.optimizer.variables, values("opt", len(self.optimizer.variables))):
            var.assign(v)
        self.refresh_policy()
