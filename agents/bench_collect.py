"""`sparkmpi-dl bench agent-collect`: env steps/s of the actors, side by side in one run.

Three launchers play the same episodes: one worker process, N worker processes, N Spark
tasks. Each is timed at E and 2E episodes and its rate is the slope, (steps(2E) - steps(E))
/ (seconds(2E) - seconds(E)), so process spawning, imports and env builds (the same in both
runs) drop out. Spark gets one untimed warm-up collection first: the JVM and the Python
workers start once per session, not per collection.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from agents.collect import CollectConfig, collect


def _timed(cfg: CollectConfig, out: Path) -> tuple[int, float]:
    if out.exists():
        shutil.rmtree(out)
    summary = collect(cfg, out, log=lambda line: None)
    return int(summary["env_steps"]), float(summary["seconds"])


def bench_collect(workers: int, episodes: int, env_kwargs: dict[str, Any], out: Path,
                  log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows of (launcher, workers, env steps/s, ratio to one process); also OUT/bench.json."""
    if workers < 2 or episodes < workers:
        raise ValueError(f"bench agent-collect: --workers must be >= 2 and --episodes >= "
                         f"--workers, got {workers} and {episodes}")
    base = CollectConfig(episodes=episodes, env_kwargs=env_kwargs, shard_episodes=episodes)
    launchers = [("1 process", dataclasses.replace(base, workers=1)),
                 (f"{workers} processes", dataclasses.replace(base, workers=workers)),
                 (f"{workers} Spark tasks", dataclasses.replace(base, workers=workers,
                                                                spark=True))]
    rows: list[dict[str, Any]] = []
    for name, cfg in launchers:
        folder = out / name.replace(" ", "_")
        if cfg.spark:  # start the JVM and the Python workers outside the timing
            _timed(dataclasses.replace(cfg, episodes=workers), folder / "warmup")
        steps1, seconds1 = _timed(cfg, folder / "E")
        steps2, seconds2 = _timed(dataclasses.replace(cfg, episodes=2 * episodes), folder / "2E")
        rate = (steps2 - steps1) / max(seconds2 - seconds1, 1e-9)
        rows.append({"launcher": name, "workers": cfg.workers, "env_steps_per_second": rate,
                     "seconds_E": seconds1, "seconds_2E": seconds2})
        log(f"bench agent-collect: {name}: {rate:.1f} env steps/s "
            f"({episodes} episodes in {seconds1:.1f} s, {2 * episodes} in {seconds2:.1f} s)")
    for row in rows:
        row["vs_one_process"] = row["env_steps_per_second"] / rows[0]["env_steps_per_second"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"env_kwargs": env_kwargs, "episodes": episodes,
                                                "rows": rows}, indent=2) + "\n")
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| launcher | env steps/s (slope over E and 2E episodes) | vs 1 process |",
             "|---|---|---|"]
    lines += [f"| {r['launcher']} | {r['env_steps_per_second']:.1f} | "
              f"{r['vs_one_process']:.2f}x |" for r in rows]
    return "\n".join(lines)
