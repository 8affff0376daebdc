"""Simulator: geometry, photon statistics, masks, determinism, bad input."""
import numpy as np
import pytest

from recon_env.simulate import SimulationConfig, make_object, make_probe, scan_positions, simulate


def _nearest_neighbour(pos: np.ndarray) -> np.ndarray:
    d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


@pytest.mark.parametrize("kind", ["raster", "concentric", "fermat"])
def test_scan_step_follows_overlap(kind):
    pos = scan_positions(kind, 100, step=8.0)
    assert pos.shape == (100, 2) and pos.min() == 0.0
    nn = np.median(_nearest_neighbour(pos))
    assert 0.6 * 8.0 < nn < 1.4 * 8.0, nn


def test_jitter_moves_positions_reproducibly():
    a = scan_positions("raster", 25, 10.0, jitter=1.5, rng=np.random.default_rng(3))
    b = scan_positions("raster", 25, 10.0, jitter=1.5, rng=np.random.default_rng(3))
    c = scan_positions("raster", 25, 10.0)
    assert np.array_equal(a, b)
    assert 0.5 < np.std((a - a.min(0)) - c) < 3.0


@pytest.mark.parametrize("kind", ["airy", "gaussian"])
def test_probe_unit_power_and_curvature(kind):
    flat, curved = make_probe(kind, 64, 20, 0.0), make_probe(kind, 64, 20, 4.0)
    assert np.isclose(np.sum(np.abs(curved) ** 2), 1.0)
    assert np.ptp(np.angle(flat[28:36, 28:36])) < np.ptp(np.angle(curved[20:44, 20:44]))


def test_builtin_objects_deterministic_and_in_range():
    for kind in ("mixed", "siemens", "cells", "rings"):
        a = make_object(kind, (80, 90), phase_max=1.2, amplitude_min=0.5)
        assert np.array_equal(a, make_object(kind, (80, 90), phase_max=1.2, amplitude_min=0.5))
        assert a.shape == (80, 90)
        assert 0.5 - 1e-9 <= np.abs(a).min() and np.abs(a).max() <= 1 + 1e-9
        assert np.angle(a).max() <= 1.2 + 1e-9 and np.ptp(np.angle(a)) > 0.5


def test_image_file_object(tmp_path):
    import matplotlib.image as mpimg

    img = np.zeros((40, 40))
    img[10:30, 5:15] = 1.0
    path = tmp_path / "obj.png"
    mpimg.imsave(path, img, cmap="gray")
    obj = make_object(str(path), (80, 80), phase_max=2.0, amplitude_min=0.4)
    assert obj.shape == (80, 80)
    assert np.angle(obj[40, 20]) > 1.5 and abs(np.angle(obj[5, 70])) < 0.2


def test_missing_image_file_is_named():
    with pytest.raises(ValueError, match="nope.png"):
        make_object("nope.png", (10, 10))


def test_photons_noise_mask_and_truth():
    clear = simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e5, seed=4)
    total = clear.intensities.sum(axis=(1, 2))
    # object amplitude in [0.6, 1] absorbs part of the 1e5 incident photons
    assert np.all(total < 1.0e5) and np.all(total > 0.3e5)
    data = simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e5, seed=4,
                    bad_pixels=0.05, beamstop=2.0)
    assert np.all(data.intensities == np.round(data.intensities))  # Poisson counts
    assert not data.mask[16, 16] and 0.02 < 1 - data.mask.mean() < 0.1
    assert np.all(data.intensities[:, ~data.mask] == 0)
    assert data.truth_object.shape == data.object_shape
    again = simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e5, seed=4,
                     bad_pixels=0.05, beamstop=2.0)
    assert np.array_equal(again.intensities, data.intensities)
    other = simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e5, seed=5,
                     bad_pixels=0.05, beamstop=2.0)
    assert not np.array_equal(other.intensities, data.intensities)


def test_frame_range_matches_whole_scan():
    cfg = SimulationConfig(n_frames=20, frame_size=32, probe_diameter=10, photons=1e4, seed=1)
    whole = simulate(cfg)
    part = simulate(cfg, frame_range=(7, 13))
    assert np.array_equal(part.intensities, whole.intensities[7:13])
    assert np.array_equal(part.positions, whole.positions[7:13])
    assert part.object_shape == whole.object_shape


def test_noise_free_matches_forward_model():
    data = simulate(n_frames=4, frame_size=32, probe_diameter=10, photons=None, object="siemens")
    p = data.truth_probe
    y, x = data.positions[2].astype(int)
    wave = p * data.truth_object[y:y + 32, x:x + 32]
    expect = np.fft.fftshift(np.abs(np.fft.fft2(wave, norm="ortho")) ** 2)
    assert np.allclose(data.intensities[2], expect, rtol=1e-3, atol=1e-3 * expect.max())


@pytest.mark.parametrize("bad, match", [
    (dict(overlap=1.2), "overlap"), (dict(scan="zigzag"), "scan"), (dict(probe="laser"), "probe"),
    (dict(frame_size=31), "frame_size"), (dict(photons=-1.0), "photons"),
    (dict(probe_diameter=500), "probe_diameter"), (dict(bad_pixels=1.5), "bad_pixels"),
])
def test_invalid_simulation_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        simulate(**{**dict(n_frames=4, frame_size=32, probe_diameter=10), **bad})
