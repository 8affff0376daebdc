"""Actors for offline (Ape-X style) training: play tuning episodes, store the transitions.

Acting is cheap to spread and learning is not: the episodes run in worker processes (each
its own env, on the GPU with ``backend="cupy"``), and ``agents.offline`` trains one Q network
on everything they stored. The actors need only the reconstruction stack and NumPy (the
behaviour policy is uniform random or a trained agent played epsilon-greedy through
``agents.steer``'s NumPy forward pass), so they run where TensorFlow is not installed.

Episode ``i`` of a collection with seed ``s`` draws its scan from env seed
``COLLECT_SEED_BASE + s * SEEDS_PER_COLLECTION + i`` and its exploration from
``default_rng((s, i))``: the data depend on (seed, episode) only, not on the worker count,
and never touch the scans ``agent compare`` holds out (seeds 100000+ and 200000+).

Output folder: ``collect.json`` (the config and env), one ``w<worker>-<k>.npz`` shard per
``shard_episodes`` episodes of a worker (a killed run keeps every finished shard), and
``summary.json`` (episodes, env steps, env steps/s) when all workers are done.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from agents.steer import DISCRETE_ENV, Agent, load_agent
from recon_env.observation import N_ACTIONS

ENV_ID = DISCRETE_ENV  # the discrete tuning env, the one steering plays
COLLECT_SEED_BASE = 10_000_000
SEEDS_PER_COLLECTION = 1_000_000
FAILED = ".failed"  # written by a failing Spark task: the others start no new episode
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "episode",
                   "t")


@dataclass
class CollectConfig:
    """What the actors play. Each field is a flag of `sparkmpi-dl agent collect`."""

    episodes: int = 240
    """episodes to play, over all workers"""
    workers: int = 1
    """actor processes, each with its own env"""
    seed: int = 0
    """collection seed: picks the scans and the exploration (see agents/collect.py)"""
    policy: str = "random"
    """behaviour policy: random, pretrained or an agent RUN_DIR (played epsilon-greedy)"""
    epsilon: float = 1.0
    """chance of a uniformly random action at each step (1: the policy is never asked)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON object of PtychoTuning-v0 options (reward, generator, backend, ...)"""
    shard_episodes: int = 20
    """episodes per stored file (a killed collection keeps its finished files)"""
    max_seconds: float = 0.0
    """start no episode after this many seconds (0: no limit); for a fixed machine lease"""
    spark: bool = False
    """run the workers as Spark tasks, one per worker (OUT on a file system every executor
    sees) instead of local processes"""
    master: str | None = None
    """with --spark: Spark master URL (default: spark-submit's, else local[WORKERS])"""

    def check(self) -> None:
        """Raise ValueError naming the first option outside its range."""
        for name in ("episodes", "workers", "shard_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"collect: --{name.replace('_', '-')} must be >= 1, "
                                 f"got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"collect: --epsilon must be in [0, 1], got {self.epsilon}")
        if self.max_seconds < 0:
            raise ValueError(f"collect: --max-seconds must be >= 0, got {self.max_seconds}")
        if not 0 <= self.seed < 1000:
            raise ValueError(f"collect: --seed must be in 0..999, got {self.seed}")
        if self.episodes > SEEDS_PER_COLLECTION:
            raise ValueError(f"collect: --episodes must be <= {SEEDS_PER_COLLECTION} (the next "
                             f"collection seed's scans start there), got {self.episodes}")
        if self.policy != "random" and self.epsilon >= 1.0:
            raise ValueError(f"collect: --policy {self.policy} with --epsilon 1 never asks the "
                             "policy (every action random); give --epsilon < 1")
        if self.master is not None and not self.spark:
            raise ValueError("collect: --master needs --spark")
        if self.policy != "random" and self.epsilon < 1.0:
            load_agent(self.policy)  # a bad RUN_DIR fails here, not in every worker


def episode_seed(seed: int, episode: int) -> int:
    """The env seed of episode ``episode`` of collection ``seed`` (see the module docstring)."""
    return COLLECT_SEED_BASE + seed * SEEDS_PER_COLLECTION + episode


def _policy(cfg: CollectConfig) -> Agent | None:
    """The behaviour policy's agent, None where every action is random."""
    if cfg.policy == "random" or cfg.epsilon >= 1.0:
        return None
    return load_agent(cfg.policy)


def play_episode(env: Any, cfg: CollectConfig, episode: int, agent: Agent | None = None
                 ) -> dict[str, Any]:
    """One episode's transitions (arrays keyed by TRANSITION_KEYS), return and length."""
    rng = np.random.default_rng((cfg.seed, episode))
    obs, _ = env.reset(seed=episode_seed(cfg.seed, episode))
    rows: dict[str, list[Any]] = {k: [] for k in TRANSITION_KEYS}
    done, t, total = False, 0, 0.0
    while not done:
        if agent is None or rng.random() < cfg.epsilon:
            action = int(rng.integers(N_ACTIONS))
        else:
            action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(TRANSITION_KEYS, (obs, action, reward, next_obs, terminated,
                                                truncated, episode, t)):
            rows[key].append(value)
        obs, done, t, total = next_obs, terminated or truncated, t + 1, total + float(reward)
    arrays = {k: np.asarray(v, np.float32 if k in ("obs", "next_obs", "rewards") else
                            np.bool_ if k in ("terminated", "truncated") else np.int32)
              for k, v in rows.items()}
    return {"arrays": arrays, "return": total, "steps": t}


def _write_shard(out: Path, worker: int, index: int, episodes: list[dict[str, Any]]) -> None:
    arrays = {k: np.concatenate([e["arrays"][k] for e in episodes]) for k in TRANSITION_KEYS}
    tmp = out / f".w{worker:03d}-{index:04d}.{os.getpid()}.npz"  # a retried task's own file
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.rename(out / f"w{worker:03d}-{index:04d}.npz")  # a reader never sees half a shard


def _play_share(cfg: CollectConfig, out: Path, worker: int, deadline: float
                ) -> Iterator[tuple[int, float]]:
    """Play episodes worker, worker + workers, ... and store them shard by shard, starting
    none after ``deadline`` (time.time(); 0: none); yield (steps, return) per episode."""
    from agents.envs import make_env

    env = make_env(ENV_ID, cfg.env_kwargs)
    try:
        agent = _policy(cfg)
        pending: list[dict[str, Any]] = []
        shard = 0
        for episode in range(worker, cfg.episodes, cfg.workers):
            if deadline and time.time() > deadline or (out / FAILED).exists():
                break
            result = play_episode(env, cfg, episode, agent)
            pending.append(result)
            yield result["steps"], result["return"]
            if len(pending) == cfg.shard_episodes:
                _write_shard(out, worker, shard, pending)
                pending, shard = [], shard + 1
        if pending:
            _write_shard(out, worker, shard, pending)
    finally:
        env.close()


def _worker(cfg_dict: dict[str, Any], out: str, worker: int, deadline: float, queue: Any) -> None:
    """A worker process: its share of the episodes, each reported on ``queue``."""
    try:
        for steps, ret in _play_share(CollectConfig(**cfg_dict), Path(out), worker, deadline):
            queue.put(("episode", worker, steps, ret))
        queue.put(("done", worker, 0, 0.0))
    except BaseException as err:  # the parent reports it in one line and stops the others
        queue.put(("error", worker, 0, f"{type(err).__name__}: {err}"))


def _spark_task(cfg_dict: dict[str, Any], out: str, deadline: float
                ) -> Callable[[int, Iterable[int]], Iterator[tuple[str, Any]]]:
    """The function a Spark task runs for worker ``index``: its share, then one row
    ("done", [(steps, return), ...]) or ("error", message) (one line for the driver)."""
    def task(index: int, _rows: Iterable[int]) -> Iterator[tuple[str, Any]]:
        try:
            cfg = CollectConfig(**cfg_dict)
            yield "done", list(_play_share(cfg, Path(out), index, deadline))
        except Exception as err:
            message = f"worker {index} failed: {type(err).__name__}: {err}"
            (Path(out) / FAILED).write_text(message + "\n")  # the other tasks stop early
            yield "error", message
    return task


@contextlib.contextmanager
def _one_thread_each() -> Iterator[None]:
    """Start workers with one BLAS/OpenMP thread each: N workers of a pool of threads per
    core oversubscribe the machine (12 workers on 16 cores ran at load 70 and gave fewer env
    steps/s together than one worker alone)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: "1" for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def collect(cfg: CollectConfig, out: Path, log: Callable[[str], None] = print
            ) -> dict[str, Any]:
    """Play ``cfg.episodes`` episodes in ``cfg.workers`` worker processes, or Spark tasks
    with ``cfg.spark``, into ``out`` (created; must hold no earlier collection's data; one
    that failed before its first shard may be reused). Returns the summary also written to
    summary.json."""
    cfg.check()
    out = Path(out)
    if (out / "collect.json").exists() and any(out.glob("w*.npz")):
        raise ValueError(f"collect: {out} already holds a collection (collect.json); "
                         "use a new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "collect.json").write_text(json.dumps({"env_id": ENV_ID, **asdict(cfg)}, indent=2)
                                      + "\n")
    started = time.perf_counter()
    deadline = time.time() + cfg.max_seconds if cfg.max_seconds else 0.0
    workers = min(cfg.workers, cfg.episodes)
    run = _run_spark if cfg.spark else _run_processes
    results = run(cfg, out, workers, deadline, started, log)
    seconds = time.perf_counter() - started
    steps = sum(n for n, _ in results)
    summary = {"episodes": len(results), "env_steps": steps, "seconds": seconds,
               "env_steps_per_second": steps / seconds, "workers": workers,
               "launcher": "spark" if cfg.spark else "processes",
               "mean_return": float(np.mean([r for _, r in results])) if results
               else float("nan")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _run_processes(cfg: CollectConfig, out: Path, workers: int, deadline: float,
                   started: float, log: Callable[[str], None]) -> list[tuple[int, float]]:
    """Spawned worker processes; a progress line every ~5 % of the episodes."""
    ctx = mp.get_context("spawn")  # CUDA contexts do not survive fork
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(asdict(cfg), str(out), w, deadline, queue),
                         daemon=True) for w in range(workers)]
    with _one_thread_each():
        for p in procs:
            p.start()
    results: list[tuple[int, float]] = []
    running = len(procs)
    every = min(max(1, cfg.episodes // 20), 50)
    try:
        while running:
            try:
                kind, worker, n, value = queue.get(timeout=1.0)
            except queue_module.Empty:
                kind = ""
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead and kind != "error":  # killed (OOM, signal) without a word
                raise RuntimeError(f"collect: worker {dead[0]} died with exit code "
                                   f"{procs[dead[0]].exitcode}")
            if not kind:
                continue
            if kind == "error":
                raise RuntimeError(f"collect: worker {worker} failed: {value}")
            if kind == "done":
                running -= 1
                continue
            results.append((int(n), float(value)))
            if len(results) % every == 0 or len(results) == cfg.episodes:
                steps = sum(r[0] for r in results)
                log(f"collect: {len(results)}/{cfg.episodes} episodes, {steps} env steps, "
                    f"{steps / (time.perf_counter() - started):.1f} env steps/s, mean return "
                    f"{np.mean([r[1] for r in results]):.3f}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)
    return results


def _run_spark(cfg: CollectConfig, out: Path, workers: int, deadline: float,
               started: float, log: Callable[[str], None]) -> list[tuple[int, float]]:
    """One Spark task per worker (``out`` must be a folder every executor sees); a progress
    line of the shards stored every 10 s while the job runs."""
    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(master=cfg.master, default_master=f"local[{workers}]",
                       app_name="sparkmpi-dl agent collect",
                       conf={f"spark.executorEnv.{k}": "1" for k in THREAD_VARIABLES})
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(10.0):
            shards = len(list(out.glob("w*.npz")))
            log(f"collect: {shards} shards stored (<= {shards * cfg.shard_episodes} episodes) "
                f"after {time.perf_counter() - started:.0f} s")

    threading.Thread(target=watch, daemon=True).start()
    try:
        rows = (sc.parallelize(range(workers), workers)
                .mapPartitionsWithIndex(_spark_task(asdict(cfg), str(out), deadline))
                .collect())
    except Exception as err:  # Py4J's page, reduced to its first line
        from sparkmpi_dl.launch.spark_setup import first_line

        raise RuntimeError(f"collect: the Spark job failed: {first_line(err)}") from None
    finally:
        stop.set()
    errors = [value for kind, value in rows if kind == "error"]
    if errors:
        raise RuntimeError(f"collect: {errors[0]}")
    return [tuple(r) for kind, value in rows for r in value]


def load_transitions(folders: list[Path]) -> dict[str, np.ndarray]:
    """All shards of one or more collections, concatenated (episode ids made unique per
    folder by an offset); ValueError naming a folder with no collection or no shards."""
    parts: list[dict[str, np.ndarray]] = []
    offset = 0
    for folder in folders:
        folder = Path(folder)
        if not (folder / "collect.json").is_file():
            raise ValueError(f"{folder}: not a collection (no collect.json from "
                             "`sparkmpi-dl agent collect`)")
        shards = sorted(folder.glob("w*.npz"))
        if not shards:
            raise ValueError(f"{folder}: the collection holds no finished shard yet")
        for shard in shards:
            with np.load(shard) as z:
                part = {k: z[k] for k in TRANSITION_KEYS}
            if len(part["t"]) and not (part["terminated"][-1] or part["truncated"][-1]):
                raise ValueError(f"{shard}: its last transition ends no episode (a shard "
                                 "holds whole episodes)")
            part["episode"] = part["episode"] + offset
            parts.append(part)
        offset += SEEDS_PER_COLLECTION
    return {k: np.concatenate([p[k] for p in parts]) for k in TRANSITION_KEYS}
