"""Offline (Ape-X style) training: `agent collect` actors store what they play, the same data
whatever the worker count; `agent learn` turns stored transitions into a run folder that
steering loads. Toy scans (48 frames of 32x32, 12 steps an episode) keep every test seconds."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.collect import (ENV_ID, TRANSITION_KEYS, CollectConfig, collect, episode_seed,
                            load_transitions)
from agents.steer import load_agent
from recon_env.observation import N_ACTIONS, OBS_SIZE

TOY = {"generator": "toy", "reward": "true_error", "backend": "numpy"}
STEPS = 12  # the env's default budget: 60 iterations, 5 per step
SCRIPT = str(Path(sys.executable).parent / "sparkmpi-dl")


def by_episode_and_step(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((data["t"], data["episode"]))
    return {k: v[order] for k, v in data.items()}


def console(*argv: str) -> subprocess.CompletedProcess:
    """The installed console script with a plain PATH (no activated venv)."""
    return subprocess.run([SCRIPT, *argv], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def parallel(tmp_path_factory) -> Path:
    """4 toy episodes on 2 workers, one shard per episode."""
    out = tmp_path_factory.mktemp("collections") / "parallel"
    collect(CollectConfig(episodes=4, workers=2, shard_episodes=1, env_kwargs=TOY), out,
            log=lambda line: None)
    return out


# ---- actors ------------------------------------------------------------------------------

def test_collect_writes_shards_summary_and_whole_episodes(parallel: Path):
    assert sorted(p.name for p in parallel.iterdir()) == [
        "collect.json", "summary.json", "w000-0000.npz", "w000-0001.npz", "w001-0000.npz",
        "w001-0001.npz"]  # no half-written .w*.npz left behind
    record = json.loads((parallel / "collect.json").read_text())
    assert record["env_id"] == ENV_ID and record["env_kwargs"] == TOY
    assert record["workers"] == 2 and record["episodes"] == 4
    summary = json.loads((parallel / "summary.json").read_text())
    assert summary["episodes"] == 4 and summary["env_steps"] == 4 * STEPS
    assert summary["workers"] == 2
    with np.load(parallel / "w001-0000.npz") as shard:  # worker 1 plays episodes 1, 3, ...
        assert sorted(shard.files) == sorted(TRANSITION_KEYS)
        assert set(shard["episode"].tolist()) == {1}

    data = load_transitions([parallel])
    assert len(data["rewards"]) == 4 * STEPS
    assert data["obs"].shape == data["next_obs"].shape == (4 * STEPS, OBS_SIZE)
    assert data["obs"].dtype == np.float32 and data["terminated"].dtype == np.bool_
    assert ((0 <= data["actions"]) & (data["actions"] < N_ACTIONS)).all()
    data = by_episode_and_step(data)
    for episode in range(4):
        mine = {k: v[data["episode"] == episode] for k, v in data.items()}
        np.testing.assert_array_equal(mine["t"], np.arange(STEPS))
        assert mine["truncated"].tolist() == [False] * (STEPS - 1) + [True]
        assert not mine["terminated"].any()
        np.testing.assert_array_equal(mine["next_obs"][:-1], mine["obs"][1:])
        assert np.isfinite(mine["rewards"]).all()
    # the episode's scan is the one its seed draws
    from agents.envs import make_env

    env = make_env(ENV_ID, TOY)
    first, _ = env.reset(seed=episode_seed(0, 2))
    env.close()
    np.testing.assert_allclose(data["obs"][(data["episode"] == 2) & (data["t"] == 0)][0], first,
                               rtol=1e-5, atol=1e-6)
    # two collections: episode ids stay apart
    both = load_transitions([parallel, parallel])
    assert len(both["rewards"]) == 8 * STEPS and len(np.unique(both["episode"])) == 8


def test_collect_data_do_not_depend_on_the_worker_count(parallel: Path, tmp_path: Path):
    out = tmp_path / "serial"
    collect(CollectConfig(episodes=4, workers=1, env_kwargs=TOY), out, log=lambda line: None)
    assert sorted(p.name for p in out.glob("*.npz")) == ["w000-0000.npz"]
    serial = by_episode_and_step(load_transitions([out]))
    two = by_episode_and_step(load_transitions([parallel]))
    for key in TRANSITION_KEYS:
        np.testing.assert_array_equal(serial[key], two[key], err_msg=key)
    # another seed: other scans and actions
    other = tmp_path / "seed1"
    collect(CollectConfig(episodes=1, seed=1, env_kwargs=TOY), other, log=lambda line: None)
    assert not np.array_equal(load_transitions([other])["obs"][:1], serial["obs"][:1])


def test_spark_tasks_collect_the_same_transitions_as_processes(parallel: Path, tmp_path: Path):
    """`--spark`: one Spark task per worker (local[2] here), through the console script."""
    out = tmp_path / "spark"
    proc = console("agent", "collect", "--spark", "--workers", "2", "--episodes", "4",
                   "--shard-episodes", "1", "--env-kwargs", json.dumps(TOY), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["launcher"] == "spark" and summary["episodes"] == 4
    spark = by_episode_and_step(load_transitions([out]))
    two = by_episode_and_step(load_transitions([parallel]))
    for key in TRANSITION_KEYS:
        np.testing.assert_array_equal(spark[key], two[key], err_msg=key)
    bad = console("agent", "collect", "--master", "local[2]", "--out", str(tmp_path / "m"))
    assert bad.returncode == 2 and "--master needs --spark" in bad.stderr


def test_pretrained_policy_without_exploration_plays_the_agent(tmp_path: Path):
    out = tmp_path / "greedy"
    collect(CollectConfig(episodes=2, policy="pretrained", epsilon=0.0, env_kwargs=TOY), out,
            log=lambda line: None)
    data = load_transitions([out])
    agent = load_agent("pretrained")
    assert len(data["actions"]) == 2 * STEPS
    assert data["actions"].tolist() == [agent.act(o) for o in data["obs"]]


# ---- actors: errors ----------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    ({"policy": "pretrained"}, "never asks the policy"),
    ({"episodes": 1_000_001}, "--episodes must be <= 1000000"),
    ({"master": "local[2]"}, "--master needs --spark"),
])
def test_collect_refuses_options_that_would_mislabel_data(change, message, tmp_path: Path):
    with pytest.raises(ValueError, match=message):
        collect(CollectConfig(**{"env_kwargs": TOY, **change}), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_collect_refuses_a_used_folder(parallel: Path):
    before = {p.name: p.stat().st_mtime_ns for p in parallel.iterdir()}
    with pytest.raises(ValueError, match=r"already holds a collection \(collect.json\)"):
        collect(CollectConfig(episodes=1, env_kwargs=TOY), parallel)
    assert {p.name: p.stat().st_mtime_ns for p in parallel.iterdir()} == before


def test_cli_bad_epsilon_is_one_line(tmp_path: Path):
    proc = console("agent", "collect", "--out", str(tmp_path / "c"), "--epsilon", "2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("agent collect: error: ") and "--epsilon" in lines[0]
    assert not (tmp_path / "c").exists()


def test_worker_failing_in_an_episode_stops_the_collection_in_one_line(tmp_path: Path):
    """The env builds, then fails at reset: the caller gets the worker and the env's message,
    no worker is left running, and the console shows one line (no worker traceback)."""
    with pytest.raises(RuntimeError, match=r"collect: worker [01] failed: ValueError: backend "
                                           r"must be 'numpy' or 'cupy', got 'nonsense'"):
        collect(CollectConfig(episodes=4, workers=2, env_kwargs={**TOY, "backend": "nonsense"}),
                tmp_path / "a", log=lambda line: None)
    assert mp.active_children() == []
    proc = console("agent", "collect", "--out", str(tmp_path / "b"), "--episodes", "2",
                   "--workers", "2", "--env-kwargs", '{"backend": "nonsense"}')
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "worker" in lines[0] and "backend must be" in lines[0]


def test_worker_failing_to_build_its_env_names_the_env_message(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"worker 0 failed: .*reward must be one of"):
        collect(CollectConfig(episodes=1, env_kwargs={"reward": "nonsense"}), tmp_path / "c",
                log=lambda line: None)
    # the failed start stored no shard, so the same folder takes the corrected collection
    summary = collect(CollectConfig(episodes=1, env_kwargs=TOY), tmp_path / "c",
                      log=lambda line: None)
    assert summary["episodes"] == 1 and len(list((tmp_path / "c").glob("w*.npz"))) == 1


# ---- learner -----------------------------------------------------------------------------

def two_episodes() -> dict[str, np.ndarray]:
    """Episode 0: 3 steps ending at the budget; episode 1: 2 steps ending in divergence."""
    return {"obs": np.arange(5, dtype=np.float32)[:, None],
            "actions": np.array([0, 1, 2, 3, 4], np.int32),
            "rewards": np.array([1, 2, 4, 8, 16], np.float32),
            "next_obs": np.arange(10, 15, dtype=np.float32)[:, None],
            "terminated": np.array([0, 0, 0, 0, 1], bool),
            "truncated": np.array([0, 0, 1, 0, 0], bool),
            "episode": np.array([0, 0, 0, 1, 1], np.int32),
            "t": np.array([0, 1, 2, 0, 1], np.int32)}


@pytest.mark.parametrize("n,rewards,next_obs,terminal", [
    (1, [1, 2, 4, 8, 16], [10, 11, 12, 13, 14], [0, 0, 1, 0, 1]),
    (2, [1 + .5 * 2, 2 + .5 * 4, 4, 8 + .5 * 16, 16], [11, 12, 12, 14, 14], [0, 1, 1, 1, 1]),
    (3, [1 + .5 * 2 + .25 * 4, 2 + .5 * 4, 4, 8 + .5 * 16, 16], [12, 12, 12, 14, 14], [1] * 5),
    (7, [1 + .5 * 2 + .25 * 4, 2 + .5 * 4, 4, 8 + .5 * 16, 16], [12, 12, 12, 14, 14], [1] * 5),
])
def test_n_step_transitions(n, rewards, next_obs, terminal):
    from agents.offline import n_step_transitions

    data = two_episodes()
    got = n_step_transitions(data, n, gamma=0.5)
    np.testing.assert_allclose(got["rewards"], rewards)
    np.testing.assert_array_equal(got["next_obs"][:, 0], next_obs)
    np.testing.assert_array_equal(got["terminated"], terminal)
    np.testing.assert_array_equal(got["obs"], data["obs"])
    np.testing.assert_array_equal(got["actions"], data["actions"])


def write_bandit_collection(folder: Path) -> np.ndarray:
    """A collection as `agent collect` lays it out, of one-step episodes where action 4 earns
    1 and every other action 0; returns the observations."""
    rng = np.random.default_rng(7)
    states = rng.uniform(-1, 1, (8, OBS_SIZE)).astype(np.float32)
    obs = np.repeat(states, N_ACTIONS, axis=0)
    actions = np.tile(np.arange(N_ACTIONS, dtype=np.int32), len(states))
    size = len(obs)
    folder.mkdir()
    config = CollectConfig(episodes=size, env_kwargs={"generator": "toy", "backend": "numpy"})
    (folder / "collect.json").write_text(json.dumps({"env_id": ENV_ID,
                                                     **dataclasses.asdict(config)}))
    np.savez(folder / "w000-0000.npz", obs=obs, actions=actions,
             rewards=(actions == 4).astype(np.float32), next_obs=obs[::-1].copy(),
             terminated=np.zeros(size, bool), truncated=np.ones(size, bool),
             episode=np.arange(size, dtype=np.int32), t=np.zeros(size, np.int32))
    return states


def test_learn_writes_a_run_that_steering_plays(tmp_path: Path, capsys):
    from agents.config import DQNConfig, OfflineConfig
    from agents.offline import learn
    from sparkmpi_dl.cli import main

    states = write_bandit_collection(tmp_path / "bandit")
    off = OfflineConfig(data=(str(tmp_path / "bandit"),), updates=300, target_update_every=50,
                        log_every=100)
    cfg = DQNConfig(hidden=(16, 16), learning_rate=1e-2, batch_size=32, gradient_steps=50,
                    gamma=1.0)
    run = tmp_path / "run"
    lines: list[str] = []
    summary = learn(off, cfg, run, log=lines.append)
    assert {"config.json", "checkpoint.npz", "offline.json", "run.json", "tb"} <= \
        {p.name for p in run.iterdir()}
    assert summary["transitions"] == len(states) * N_ACTIONS == summary["episodes"]
    assert summary["updates"] == 300 and [c[0] for c in summary["curve"]] == [100, 200, 300]
    assert summary["behaviour_mean_return"] == pytest.approx(1 / N_ACTIONS)
    assert summary["greedy_q_at_start"] == pytest.approx(1.0, abs=0.2)
    assert json.loads((run / "offline.json").read_text())["transitions"] == summary["transitions"]
    assert sum(line.startswith("update ") for line in lines) == 3

    agent = load_agent(run)
    assert agent.trained["env_id"] == ENV_ID
    assert agent.trained["env_kwargs"] == {"generator": "toy"}  # the backend is not the agent's
    assert [agent.act(s) for s in states] == [4] * len(states)

    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="is not empty; learn into a new folder"):
        learn(off, cfg, run, log=lines.append)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before

    # the command line: a folder that is not a collection is one line, and no run is started
    (tmp_path / "empty").mkdir()
    code = main(["agent", "learn", "--out", str(tmp_path / "run2"), "--data",
                 str(tmp_path / "empty"), "--updates", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("agent learn: error: ") and "not a collection" in err
    assert str(tmp_path / "empty") in err and not (tmp_path / "run2").exists()
