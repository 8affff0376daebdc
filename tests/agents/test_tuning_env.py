"""The reconstruction-tuning env: Gymnasium contract, determinism, divergence, vector envs."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from recon_env.tuning_env import ENV_ID, OBS_SIZE, PtychoTuningEnv, register_envs

SMALL = dict(iterations_per_step=4, iteration_budget=16,
             generator={"n_frames": 32, "frame_size": 32})


def make(**kw) -> gym.Env:
    register_envs()
    return gym.make(ENV_ID, **{**SMALL, **kw})


def rollout(env: gym.Env, seed: int, actions: list[int]):
    obs, info = env.reset(seed=seed)
    trace = [(obs, info["scan"])]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trace


def test_passes_gymnasium_env_checker():
    check_env(make().unwrapped, skip_render_check=True)


def test_episode_is_deterministic_per_seed_and_truncates_at_budget():
    env = make()
    actions = [0, 4, 5, 1, 2]
    a, b = rollout(env, 7, actions), rollout(make(), 7, actions)
    assert a[0][1] == b[0][1]  # the same scan drawn
    for step_a, step_b in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(step_a[0], step_b[0])
        assert step_a[1:4] == step_b[1:4]
        assert step_a[4]["fourier_errors"] == step_b[4]["fourier_errors"]
        assert step_a[4]["model_error"] == step_b[4]["model_error"]
    assert len(a) == 5  # 16 iterations / 4 per step: truncated at the 4th step
    obs, reward, terminated, truncated, info = a[-1]
    assert truncated and not terminated and info["iteration"] == 16 and obs[9] == 1.0
    assert 0 < info["truth_phase_nrmse"] < 10  # ground truth only in info, at the end
    other = rollout(env, 8, actions)
    assert other[0][1] != a[0][1]


def test_return_telescopes_to_log_model_error_reduction():
    env = make()
    _, info = env.reset(seed=3)
    start, total = info["model_error"], 0.0
    for action in (1, 4, 3, 3):
        _, reward, _, _, info = env.step(action)
        total += reward
    assert info["model_error"] < start  # the reconstruction made progress
    assert total == pytest.approx(np.log10(start) - np.log10(info["model_error"]), abs=1e-9)


def test_actions_move_beta_on_the_ladder_and_pick_the_algorithm():
    env = make(initial_beta=0.3)
    env.reset(seed=1)
    seen = []
    for a in (0, 0, 0, 2, 3, 5, 5, 5):  # DM down x3 (clamped at 0.1), up; RAAR down, up x3
        if env.unwrapped._track.iterations >= 16:
            env.reset(seed=1)
        _, _, _, _, info = env.step(a)
        seen.append((info["algorithm"], info["beta"]))
    assert seen[:4] == [("dm", 0.2), ("dm", 0.1), ("dm", 0.1), ("dm", 0.2)]
    # the budget ran out: a fresh episode restarts at the initial beta 0.3
    assert seen[4:] == [("raar", 0.2), ("raar", 0.3), ("raar", 0.4), ("raar", 0.5)]


def test_divergence_terminates_with_penalty_and_never_raises():
    env = make(engine={"divergence_threshold": 1e-3}, divergence_penalty=3.0)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(1)
    assert terminated and not truncated and reward == -3.0
    assert info["diverged"] and "diverged" in info["divergence"]
    assert np.isfinite(obs).all() and env.observation_space.contains(obs)


def test_vector_env_runs_several_scans():
    register_envs()
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", **SMALL)
    obs, info = venv.reset(seed=[5, 6])
    assert obs.shape == (2, OBS_SIZE) and obs.dtype == np.float32
    for _ in range(4):
        obs, reward, terminated, truncated, info = venv.step(np.array([1, 4]))
    assert truncated.all() and reward.shape == (2,) and reward[0] != reward[1]
    venv.close()


@pytest.mark.parametrize("kwargs,message", [
    ({"iterations_per_step": 0}, "iterations_per_step must be >= 1"),
    ({"iteration_budget": 2}, "iteration_budget (2) must be >= iterations_per_step"),
    ({"betas": (0.9, 0.5)}, "betas must be an increasing ladder"),
    ({"initial_beta": 0.55}, "initial_beta 0.55 is not on the ladder"),
    ({"initial_algorithm": "hio"}, "initial_algorithm must be one of"),
    ({"generator": {"overlap": (0.9, 0.5)}}, "ScanGenerator.overlap: low 0.9 > high 0.5"),
    ({"comm": "nccl"}, "comm must be 'serial' or 'mpi'"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError) as err:
        PtychoTuningEnv(**kwargs)
    assert message in str(err.value)


def test_bad_calls_are_refused():
    env = PtychoTuningEnv(**SMALL)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 6 is not in Discrete"):
        env.step(6)


def test_mpi_split_reconstruction_matches_serial(tmp_path):
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("mpi_env_rank.py")
    spec = importlib.util.spec_from_file_location("mpi_env_rank", script)
    mpi_env_rank = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mpi_env_rank)
    out = tmp_path / "rank0.json"
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl", "mpirun", "-n", "2", "--",
                           sys.executable, str(script), str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    serial = mpi_env_rank.episode(make())
    assert result["size"] == 2 and len(result["rewards"]) == len(serial) == 4
    assert result["frames"] == [0, 16]  # rank 0 held only its half of the 32 frames
    # the same reconstruction with frames split over 2 ranks: equal up to summation order
    np.testing.assert_allclose(result["rewards"], serial, rtol=1e-3, atol=1e-5)


def test_continuous_variant_passes_checker_and_sets_beta():
    from recon_env.tuning_env import CONTINUOUS_ENV_ID

    register_envs()
    env = gym.make(CONTINUOUS_ENV_ID, **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=2)
    _, _, _, _, info = env.step(np.array([0.5, 0.9], np.float32))
    assert info["algorithm"] == "raar" and info["beta"] == pytest.approx(0.55)
    _, _, _, _, info = env.step(np.array([1.0, 0.1], np.float32))
    assert info["algorithm"] == "dm" and info["beta"] == pytest.approx(1.0)


def test_import_recon_env_registers_the_envs():
    """A fresh interpreter: `import recon_env` alone makes gym.make(ENV_ID) work."""
    import subprocess
    import sys

    code = ("import gymnasium as gym, recon_env; "
            "env = gym.make('recon_env/PtychoTuning-v0', iterations_per_step=2, "
            "iteration_budget=2, generator={'n_frames': 8, 'frame_size': 16}); "
            "env.reset(seed=0); gym.make('recon_env/PtychoTuningContinuous-v0'); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_render_rgb_array_is_the_current_phase_image():
    env = make(render_mode="rgb_array")
    check_env(env.unwrapped)  # includes Gymnasium's render checks
    env.reset(seed=4)
    first = env.render()
    env.step(1)
    image = env.render()
    shape = env.unwrapped.recon.object_shape
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    assert image.std() > 0 and not np.array_equal(image, first)  # it follows the iterations


def test_human_render_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="render_mode 'human' is not supported.*rgb_array"):
        PtychoTuningEnv(render_mode="human")
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        PtychoTuningEnv(render_mode="ansi")


def test_true_error_reward_is_the_decrease_of_the_registered_true_phase_error():
    from recon_env.metrics import compare_objects

    actions = [1, 4, 3, 2]
    env = make(reward="true_error")
    _, info = env.reset(seed=11)
    errors = [info["true_phase_rms"]]
    rewards = []
    for a in actions:
        _, reward, terminated, truncated, info = env.step(a)
        rewards.append(reward)
        recon = env.unwrapped.recon
        result = recon.result()
        truth = compare_objects(result["object"], recon.data.truth_object,
                                result["illumination"])["phase_rms"]  # as metrics computes it
        assert info["true_phase_rms"] == pytest.approx(truth, rel=1e-9)
        errors.append(truth)
    np.testing.assert_allclose(rewards, -np.diff(np.log10(errors)), rtol=1e-9)
    assert truncated and info["truth_phase_rms"] == pytest.approx(errors[-1])
    # the default reward (measured model error) differs on the same scan and actions
    measured = [step[1] for step in rollout(make(), 11, actions)[1:]]
    assert not np.allclose(measured, rewards)
    assert env.unwrapped.config()["reward"] == "true_error"


def test_unknown_reward_is_refused():
    with pytest.raises(ValueError, match=r"reward must be one of \('model_error', 'true_error'\)"):
        PtychoTuningEnv(reward="psnr")
