"""The one scan distribution: presets with a realistic spread, position errors, and the
dataset build drawing through it without changing what it draws."""
import numpy as np
import pytest

from recon_datasets.config import BuildConfig, draw_scan
from recon_env.tuning_env import PtychoTuningEnv, ScanGenerator, simulate_scan


def test_presets_have_the_sizes_and_the_spread():
    train, held = ScanGenerator.preset("train"), ScanGenerator.preset("heldout")
    assert (train.n_frames, train.frame_size) == (96, 64)
    assert (held.n_frames, held.frame_size) == (512, 128)
    rng = np.random.default_rng(0)
    draws = [train.draw(rng) for _ in range(300)]
    photons = np.log10([d["photons"] for d in draws])
    assert photons.min() >= 4.0 and photons.max() <= 8.0 and np.ptp(photons) > 3.5
    assert {d["object"] for d in draws} == {"mixed", "cells", "rings", "siemens"}
    assert {d["probe"] for d in draws} == {"airy", "gaussian"}
    strong = [d for d in draws if d["probe_defocus"] >= 8.0]  # the "defocused" probe kind
    assert strong and all(d["probe"] == "airy" for d in strong)
    overlaps = [d["overlap"] for d in draws]
    assert min(overlaps) < 0.55 and max(overlaps) > 0.8
    errors = [d["position_error"] for d in draws]
    assert 0.0 <= min(errors) < 0.1 and 0.9 < max(errors) <= 1.0


def test_dataset_draw_is_the_generator_and_unchanged():
    config = BuildConfig(scans=40, seed=3)
    generator = ScanGenerator(objects=("mixed", "cells", "rings", "siemens"), n_frames=32,
                              frame_size=48, probe_diameter_frac=(0.28, 0.4),
                              overlap=(0.55, 0.8), log10_photons=(4.0, 8.0))
    expected = generator.draw(np.random.default_rng([3, 5]))
    assert draw_scan(config, 5)["simulation"] == expected
    # what the dataset drew before it used the generator (stored datasets still validate)
    assert expected == {"n_frames": 32, "frame_size": 48, "object": "mixed", "probe": "airy",
                        "scan": "fermat", "probe_diameter": pytest.approx(18.61599310239624),
                        "overlap": pytest.approx(0.6944188642374021),
                        "photons": pytest.approx(5784180.362779549),
                        "phase_max": pytest.approx(0.6022472093299018), "seed": 1897838911}
    assert draw_scan(config, 5)["reconstruction"]["engine_seed"] == 2053180785


def test_position_errors_are_whole_pixels_and_seeded():
    scan = {"n_frames": 40, "frame_size": 32, "probe_diameter": 12.0, "photons": 1e6,
            "seed": 4, "position_error": 1.0}
    data = simulate_scan(scan)
    truth = data.meta["true_positions"]
    error = data.positions - truth
    assert np.all(error == np.round(error)) and np.any(error != 0)
    assert 0.5 < error.std() < 1.6
    assert data.positions.min() >= 0
    assert np.all(data.positions.max(axis=0) <= np.asarray(data.object_shape) - 32)
    np.testing.assert_array_equal(simulate_scan(scan).positions, data.positions)
    plain = simulate_scan({k: v for k, v in scan.items() if k != "position_error"})
    np.testing.assert_array_equal(plain.positions, truth)


def test_env_takes_a_preset_name_or_fields():
    env = PtychoTuningEnv(generator={"preset": "train", "n_frames": 24, "frame_size": 32})
    assert env.generator.probes == ("airy", "gaussian", "defocused")
    assert env.generator.n_frames == 24
    _, info = env.reset(seed=1)
    assert info["scan"]["n_frames"] == 24 and "position_error" in info["scan"]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        PtychoTuningEnv(generator="huge")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['frames'\]"):
        PtychoTuningEnv(generator={"frames": 3})
    with pytest.raises(ValueError, match="unknown probe"):
        PtychoTuningEnv(generator={"probes": ["laser"]})
