"""The DQN training loop: act, store, learn, log, evaluate, checkpoint, resume.

Reproducibility rule: every random draw of the loop (exploration, minibatches, the seed of
each new episode) comes from one NumPy Generator whose state is in the checkpoint.
Periodic checkpoints are taken between episodes (the next episode's seed is not drawn yet),
so a resumed run continues bit-for-bit like the uninterrupted one. The last checkpoint of a
run that stops mid-episode drops that unfinished episode on resume.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import RunConfig
from agents.dqn import DQN, DQNConfig, linear_schedule
from agents.envs import make_env, n_actions, obs_dim
from agents.evaluate import EvalResult, evaluate
from agents.replay import ReplayBuffer

CHECKPOINT = "checkpoint.npz"
RUN_KIND = "dqn"
# RunConfig fields a resume may change: how long and how chatty, not what is learnt
RESUMABLE_CHANGES = ("total_steps", "log_every", "eval_every", "eval_episodes",
                     "final_eval_episodes", "checkpoint_every", "keep_checkpoints")


@dataclass
class Progress:
    """Counters and history a resume needs besides networks, optimizer and replay."""

    step: int = 0
    updates: int = 0
    train_seconds: float = 0.0
    episodes: list[list[float]] = field(default_factory=list)  # [step, return, length]
    evals: list[list[float]] = field(default_factory=list)  # [step, mean, std]
    mid_episode: bool = False


@dataclass
class TrainResult:
    run_dir: Path
    progress: Progress
    final_eval: EvalResult | None
    steps_per_second: float  # this call's env steps per wall-clock second of training
    steps_per_cpu_second: float


def _log(msg: str) -> None:
    print(msg, flush=True)


def save_run_config(run_dir: Path, run: RunConfig, cfg: DQNConfig) -> None:
    text = json.dumps({"run": dataclasses.asdict(run), "dqn": dataclasses.asdict(cfg)}, indent=2)
    (run_dir / "config.json").write_text(text + "\n")


def load_run_config(run_dir: Path) -> tuple[RunConfig, DQNConfig]:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"run dir {run_dir}: no config.json (not a run directory?)")
    data = json.loads(path.read_text())
    dqn = data["dqn"]
    dqn["hidden"] = tuple(dqn["hidden"])
    return RunConfig(**data["run"]), DQNConfig(**dqn)


class _Stopwatch:
    """Wall and CPU seconds of the loop; paused around evaluations and checkpoints. CPU time
    (all threads of this process) says what a step costs even on a crowded machine."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._since: tuple[float, float] | None = None

    def start(self) -> None:
        self._since = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        wall, cpu = self._since or (time.perf_counter(), time.process_time())
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._since = None

    def elapsed(self) -> float:
        running = time.perf_counter() - self._since[0] if self._since else 0.0
        return max(self.wall + running, 1e-9)


