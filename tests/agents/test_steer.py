"""Agent-steered reconstruction (issue 13 item 3): the Python entry point plays exactly what the
agent would play in the env, and `recon --agent` works serially and on 2 MPI ranks."""
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import recon_env  # noqa: F401 - registers the envs
from agents.steer import load_agent, steer
from recon_env.cxi import read_result_cxi, write_cxi
from recon_env.engine import Reconstructor
from recon_env.simulate import simulate
from recon_env.tuning_env import ENV_ID

SMALL = ["--frames", "24", "--shape", "32", "--photons", "1e6"]


@pytest.fixture(scope="module")
def agent():
    return load_agent("pretrained")


def test_steer_plays_what_the_agent_plays_in_the_env(agent):
    """Same scan, same start: steer() on a Reconstructor and an env episode driven by the same
    agent make the same decisions, so the agent reads the observation it was trained on."""
    env = gym.make(ENV_ID, iterations_per_step=5, iteration_budget=30,
                   generator={"n_frames": 32, "frame_size": 32})
    obs, info = env.reset(seed=21)
    actions, errors, done = [], [], False
    while not done:
        actions.append(agent.act(obs))
        obs, _, terminated, truncated, info = env.step(actions[-1])
        errors.append(info["model_error"])
        done = terminated or truncated
    rec = Reconstructor(simulate(**env.unwrapped.scan))
    schedule = steer(rec, agent, every=5, iterations=30)
    assert [e["action"] for e in schedule] == actions
    np.testing.assert_allclose([e["model_error"] for e in schedule], errors, rtol=1e-9)
    assert [e["start"] for e in schedule] == list(range(0, 30, 5))
    assert rec.history["algorithm"] == [e["algorithm"] for e in schedule for _ in range(5)]


def test_steer_validates_its_arguments(agent):
    rec = Reconstructor(simulate(n_frames=8, frame_size=16, probe_diameter=5, seed=0))
    with pytest.raises(ValueError, match="every must be >= 1"):
        steer(rec, agent, every=0)
    with pytest.raises(ValueError, match="no config.json"):
        steer(rec, "/nonexistent/run", every=2)
    assert steer(rec, agent, every=3, iterations=7)[-1]["iterations"] == 1  # 3 + 3 + 1


def test_recon_agent_serial_records_and_draws_the_schedule(tmp_path, capsys):
    from recon_env import cli

    out = tmp_path / "out"
    assert cli.main(["recon", "--simulate", *SMALL, "--iterations", "12", "--agent", "pretrained",
                     "--agent-every", "4", "--out", str(out)]) == 0
    assert "agent: " in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    schedule = summary["schedule"]
    assert [e["start"] for e in schedule] == [0, 4, 8] and summary["algorithm"] == "agent"
    assert summary["inputs"]["agent"]["every"] == 4
    assert summary["inputs"]["agent"]["source"].endswith("ptycho_tuning_offline")
    history = read_result_cxi(out / "recon.cxi")["history"]
    assert history["beta"] == [e["beta"] for e in schedule for _ in range(4)]
    assert (out / "errors.png").stat().st_size > 0


def test_recon_agent_on_two_mpi_ranks(tmp_path):
    data = simulate(n_frames=24, frame_size=32, probe_diameter=10, photons=1e6, seed=3)
    data.intensities[5, 0, :3] = -1.0  # also: the negative count covers both ranks' frames
    data.intensities[20, 0, 0] = -4.0
    scan = tmp_path / "scan.cxi"
    write_cxi(scan, data)
    runs = {}
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}"
        proc = subprocess.run(
            [sys.executable, "-m", "recon_env.cli", "recon", "--cxi", str(scan), "--iterations",
             "6", "--agent", "pretrained", "--agent-every", "3", "--ranks", str(ranks),
             "--out", str(out)], capture_output=True, text=True, timeout=240, env=dict(os.environ))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        warned = [line for line in (proc.stdout + proc.stderr).splitlines() if "negative" in line]
        assert len(warned) == 1 and "4 negative intensity values in 2 of 24 frames" in warned[0]
        runs[ranks] = json.loads((out / "summary.json").read_text())
    assert runs[2]["ranks"] == 2 and runs[2]["inputs"]["comm"] == "mpi"
    one, two = runs[1]["schedule"], runs[2]["schedule"]
    assert [e["action"] for e in two] == [e["action"] for e in one]
    np.testing.assert_allclose([e["model_error"] for e in two], [e["model_error"] for e in one],
                               rtol=1e-3)


def test_recon_bad_agent_is_one_line(tmp_path, capsys):
    from recon_env import cli

    code = cli.main(["recon", "--simulate", *SMALL, "--agent", str(tmp_path / "nothing"),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --agent: agent ") and "no config.json" in err
    assert not (tmp_path / "o").exists()


def test_numpy_policy_is_the_trained_dqn_greedy_policy(agent):
    """Steering acts without TensorFlow; it must pick what agents.dqn's greedy policy picks."""
    from agents.cli import _load_policy
    from agents.steer import PRETRAINED

    _, greedy = _load_policy(PRETRAINED)
    rng = np.random.default_rng(0)
    observations = rng.normal(0, 1.5, (200, 11)).astype(np.float32)
    assert [agent.act(o) for o in observations] == [greedy(o) for o in observations]
