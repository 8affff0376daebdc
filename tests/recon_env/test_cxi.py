"""CXI round trip and clear errors for malformed files."""
import h5py
import numpy as np
import pytest

from recon_env.cxi import read_cxi, read_result_cxi, write_cxi, write_result_cxi
from recon_env.errors import CXIFormatError
from recon_env.simulate import simulate


@pytest.fixture(scope="module")
def data():
    return simulate(n_frames=12, frame_size=32, probe_diameter=10, photons=1e5, seed=2,
                    bad_pixels=0.02, jitter=0.7)


@pytest.fixture()
def cxi_file(tmp_path, data):
    path = tmp_path / "scan.cxi"
    write_cxi(path, data)
    return path


def test_round_trip(cxi_file, data):
    back = read_cxi(cxi_file)
    assert np.array_equal(back.intensities, data.intensities)
    assert np.allclose(back.positions, data.positions, atol=1e-6)
    assert np.array_equal(back.mask, data.mask)
    assert np.isclose(back.energy_ev, data.energy_ev)
    assert np.isclose(back.distance_m, data.distance_m)
    assert np.isclose(back.detector_pixel_m, data.detector_pixel_m)
    assert back.object_shape == data.object_shape
    assert np.array_equal(back.probe_guess, data.probe_guess)
    assert np.array_equal(back.truth_object, data.truth_object)
    with h5py.File(cxi_file) as f:  # CXI conventions that other readers rely on
        assert f["cxi_version"][()] == 150
        assert f["/entry_1/data_1/data"].shape == data.intensities.shape
        assert np.isclose(f["/entry_1/instrument_1/source_1/energy"][()], 8000 * 1.602176634e-19)
        assert f["/entry_1/sample_1/geometry_1/translation"].shape == (12, 3)


def test_frame_range_reads_a_share(cxi_file, data):
    part = read_cxi(cxi_file, frame_range=(4, 9))
    assert np.array_equal(part.intensities, data.intensities[4:9])
    assert part.object_shape == data.object_shape


def test_result_file_round_trip(tmp_path):
    obj = (np.random.default_rng(0).random((20, 30)) + 1j).astype(np.complex64)
    probe = np.ones((8, 8), np.complex64)
    write_result_cxi(tmp_path / "r.cxi", {"object": obj, "probe": probe},
                     {"fourier_error": [0.5, 0.25], "algorithm": ["dm", "dm"]}, 1e-8)
    back = read_result_cxi(tmp_path / "r.cxi")
    assert np.array_equal(back["object"], obj) and np.array_equal(back["probe"], probe)
    assert back["history"]["fourier_error"] == [0.5, 0.25]


def _damage(path, action):
    with h5py.File(path, "a") as f:
        action(f)


@pytest.mark.parametrize("action, h5path, problem", [
    (lambda f: f.__delitem__("/entry_1/instrument_1/detector_1/data"),
     "/entry_1/instrument_1/detector_1/data", "missing"),
    (lambda f: f.__delitem__("/entry_1/sample_1/geometry_1/translation"),
     "/entry_1/sample_1/geometry_1/translation", "missing"),
    (lambda f: f.__delitem__("/entry_1/instrument_1/source_1/energy"),
     "/entry_1/instrument_1/source_1/energy", "missing"),
    (lambda f: f["/entry_1/instrument_1/detector_1/distance"].write_direct(np.array(-1.0)),
     "/entry_1/instrument_1/detector_1/distance", "positive"),
    (lambda f: (f.__delitem__("/entry_1/sample_1/geometry_1/translation"),
                f.create_dataset("/entry_1/sample_1/geometry_1/translation", data=np.zeros((5, 3)))),
     "/entry_1/sample_1/geometry_1/translation", "match"),
    (lambda f: (f.__delitem__("/entry_1/instrument_1/detector_1/mask"),
                f.create_dataset("/entry_1/instrument_1/detector_1/mask", data=np.zeros((4, 4)))),
     "/entry_1/instrument_1/detector_1/mask", "frame shape"),
    (lambda f: (f.__delitem__("/entry_1/instrument_1/detector_1/data"),
                f.create_dataset("/entry_1/instrument_1/detector_1/data", data=np.zeros((3, 32)))),
     "/entry_1/instrument_1/detector_1/data", "dimensions"),
])
def test_malformed_file_names_file_and_path(cxi_file, action, h5path, problem):
    _damage(cxi_file, action)
    with pytest.raises(CXIFormatError) as err:
        read_cxi(cxi_file)
    assert str(cxi_file) in str(err.value) and h5path in str(err.value)
    assert problem in str(err.value)


def test_nan_data_rejected(cxi_file):
    def poison(f):
        f["/entry_1/instrument_1/detector_1/data"][0, 0, 0] = np.nan
    _damage(cxi_file, poison)
    with pytest.raises(CXIFormatError, match="NaN"):
        read_cxi(cxi_file)


def test_not_hdf5_and_missing_file(tmp_path):
    junk = tmp_path / "junk.cxi"
    junk.write_text("not hdf5")
    with pytest.raises(CXIFormatError, match="junk.cxi: /: not a readable HDF5"):
        read_cxi(junk)
    with pytest.raises(CXIFormatError, match="file not found"):
        read_cxi(tmp_path / "absent.cxi")