class _SingleEnv:
    """The training env in this process, seen as a vector of one (what ``Trainer.train``
    steps); left open: the Trainer owns it."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self, seeds: list[int | None], mask: np.ndarray) -> np.ndarray:
        obs, _ = self.env.reset(seed=seeds[0])
        return np.asarray(obs, np.float32)[None]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        obs, reward, terminated, truncated, _ = self.env.step(int(actions[0]))
        return (np.asarray(obs, np.float32)[None], np.array([reward]), np.array([terminated]),
                np.array([truncated]))

    def close(self) -> None:
        pass


class _VectorEnv:
    """``num_envs`` envs in worker processes (gymnasium ``AsyncVectorEnv``, no autoreset)."""

    def __init__(self, run: RunConfig) -> None:
        import gymnasium as gym

        self.venv = gym.vector.AsyncVectorEnv(
            [lambda: make_env(run.env_id, run.env_kwargs) for _ in range(run.num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.DISABLED)

    def reset(self, seeds: list[int | None], mask: np.ndarray) -> np.ndarray:
        obs, _ = self.venv.reset(seed=seeds, options={"reset_mask": mask})
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        obs, rewards, terminated, truncated, _ = self.venv.step(actions)
        return obs, rewards, terminated, truncated

    def close(self) -> None:
        self.venv.close()


class Trainer:
    """Holds one run's env, learner, replay and RNG; ``run`` trains up to ``total_steps``."""

    def __init__(self, run: RunConfig, cfg: DQNConfig, run_dir: Path,
                 log: Callable[[str], None] = _log, grad_reducer: Callable | None = None) -> None:
        run.check()
        cfg.check()
        self.run, self.cfg, self.log = run, cfg, log
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tf.keras.utils.set_random_seed(run.seed)  # network init
        tf.config.experimental.enable_op_determinism()  # resume must continue bit for bit
        self.env = make_env(run.env_id, run.env_kwargs)
        self.eval_env = make_env(run.env_id, run.env_kwargs)
        self.learner = DQN(obs_dim(self.env), n_actions(self.env), cfg, grad_reducer)
        self.replay = ReplayBuffer(cfg.buffer_size, (obs_dim(self.env),))
        self.rng = np.random.default_rng(run.seed)
        self.progress = Progress()
        self.writer = tf.summary.create_file_writer(str(self.run_dir / "tb"))

    # ---- checkpoints --------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        path = Path(path or self.run_dir / CHECKPOINT)
        meta = {"progress": dataclasses.asdict(self.progress),
                "rng": self.rng.bit_generator.state,
                "run": dataclasses.asdict(self.run), "dqn": dataclasses.asdict(self.cfg)}
        save_checkpoint(path, meta, {"learner": self.learner.state_dict(),
                                     "replay": self.replay.state_dict()})
        return path

    def restore(self, path: Path) -> None:
        meta, arrays = load_checkpoint(path)
        if meta["run"]["env_id"] != self.run.env_id:
            raise ValueError(f"checkpoint {path} is for env {meta['run']['env_id']!r}, "
                             f"not {self.run.env_id!r}")
        self.learner.load_state_dict(arrays["learner"])
        self.replay.load_state_dict(arrays["replay"])
        self.rng.bit_generator.state = meta["rng"]
        self.progress = Progress(**meta["progress"])
        if self.progress.mid_episode:
            self.log(f"resume: checkpoint {path} was taken mid-episode at step "
                     f"{self.progress.step}; that episode is dropped and a new one starts")
        self.progress.mid_episode = False

    # ---- the loop -----------------------------------------------------------------------
    def epsilon(self, step: int) -> float:
        duration = int(self.cfg.exploration_fraction * self.run.total_steps)
        return linear_schedule(step, self.cfg.eps_start, self.cfg.eps_end, duration)

    def learning_rate(self, step: int) -> float:
        lr = self.cfg.learning_rate
        return linear_schedule(step, lr, lr * self.cfg.lr_final_fraction, self.run.total_steps)

    def train(self) -> TrainResult:
        """Train until ``run.total_steps`` env steps, then evaluate and write the artefacts.

        One loop for one env and for ``num_envs`` envs in worker processes (gymnasium
        ``AsyncVectorEnv``, no autoreset: each new episode's seed still comes from the run's
        RNG). Transitions enter the replay one by one in env order, each one counting as an
        env step for learning, evaluation, logging and checkpoints, so the schedules do not
        depend on ``num_envs``. Acting for all envs uses the network of the start of the
        vector step. A checkpoint is taken when an episode ends; the other envs' unfinished
        episodes are dropped on resume (``mid_episode``)."""
        run, p = self.run, self.progress
        envs = _SingleEnv(self.env) if run.num_envs == 1 else _VectorEnv(run)
        n = run.num_envs
        next_ckpt = (p.step // run.checkpoint_every + 1) * run.checkpoint_every \
            if run.checkpoint_every else None
        obs = np.zeros((n, obs_dim(self.env)), np.float32)
        fresh = np.ones(n, bool)
        ep_return, ep_len = np.zeros(n), np.zeros(n, int)
        metrics: dict[str, float] = {}
        watch, step0 = _Stopwatch(), p.step
        watch.start()
        try:
            while p.step < run.total_steps:
                if fresh.any():  # new episodes; their seeds come from the run's RNG
                    seeds = [int(self.rng.integers(2**31 - 1)) if f else None for f in fresh]
                    obs[fresh] = envs.reset(seeds, fresh)[fresh]
                    ep_return[fresh], ep_len[fresh] = 0.0, 0
                    fresh[:] = False
                eps = self.epsilon(p.step)
                actions = np.array([self._act(o, eps) for o in obs])
                next_obs, rewards, terminated, truncated = envs.step(actions)
                for i in range(n):
                    if p.step >= run.total_steps:
                        break
                    # store `terminated` only: a truncated episode still bootstraps from next_obs
                    self.replay.add(obs[i], int(actions[i]), float(rewards[i]), next_obs[i],
                                    bool(terminated[i]))
                    ep_return[i] += float(rewards[i])
                    ep_len[i] += 1
                    p.step += 1
                    metrics = self._learn() or metrics
                    if terminated[i] or truncated[i]:
                        p.episodes.append([p.step, float(ep_return[i]), int(ep_len[i])])
                        self._scalars(p.step, {"charts/episode_return": float(ep_return[i]),
                                               "charts/episode_length": int(ep_len[i]),
                                               "charts/epsilon": eps})
                        fresh[i] = True
                        if next_ckpt is not None and p.step >= next_ckpt:
                            watch.stop()
                            p.mid_episode = not fresh.all()
                            self._checkpoint()
                            watch.start()
                            next_ckpt = (p.step // run.checkpoint_every + 1) * run.checkpoint_every
                    if run.eval_every and p.step % run.eval_every == 0:
                        watch.stop()
                        self._periodic_eval()
                        watch.start()
                    if p.step % run.log_every == 0:
                        self._progress_line(eps, metrics, (p.step - step0) / watch.elapsed())
                obs = np.asarray(next_obs, np.float32).copy()
        finally:
            envs.close()
        watch.stop()
        p.train_seconds += watch.wall
        p.mid_episode = not fresh.all()
        self.save()
        steps = p.step - step0
        return self._finish(steps / max(watch.wall, 1e-9), steps / max(watch.cpu, 1e-9))

    def _act(self, obs: np.ndarray, eps: float) -> int:
        """Epsilon-greedy (purely random before ``learning_starts``)."""
        if self.progress.step < self.cfg.learning_starts or self.rng.random() < eps:
            return int(self.rng.integers(self.learner.n_actions))
        return self.learner.greedy(obs)

    def _learn(self) -> dict[str, float] | None:
        """An update round every ``train_freq`` steps, a target update every
        ``target_update_interval`` steps (both counted in env steps, after ``learning_starts``)."""
        cfg, p = self.cfg, self.progress
        if p.step < cfg.learning_starts:
            return None
        metrics = None
        if p.step % cfg.train_freq == 0:
            self.learner.set_learning_rate(self.learning_rate(p.step))
            batch = self.replay.sample(self.rng, (cfg.gradient_steps, cfg.batch_size))
            metrics = self.learner.train(batch)
            p.updates += cfg.gradient_steps
            self._scalars(p.step, {f"losses/{k}": v for k, v in metrics.items()})
        if p.step % cfg.target_update_interval == 0:
            self.learner.update_target()
        return metrics

    def _checkpoint(self) -> None:
        path = self.save()
        if self.run.keep_checkpoints:
            self.save(self.run_dir / f"checkpoint-{self.progress.step}.npz")
        self.log(f"checkpoint: step {self.progress.step} -> {path}")

    def _periodic_eval(self) -> None:
        p = self.progress
        res = evaluate(self.learner.greedy, self.eval_env, self.run.eval_episodes,
                       seed=self.run.seed + 1_000_000)
        p.evals.append([p.step, res.mean, res.std])
        self._scalars(p.step, {"eval/mean_return": res.mean, "eval/std_return": res.std})

    def _progress_line(self, eps: float, metrics: dict[str, float], sps: float) -> None:
        p = self.progress
        recent = [e[1] for e in p.episodes[-20:]]
        mean = f"{np.mean(recent):8.1f}" if recent else "     n/a"
        last_eval = f"{p.evals[-1][1]:.1f}" if p.evals else "n/a"
        loss = f"{metrics['loss']:.4f}" if metrics else "n/a"
        self.log(f"step {p.step:>8}/{self.run.total_steps}  episodes {len(p.episodes):>5}  "
                 f"return(last 20) {mean}  eval {last_eval}  eps {eps:.3f}  loss {loss}  "
                 f"{sps:,.0f} steps/s")
        self._scalars(p.step, {"charts/steps_per_second": sps})

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def _finish(self, sps: float, cpu_sps: float) -> TrainResult:
        from agents.plot import plot_learning_curve

        p, run = self.progress, self.run
        final = evaluate(self.learner.greedy, self.eval_env, run.final_eval_episodes,
                         seed=run.seed + 2_000_000)
        self._scalars(p.step, {"eval/final_mean_return": final.mean})
        self.writer.flush()
        summary = {"env_id": run.env_id, "seed": run.seed, "env_steps": p.step,
                   "updates": p.updates, "train_seconds": p.train_seconds,
                   "env_steps_per_second": sps, "env_steps_per_cpu_second": cpu_sps,
                   "eval_episodes": run.final_eval_episodes,
                   "eval_mean_return": final.mean, "eval_std_return": final.std,
                   "eval_min_return": float(final.returns.min())}
        (self.run_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        with open(self.run_dir / "episodes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "return", "length"])
            w.writerows(p.episodes)
        plot_learning_curve(p.episodes, p.evals, self.run_dir / "learning_curve.png",
                            title=f"DQN on {run.env_id}, seed {run.seed}")
        self.log(f"done: {p.step} env steps in {p.train_seconds:.1f} s ({sps:,.0f} steps/s, "
                 f"{cpu_sps:,.0f} per CPU-second); "
                 f"final eval over {run.final_eval_episodes} episodes: "
                 f"{final.mean:.1f} +- {final.std:.1f} (min {final.returns.min():.0f})")
        return TrainResult(self.run_dir, p, final, sps, cpu_sps)


def run_record(run: RunConfig, cfg: DQNConfig) -> dict[str, Any]:
    """The config a run folder records (``run.json``): run and DQN fields, flat
    (``num_envs`` only when > 1, so runs recorded before it existed still resume)."""
    record = {**dataclasses.asdict(run), **dataclasses.asdict(cfg)}
    if run.num_envs == 1:
        del record["num_envs"]
    return record


def open_run_dir(run_dir: Path, run: RunConfig, cfg: DQNConfig, resume: bool,
                 kind: str = RUN_KIND) -> None:
    """The run-folder convention (sparkmpi_dl.runs): a new run only into an empty folder,
    a resume only of the same config; raises RunFolderError (a ValueError) otherwise."""
    from sparkmpi_dl.runs import open_run

    open_run(run_dir, kind, run_record(run, cfg), resume=resume,
             may_change=RESUMABLE_CHANGES)


def train(run: RunConfig, cfg: DQNConfig, run_dir: Path, resume_from: Path | None = None,
          log: Callable[[str], None] = _log) -> TrainResult:
    """Train a fresh run, or continue one from a checkpoint file.

    ``resume_from`` inside ``run_dir`` continues that run (its recorded config must match);
    elsewhere it seeds a new run in ``run_dir``, which must then be empty or absent.
    """
    run.check()
    cfg.check()
    same_folder = (resume_from is not None
                   and Path(resume_from).resolve().parent == Path(run_dir).resolve())
    open_run_dir(Path(run_dir), run, cfg, resume=same_folder)
    trainer = Trainer(run, cfg, run_dir, log)
    save_run_config(trainer.run_dir, run, cfg)
    if resume_from is not None:
        trainer.restore(Path(resume_from))
        log(f"resumed from {resume_from} at step {trainer.progress.step}")
    return trainer.train()
