"""Reconstructor.add_frames: frames joining a running reconstruction (live scans) give the
same state, and the same iterations, as building it over all the frames."""
import numpy as np

from recon_env.data import PtychoData
from recon_env.engine import Reconstructor
from recon_env.simulate import SimulationConfig, simulate


def _part(data: PtychoData, s: slice) -> PtychoData:
    return PtychoData(intensities=data.intensities[s], positions=data.positions[s],
                      mask=data.mask, energy_ev=data.energy_ev, distance_m=data.distance_m,
                      detector_pixel_m=data.detector_pixel_m, probe_guess=data.probe_guess,
                      object_shape=data.object_shape)


def test_added_frames_match_a_reconstructor_built_over_all_frames():
    data = simulate(SimulationConfig(n_frames=40, frame_size=32, probe_diameter=10.0,
                                     photons=1e6, seed=3))
    grown = Reconstructor(_part(data, slice(0, 25)))
    grown.step(3)
    old_psi = grown.snapshot()["psi"]
    # twice: the second fits in the grown buffer's spare room, the first does not
    assert grown.add_frames(data.intensities[25:30], data.positions[25:30])
    assert grown.add_frames(data.intensities[30:], data.positions[30:])
    assert grown.local_frames == 40 and grown.psi.shape[0] == 40

    full = Reconstructor(_part(data, slice(0, 40)))
    psi = np.zeros_like(full.psi)
    psi[:25] = old_psi
    full.restore({"psi": psi, "object": grown.object, "probe": grown.probe,
                  "iteration": grown.iteration, "history": grown.history})
    fresh = np.zeros(40, bool)
    fresh[25:] = True
    full.join_frames(fresh)

    np.testing.assert_array_equal(grown.amp, full.amp)
    np.testing.assert_allclose(grown.amp_norm, full.amp_norm, rtol=1e-12)
    np.testing.assert_array_equal(grown.positions, full.positions)
    np.testing.assert_array_equal(grown.psi, full.psi)   # old waves kept, new ones P O
    a, b = grown.step(2), full.step(2)
    np.testing.assert_allclose(a["fourier_error"], b["fourier_error"], rtol=1e-6)
    np.testing.assert_allclose(grown.object, full.object, rtol=1e-5, atol=1e-6)


def test_no_frames_is_a_no_op_and_subpixel_frames_need_a_new_reconstructor():
    data = simulate(SimulationConfig(n_frames=20, frame_size=32, probe_diameter=10.0,
                                     photons=1e6, seed=4))
    rec = Reconstructor(_part(data, slice(0, 20)))
    norm = rec.amp_norm
    assert rec.add_frames(np.zeros((0, 32, 32), np.float32), np.zeros((0, 2)))
    assert rec.local_frames == 20 and rec.amp_norm == norm
    shifted = data.positions[:2] + 0.25  # whole-pixel reconstruction: cannot grow in place
    assert not rec.add_frames(data.intensities[:2], shifted)
    assert rec.local_frames == 20 and rec.amp_norm == norm
