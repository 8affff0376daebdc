"""Per-scan parameters: deterministic in (seed, index), varied, and checked."""
import subprocess
import sys

import pytest

from recon_datasets.config import CHUNK, BuildConfig, beta_schedule, draw_scan


def test_draw_is_pure_in_seed_and_index():
    config = BuildConfig(scans=40, seed=3)
    assert draw_scan(config, 5) == draw_scan(BuildConfig(scans=999, seed=3), 5)
    assert draw_scan(config, 5) != draw_scan(config, 6)
    assert draw_scan(config, 5) != draw_scan(BuildConfig(scans=40, seed=4), 5)


def test_draws_vary_algorithm_schedule_and_iterations():
    config = BuildConfig(scans=60, iterations=(5, 60))
    recons = [draw_scan(config, i)["reconstruction"] for i in range(60)]
    assert {r["algorithm"] for r in recons} == {"dm", "raar"}
    assert {r["schedule"] for r in recons} == {"constant", "linear", "step"}
    iterations = {r["iterations"] for r in recons}
    assert len(iterations) > 5 and min(iterations) >= 5 and max(iterations) <= 60
    assert all(i % CHUNK == 0 for i in iterations)


def test_beta_schedules():
    base = {"iterations": 20, "beta_start": 0.5, "beta_end": 0.9}
    assert beta_schedule({**base, "schedule": "constant"}) == [0.5] * 4
    assert beta_schedule({**base, "schedule": "step"}) == [0.5, 0.5, 0.9, 0.9]
    linear = beta_schedule({**base, "schedule": "linear"})
    assert linear[0] == 0.5 and linear[-1] == pytest.approx(0.9) and linear == sorted(linear)


def test_partitions_cover_every_scan_once():
    config = BuildConfig(scans=17, partitions=5)
    scans = [s for p in range(5) for s in config.partition_scans(p)]
    assert scans == list(range(17))


@pytest.mark.parametrize("changes, option", [
    ({"scans": 0}, "--scans"), ({"partitions": 9, "scans": 8}, "--partitions"),
    ({"crop": 64, "frame_size": 48}, "--crop"), ({"frame_size": 33}, "--frame-size"),
    ({"beta": (0.5, 1.5)}, "beta"), ({"iterations": (30, 10)}, "iterations"),
])
def test_bad_options_are_named(changes, option):
    with pytest.raises(ValueError, match=option):
        BuildConfig(**changes).check()


def test_import_is_light():
    code = ("import sys, recon_datasets, recon_datasets.cli; "
            "heavy = [m for m in ('pyspark', 'pyarrow', 'tensorflow', 'recon_env.engine') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
