"""DQN update rule: TD targets (double, truncation vs termination), target updates, epsilon."""
import numpy as np
import pytest
import tensorflow as tf

from agents.dqn import DQN, DQNConfig, linear_schedule, td_target


def test_td_target_double_and_termination():
    rewards = np.array([1.0, 1.0, 0.5], np.float32)
    terminated = np.array([0.0, 1.0, 0.0], np.float32)
    online = np.array([[0.0, 9.0], [0.0, 9.0], [3.0, 1.0]], np.float32)
    target = np.array([[4.0, 2.0], [4.0, 2.0], [5.0, 7.0]], np.float32)
    double = td_target(rewards, terminated, online, target, 0.9, double=True).numpy()
    # online picks a*=1,1,0; target rates them 2, (terminated), 5
    np.testing.assert_allclose(double, [1.0 + 0.9 * 2.0, 1.0, 0.5 + 0.9 * 5.0])
    plain = td_target(rewards, terminated, online, target, 0.9, double=False).numpy()
    np.testing.assert_allclose(plain, [1.0 + 0.9 * 4.0, 1.0, 0.5 + 0.9 * 7.0])


def small_dqn(**kw) -> DQN:
    tf.keras.utils.set_random_seed(0)
    return DQN(3, 2, DQNConfig(hidden=(8,), **kw))


def test_hard_target_update_copies_and_target_stays_fixed_while_training():
    agent = small_dqn(tau=1.0)
    before = [w.copy() for w in agent.q_target.get_weights()]
    rng = np.random.default_rng(0)
    batch = {"obs": rng.normal(size=(4, 16, 3)).astype(np.float32),
             "actions": rng.integers(2, size=(4, 16)), "rewards": np.ones((4, 16), np.float32),
             "next_obs": rng.normal(size=(4, 16, 3)).astype(np.float32),
             "terminated": np.zeros((4, 16), np.float32)}
    metrics = agent.train(batch)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    for b, t in zip(before, agent.q_target.get_weights()):
        np.testing.assert_array_equal(b, t)  # training never touches the target net
    assert any(not np.array_equal(b, q) for b, q in zip(before, agent.q.get_weights()))
    assert int(agent.optimizer.iterations.numpy()) == 4  # one update per leading index
    agent.update_target()
    for q, t in zip(agent.q.get_weights(), agent.q_target.get_weights()):
        np.testing.assert_array_equal(q, t)


def test_polyak_target_update():
    agent = small_dqn(tau=0.25)
    online = [w + 1.0 for w in agent.q.get_weights()]
    agent.q.set_weights(online)
    old_target = agent.q_target.get_weights()
    agent.update_target()
    for q, t0, t in zip(online, old_target, agent.q_target.get_weights()):
        np.testing.assert_allclose(t, 0.25 * q + 0.75 * t0, rtol=1e-6)


def test_numpy_policy_matches_keras_and_follows_training():
    agent = small_dqn()
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(agent.q_values(obs), agent.q(obs).numpy(), rtol=1e-5, atol=1e-6)
    agent.q.set_weights([w * 2 for w in agent.q.get_weights()])
    agent.refresh_policy()
    np.testing.assert_allclose(agent.q_values(obs), agent.q(obs).numpy(), rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    agent = small_dqn(max_grad_norm=1e-3)
    batch = {"obs": np.ones((1, 4, 3), np.float32), "actions": np.zeros((1, 4), np.int64),
             "rewards": np.full((1, 4), 1e4, np.float32), "next_obs": np.ones((1, 4, 3), np.float32),
             "terminated": np.ones((1, 4), np.float32)}
    metrics = agent.train(batch)
    assert metrics["grad_norm"] > 1.0  # the raw gradient was large
    # After one Adam step the first moments are (1 - beta_1) * applied gradient.
    moments = [v.numpy() for v in agent.optimizer.variables if v.name.startswith("m/")]
    applied = np.sqrt(sum(float(np.sum(m**2)) for m in moments)) / (1 - 0.9)
    assert applied == pytest.approx(1e-3, rel=1e-3)


def test_linear_schedule():
    assert linear_schedule(0, 1.0, 0.1, 100) == 1.0
    assert linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_schedule(100, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert linear_schedule(10_000, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert linear_schedule(5, 1.0, 0.1, 0) == 0.1


@pytest.mark.parametrize("field,value", [("gamma", 1.5), ("tau", 0.0), ("batch_size", 0),
                                         ("hidden", (64, 0)), ("eps_end", -0.1)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"DQNConfig.{field}"):
        DQNConfig(**{field: value}).check()
