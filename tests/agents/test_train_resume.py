"""Training loop: checkpoint + resume continues bit for bit; truncation is not termination."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.checkpoint import load_checkpoint
from agents.dqn import DQNConfig
from agents.train import RunConfig, Trainer, train
from sparkmpi_dl.runs import RunFolderError

QUIET = dict(log=lambda msg: None)
SMALL = DQNConfig(hidden=(32,), learning_starts=200, train_freq=50, gradient_steps=10,
                  buffer_size=5000, target_update_interval=100)


def small_run(**kw) -> RunConfig:
    base = dict(env_id="CartPole-v1", total_steps=1500, seed=3, eval_every=500, eval_episodes=2,
                final_eval_episodes=2, checkpoint_every=600, keep_checkpoints=True,
                log_every=10**9)
    base.update(kw)
    return RunConfig(**base)


def test_resume_from_checkpoint_continues_identically(tmp_path: Path):
    full = train(small_run(), SMALL, tmp_path / "a", **QUIET)
    mids = sorted((tmp_path / "a").glob("checkpoint-*.npz"))
    assert mids, "a periodic checkpoint should have been kept"
    mid_meta, _ = load_checkpoint(mids[0])
    assert 600 <= mid_meta["progress"]["step"] < 1500
    resumed = train(small_run(), SMALL, tmp_path / "b", resume_from=mids[0], **QUIET)
    with pytest.raises(RunFolderError, match=r"differs in \['gamma'\]"):  # issue 9
        train(small_run(), replace(SMALL, gamma=0.5), tmp_path / "a",
              resume_from=tmp_path / "a" / "checkpoint.npz", **QUIET)
    with pytest.raises(RunFolderError, match="already holds a run"):  # a new run, a used folder
        train(small_run(), SMALL, tmp_path / "a", **QUIET)

    meta_a, arrays_a = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    meta_b, arrays_b = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    for group in ("learner", "replay"):
        assert arrays_a[group].keys() == arrays_b[group].keys()
        for name in arrays_a[group]:
            np.testing.assert_array_equal(arrays_a[group][name], arrays_b[group][name],
                                          err_msg=f"{group}/{name}")
    assert meta_a["rng"] == meta_b["rng"]
    for key in ("step", "updates", "episodes", "evals"):
        assert meta_a["progress"][key] == meta_b["progress"][key], key
    assert full.final_eval.returns.tolist() == resumed.final_eval.returns.tolist()
    assert (tmp_path / "b" / "learning_curve.png").stat().st_size > 1000
    assert list((tmp_path / "b" / "tb").iterdir()), "TensorBoard events written"


def test_truncated_transitions_are_stored_as_not_terminated(tmp_path: Path):
    def replay_after(max_episode_steps: int) -> tuple[np.ndarray, list]:
        run = small_run(total_steps=300, env_kwargs={"max_episode_steps": max_episode_steps},
                        eval_every=0, checkpoint_every=0, final_eval_episodes=1)
        trainer = Trainer(run, DQNConfig(hidden=(8,), learning_starts=10_000), tmp_path / str(max_episode_steps),
                          **QUIET)
        trainer.train()
        return trainer.replay.terminated[: trainer.replay.size], trainer.progress.episodes

    flags, episodes = replay_after(5)  # every episode is cut by the time limit
    assert len(episodes) == 60 and flags.sum() == 0
    flags, episodes = replay_after(500)  # a random policy drops the pole: real terminations
    assert flags.sum() == len(episodes) > 5
