"""``sparkmpi-dl agent train|eval``: DQN training and evaluation from the command line.

Every ``DQNConfig`` field is a flag (``--learning-rate``, ``--gradient-steps``, ...); a preset
per environment ID sets the defaults first (see ``PRESETS``). TensorFlow is imported only when
a command runs, so ``sparkmpi-dl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from agents.collect import ENV_ID, CollectConfig
from agents.config import (UNUSED_HYPERPARAMETERS, CompareConfig, DQNConfig, OfflineConfig,
                           RunConfig)
from sparkmpi_dl.config import Flag, add_dataclass_flags, from_args
from sparkmpi_dl.flags import add_num_proc, add_out

# Per-environment hyperparameter defaults (flags given on the command line win).
PRESETS: dict[str, dict[str, Any]] = {
    # DQNConfig's defaults are RL-Zoo's CartPole settings (tuned for plain DQN); with Double
    # DQN a lower learning rate kept the final policy stable (BENCHMARKS.md, DQN agent section).
    "CartPole-v1": {"learning_rate": 1e-3},
    "recon_env/PtychoTuning-v0": {  # 12 steps per episode (60 iterations, 5 per step)
        "hidden": (64, 64), "learning_rate": 1e-3, "gamma": 0.98, "batch_size": 64,
        "buffer_size": 20_000, "learning_starts": 240, "train_freq": 12,
        "gradient_steps": 12, "target_update_interval": 120, "exploration_fraction": 0.4,
        "eps_end": 0.05,
    },
}


# agent learn: the tuning preset with the offline settings on top (see agents/offline.py):
# larger minibatches and rounds (no env steps to interleave), gamma 1 (the return over the
# fixed budget is exactly the decades of error removed).
OFFLINE_PRESET: dict[str, Any] = {"hidden": (128, 128), "batch_size": 256, "gradient_steps": 250,
                                  "gamma": 1.0, "learning_rate": 5e-4, "lr_final_fraction": 0.1}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden wants comma-separated widths like 256,256, "
                                         f"got {text!r}") from None
    return widths


def _parse_json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--env-kwargs is not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--env-kwargs must be a JSON object, got {text!r}")
    return value


# Where agent train's flags differ from the RunConfig/DQNConfig fields they set.
RUN_FLAGS = {"env_id": Flag(names=("--env",)), "total_steps": Flag(names=("--steps",)),
             "env_kwargs": Flag(type=_parse_json_dict, metavar="JSON")}
HYPER_FLAGS = {"hidden": Flag(type=_parse_hidden, metavar="WIDTHS"),
               "double": Flag(type=_parse_bool, metavar="BOOL")}


def _objects(text: str) -> tuple[str, ...] | None:
    """'rings,cells' -> ('rings', 'cells'); '' -> None (the generator's objects)."""
    return tuple(o for o in text.split(",") if o) or None


# agent compare: the generator (preset or JSON) and best fixed setting are parsed by the
# command, so a bad one is its one error line like the other compare errors.
COMPARE_FLAGS = {
    "generator": Flag(type=str, metavar="PRESET|JSON"),
    "heldout_objects": Flag(type=_objects, metavar="OBJ,OBJ,.."),
    "best_fixed": Flag(type=str, metavar="ALG:BETA"),
    "baselines": Flag(names=("--agents-only",), action="store_false",
                      help="only the agents and (a) best fixed (skip ptypy's defaults, the hand "
                           "schedule and BO): a cheap agent-vs-agent check on the same scans"),
}


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    agent = commands.add_parser("agent", help="DQN agent: train and evaluate on a Gymnasium env")
    sub = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    tr = sub.add_parser("train", help="train DQN (checkpoints, TensorBoard, learning-curve PNG)",
                        description="Train Double DQN on a Gymnasium env with discrete actions. "
                        "Writes RUN_DIR/{config.json,checkpoint.npz,tb/,episodes.csv,"
                        "learning_curve.png,eval.json}.")
    add_out(tr, dest="run_dir", hidden=("--run-dir",), type=Path, required=True,
            metavar="RUN_DIR", help="the run folder (checkpoints, TensorBoard, curves)")
    # unset flags parse to None: --resume sees what was given, from_args fills the defaults
    add_dataclass_flags(tr, RunConfig, flags=RUN_FLAGS, exclude=("keep_checkpoints",),
                        unset_is_none=True)
    tr.add_argument("--resume", action="store_true",
                    help="continue RUN_DIR from its checkpoint.npz (same config; --steps may "
                         "raise the total)")
    tr.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads")
    add_num_proc(tr, dest="ranks", type=int, default=1,
                 help="data-parallel Horovod ranks, each with its own env and replay "
                      "(gradients averaged; --steps is per rank; output in RUN_DIR/rank<r>)")
    tr.add_argument("--launcher", choices=("local", "spark"), default="local",
                    help="with -n > 1: local processes or Spark barrier tasks")
    tr.add_argument("--master", default=None,
                    help="with --launcher spark: Spark master URL (default: spark-submit's, "
                         "else local[N])")
    tr.add_argument("--controller", choices=("mpi", "gloo"), default="mpi",
                    help="with -n > 1: Horovod controller")
    hyper = tr.add_argument_group(
        "hyperparameters", "a flag given wins over the env's preset (PRESETS in agents/cli.py: "
        + ", ".join(PRESETS) + "), which wins over the defaults shown")
    add_dataclass_flags(hyper, DQNConfig, flags=HYPER_FLAGS, unset_is_none=True)
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a trained run's greedy policy")
    ev.add_argument("--run-dir", type=Path, required=True, help="a trained run folder")
    ev.add_argument("--checkpoint", type=Path, help="default RUN_DIR/checkpoint.npz")
    ev.add_argument("--episodes", type=int, default=100, help="greedy episodes to average")
    ev.add_argument("--seed", type=int, default=12345, help="episode i uses seed SEED+i")
    ev.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads")
    ev.set_defaults(func=_eval)

    cmp_ = sub.add_parser("compare", help="trained agents vs best fixed, ptypy defaults, a hand "
                          "schedule and per-scan Bayesian optimisation on held-out scans",
                          description="Scores every method by the true phase RMS after "
                          "registration on held-out simulated scans (same budget); writes "
                          "OUT/comparison.{json,md,png}. See agents/compare.py.")
    cmp_.add_argument("--agent", dest="agents", action="append", default=[],
                      metavar="RUN_DIR|pretrained", help="an agent to compare (repeat for "
                      "several: seeds); 'pretrained' is the shipped one")
    cmp_.add_argument("--run-dir", dest="agents", action="append", help=argparse.SUPPRESS)
    cmp_.add_argument("--out", type=Path, default=Path("runs/agent-compare"),
                      help="output folder (default runs/agent-compare)")
    add_dataclass_flags(cmp_, CompareConfig, flags=COMPARE_FLAGS,
                        exclude=("betas", "engine", "test_seed", "train_seed", "curve_every"))
    cmp_.add_argument("--reach", action="store_true",
                      help="only measure how many iterations each agent needs to reach the best "
                           "fixed setting's final true error on each held-out scan (issue 13 "
                           "target: <= 70 %% of the budget); writes OUT/reach.{json,md,png}")
    cmp_.add_argument("--merge", nargs="+", type=Path, metavar="COMPARE_DIR",
                      help="run nothing: join earlier comparisons (scan ranges run apart, or "
                           "more agents on the same scans) into OUT/comparison.{json,md,png}")
    cmp_.set_defaults(func=_compare)

    col = sub.add_parser("collect", help="actors: play tuning episodes in worker processes and "
                         "store their transitions for `agent learn` (NumPy only: runs on a GPU "
                         "machine without TensorFlow)",
                         description="Ape-X style actors: each worker plays its own "
                         "recon_env/PtychoTuning-v0 (random or an agent epsilon-greedy) and writes "
                         "OUT/w<worker>-<k>.npz shards, OUT/collect.json, OUT/summary.json. "
                         "See agents/collect.py.")
    add_out(col, type=Path, required=True, help="the collection folder (new)")
    add_dataclass_flags(col, CollectConfig, flags={
        "env_kwargs": Flag(type=_parse_json_dict, metavar="JSON"),
        "policy": Flag(metavar="random|pretrained|RUN_DIR"),
        "spark": Flag(action="store_true"), "master": Flag(metavar="URL")})
    col.set_defaults(func=_collect)

    le = sub.add_parser("learn", help="learner: Double DQN on the transitions of `agent collect` "
                        "(writes a run folder that compare, recon --agent and stream play)",
                        description="Offline Double DQN on stored transitions; writes "
                        "RUN_DIR/{config.json,checkpoint.npz,offline.json,tb/}. See "
                        "agents/offline.py.")
    add_out(le, dest="run_dir", hidden=("--run-dir",), type=Path, required=True,
            metavar="RUN_DIR", help="the run folder (new)")
    add_dataclass_flags(le, OfflineConfig, flags={"data": Flag(metavar="COLLECTION_DIR")})
    le.add_argument("--threads", type=int, default=2, help="TensorFlow CPU threads")
    hyper = le.add_argument_group(
        "hyperparameters", "defaults: the tuning preset with OFFLINE_PRESET on top "
        "(agents/cli.py); the env-step schedules "
        "(" + ", ".join(UNUSED_HYPERPARAMETERS) + ") are not used offline")
    offline_defaults = {k: v for k, v in {**PRESETS[ENV_ID], **OFFLINE_PRESET}.items()
                        if k not in UNUSED_HYPERPARAMETERS}
    add_dataclass_flags(hyper, DQNConfig, flags=HYPER_FLAGS, unset_is_none=True,
                        exclude=UNUSED_HYPERPARAMETERS, defaults=offline_defaults)
    le.set_defaults(func=_learn)

    bc = bench.add_parser("agent-collect", help="env steps/s of the actors: 1 process vs N "
                          "processes vs N Spark tasks, side by side (slope over E and 2E "
                          "episodes)")
    bc.add_argument("--workers", type=int, default=2, help="N, the workers of the parallel runs")
    bc.add_argument("--episodes", type=int, default=8, help="E, episodes of the shorter run")
    bc.add_argument("--env-kwargs", type=_parse_json_dict, metavar="JSON",
                    default={"generator": "toy", "reward": "true_error"},
                    help="PtychoTuning-v0 options (default: toy scans, truth reward)")
    bc.add_argument("--out", type=Path, default=Path("runs/bench-agent-collect"),
                    help="output folder (the collections and bench.json)")
    bc.set_defaults(func=_bench_collect)

    cp = bench.add_parser("agent-cartpole", help="DQN on CartPole-v1, several seeds, one at a "
                          "time: final 100-episode return and env steps/s")
    cp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run each")
    cp.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    cp.add_argument("--out", type=Path, default=Path("runs/bench-agent-cartpole"),
                    help="output folder (one run folder per seed)")
    cp.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads")
    cp.set_defaults(func=_bench_cartpole)


def _set_threads(n: int) -> None:
    if n <= 0:
        raise SystemExit(f"agent: error: --threads must be > 0, got {n}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sparkmpi_dl.tf_threads import limit_tf_threads

    limit_tf_threads(n, n)  # keeps TF's pools if TF already runs in this process (tests)


def hyperparameters(env_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Preset for ``env_id`` with the non-None ``overrides`` on top."""
    values = dict(PRESETS.get(env_id, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def _train(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from agents.train import CHECKPOINT, load_run_config, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DQNConfig)}
    try:
        if args.resume and args.ranks != 1:
            raise ValueError("--resume with --ranks > 1 is not supported: ranks checkpoint at "
                             "their own episode ends, which would break the lock step")
        if args.resume:
            ckpt = args.run_dir / CHECKPOINT
            if not ckpt.is_file():
                raise ValueError(f"--resume: {ckpt} does not exist")
            run, cfg = load_run_config(args.run_dir)
            if any(v is not None for v in given.values()) or args.env_id not in (None, run.env_id):
                raise ValueError("--resume continues the saved config; only --steps may change")
            if args.total_steps is not None:
                run.total_steps = args.total_steps
            train(run, cfg, args.run_dir, resume_from=ckpt)
            return 0
        if not args.env_id:
            raise ValueError("agent train: --env is required (or --resume)")
        cfg = DQNConfig(**hyperparameters(args.env_id, given))
        run = from_args(RunConfig, args)
        if args.ranks != 1:
            return _train_distributed(args, run, cfg)
        train(run, cfg, args.run_dir)
    except ValueError as err:
        print(f"agent train: error: {err}", file=sys.stderr)
        return 2
    return 0


def _train_distributed(args: argparse.Namespace, run, cfg) -> int:
    from agents.distributed import train_distributed

    cfg.check()
    run.check()
    results = train_distributed(run, cfg, args.run_dir, args.ranks,
                                local=args.launcher == "local", controller=args.controller,
                                master=args.master)
    for r in results:
        print(f"rank {r['rank']}/{r['size']}: {r['steps']} env steps, "
              f"{r['env_steps_per_second']:,.0f} steps/s, final eval {r['final_eval_mean']:.1f}, "
              f"weights checksum {r['weights_checksum']:.6f}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from agents.envs import make_env
    from agents.evaluate import evaluate

    try:
        run, policy = _load_policy(args.run_dir, args.checkpoint)
        res = evaluate(policy, make_env(run.env_id, run.env_kwargs), args.episodes, seed=args.seed)
    except ValueError as err:
        print(f"agent eval: error: {err}", file=sys.stderr)
        return 2
    print(f"{run.env_id}: {args.episodes} greedy episodes, return {res.mean:.2f} +- "
          f"{res.std:.2f} (min {res.returns.min():.1f}, max {res.returns.max():.1f})")
    return 0


def _load_policy(run_dir: Path, checkpoint: Path | None = None):
    """(run config, greedy policy) of a trained run."""
    from agents.checkpoint import load_checkpoint
    from agents.dqn import DQN
    from agents.envs import make_env, n_actions, obs_dim
    from agents.train import CHECKPOINT, load_run_config

    run, cfg = load_run_config(run_dir)
    _, arrays = load_checkpoint(checkpoint or run_dir / CHECKPOINT)
    env = make_env(run.env_id, run.env_kwargs)
    learner = DQN(obs_dim(env), n_actions(env), cfg)
    learner.load_state_dict(arrays["learner"])
    return run, learner.greedy


def _compare(args: argparse.Namespace) -> int:
    from agents.compare import compare, parse_best_fixed, reach
    from agents.steer import load_agent

    try:
        if args.merge:
            from agents.compare import merge

            merge(args.merge, args.out)
            print(f"agent compare: wrote {args.out}/comparison.json, comparison.md, "
                  "comparison.png")
            return 0
        if not args.agents:
            raise ValueError("give at least one --agent RUN_DIR (or --agent pretrained)")
        agents = {}
        for spec in args.agents:
            name = "pretrained" if spec == "pretrained" else Path(spec).name
            agents[name if name not in agents else spec] = load_agent(spec)
        generator = args.generator
        if generator.lstrip().startswith("{"):
            generator = _parse_json_dict(generator)
        config = from_args(CompareConfig, args, generator=generator, best_fixed=(
            parse_best_fixed(args.best_fixed) if args.best_fixed else None))
        (reach if args.reach else compare)(agents, config, args.out)
    except (ValueError, argparse.ArgumentTypeError) as err:
        print(f"agent compare: error: {err}", file=sys.stderr)
        return 2
    stem = "reach" if args.reach else "comparison"
    print(f"agent compare: wrote {args.out}/{stem}.json, {stem}.md, {stem}.png")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from agents.collect import collect

    try:
        summary = collect(from_args(CollectConfig, args), args.out)
    except (ValueError, RuntimeError) as err:
        print(f"agent collect: error: {err}", file=sys.stderr)
        return 2
    print(f"agent collect: {summary['episodes']} episodes, {summary['env_steps']} env steps in "
          f"{summary['seconds']:.1f} s ({summary['env_steps_per_second']:.1f} env steps/s, "
          f"{summary['workers']} workers) -> {args.out}")
    return 0


def _learn(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from agents.offline import learn

    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(DQNConfig)}
    try:
        cfg = DQNConfig(**{**hyperparameters(ENV_ID, {}), **OFFLINE_PRESET,
                           **{k: v for k, v in given.items() if v is not None}})
        learn(from_args(OfflineConfig, args), cfg, args.run_dir)
    except ValueError as err:
        print(f"agent learn: error: {err}", file=sys.stderr)
        return 2
    return 0


def _bench_collect(args: argparse.Namespace) -> int:
    from agents.bench_collect import bench_collect, markdown

    try:
        rows = bench_collect(args.workers, args.episodes, args.env_kwargs, args.out)
    except (ValueError, RuntimeError) as err:
        print(f"bench agent-collect: error: {err}", file=sys.stderr)
        return 2
    print(markdown(rows))
    return 0


def _bench_cartpole(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from agents.train import train

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        try:
            res = train(RunConfig("CartPole-v1", total_steps=args.steps, seed=seed),
                        DQNConfig(**PRESETS["CartPole-v1"]), args.out / f"seed{seed}")
        except ValueError as err:  # e.g. a used run folder (sparkmpi_dl.runs)
            print(f"bench agent-cartpole: error: {err}", file=sys.stderr)
            return 2
        final = res.final_eval
        assert final is not None  # a one-process run always ends with its final evaluation
        rows.append((seed, final.mean, final.std, res.steps_per_second,
                     res.steps_per_cpu_second))
    print("| seed | mean return (100 eval episodes) | env steps/s (wall) | env steps per "
          "CPU-second |\n|---|---|---|---|")
    for seed, mean, std, sps, cpu_sps in rows:
        print(f"| {seed} | {mean:.1f} +- {std:.1f} | {sps:,.0f} | {cpu_sps:,.0f} |")
    passed = sum(row[1] >= 475 for row in rows)
    print(f"{passed}/{len(rows)} seeds reach >= 475")
    return 0
