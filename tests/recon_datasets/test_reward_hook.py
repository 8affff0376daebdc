"""The quality estimator as the tuning environment's optional reward term (no ground truth)."""
import math

import gymnasium as gym
import pytest

import recon_env.tuning_env  # noqa: F401 - registers the environments

SMALL_SCANS = {"n_frames": 24, "frame_size": 32}


@pytest.fixture(scope="module")
def untrained_estimator(tmp_path_factory):
    """An estimator network with random weights: enough to test the plumbing of the hook."""
    from recon_datasets.estimator import build_model
    path = tmp_path_factory.mktemp("estimator") / "model.keras"
    build_model(crop=16, history=12).save(path)
    return str(path)


def _episode(env):
    obs, info = env.reset(seed=3)
    rewards, done = [], False
    while not done:
        obs, reward, terminated, truncated, step_info = env.step(1)
        rewards.append(reward)
        done = terminated or truncated
    return info, step_info, rewards


def test_estimator_term_is_added_at_truncation_and_reported(untrained_estimator):
    kwargs = dict(iterations_per_step=4, iteration_budget=12, generator=SMALL_SCANS)
    plain = gym.make("recon_env/PtychoTuning-v0", **kwargs)
    hooked = gym.make("recon_env/PtychoTuning-v0", estimator=untrained_estimator,
                      estimator_weight=2.0, **kwargs)
    _, _, plain_rewards = _episode(plain)
    start_info, end_info, hooked_rewards = _episode(hooked)
    assert start_info["estimated_phase_rms"] > 0 and end_info["estimated_phase_rms"] > 0
    bonus = 2.0 * (math.log10(start_info["estimated_phase_rms"]) - math.log10(end_info["estimated_phase_rms"]))
    assert hooked_rewards[:-1] == pytest.approx(plain_rewards[:-1])  # only the last step changes
    assert hooked_rewards[-1] == pytest.approx(plain_rewards[-1] + bonus)
    assert math.isfinite(hooked_rewards[-1])


def test_bad_estimator_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="estimator model .* does not exist"):
        gym.make("recon_env/PtychoTuning-v0", estimator=str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="estimator_weight must be >= 0"):
        gym.make("recon_env/PtychoTuning-v0", estimator_weight=-1.0)
