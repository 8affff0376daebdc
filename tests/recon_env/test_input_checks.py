"""Reconstruction input that used to be clamped silently or to end in a traceback (issue 9
item 5): every case is one line naming the file and what is wrong, exit code 2."""
import h5py
import numpy as np
import pytest

from recon_env import cli
from recon_env.cxi import GEOM, read_cxi, write_cxi
from recon_env.data import PtychoData
from recon_env.errors import CXIFormatError, NegativeIntensityWarning
from recon_env.simulate import simulate


@pytest.fixture(scope="module")
def data():
    return simulate(n_frames=12, frame_size=32, probe_diameter=10, photons=1e5, seed=3)


def _write(tmp_path, scan, name="scan.cxi", **changes):
    path = tmp_path / name
    write_cxi(path, scan)
    with h5py.File(path, "a") as f:
        for key, value in changes.items():
            target = {"data": "/entry_1/instrument_1/detector_1/data",
                      "translation": GEOM + "/translation"}[key]
            del f[target]
            f[target] = value
    return path


def _recon(path, tmp_path, capsys, *extra):
    code = cli.main(["recon", "--cxi", str(path), "--iterations", "2",
                     "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_negative_intensities_are_reported_with_count_and_frames(tmp_path, data, capsys):
    inten = data.intensities.copy()
    inten[3, 0, :5] = -2.0
    inten[7, 1, 1] = -0.5
    path = _write(tmp_path, data, "neg.cxi", data=inten)
    with pytest.warns(NegativeIntensityWarning, match=r"neg\.cxi: 6 negative intensity values "
                      r"in 2 of 12 frames \(frames 3, 7; min -2\)"):
        read_cxi(path)
    code, out, err = _recon(path, tmp_path, capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "negative" in line]
    assert lines == [lines[0]] and lines[0].startswith("warning: ") and "treated as 0" in lines[0]


def test_no_negative_warning_for_clean_data(tmp_path, data, recwarn):
    read_cxi(_write(tmp_path, data))
    assert not [w for w in recwarn if issubclass(w.category, NegativeIntensityWarning)]


def test_no_photons_names_the_file(tmp_path, data, capsys):
    path = _write(tmp_path, data, "dark.cxi", data=np.zeros_like(data.intensities))
    code, _, err = _recon(path, tmp_path, capsys)
    assert code == 2
    assert err.strip() == f"error: {path}: the data contain no photons in valid pixels"


def test_zero_frames_is_one_clear_line(tmp_path, data, capsys):
    path = _write(tmp_path, data, "empty.cxi", data=np.zeros((0, 32, 32), np.float32),
                  translation=np.zeros((0, 3)))
    with pytest.raises(CXIFormatError, match="holds no frames"):
        read_cxi(path)
    code, _, err = _recon(path, tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "empty.cxi" in err and "no frames" in err


def test_absurd_translation_is_refused_not_allocated(tmp_path, data, capsys):
    with h5py.File(_write(tmp_path, data, "tmp.cxi")) as f:
        trans = f[GEOM + "/translation"][()]
    path = _write(tmp_path, data, "microns.cxi", translation=trans * 1e6)  # µm written as m
    code, _, err = _recon(path, tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "microns.cxi" in err and "translation" in err and "wrong unit" in err


def test_absurd_object_shape_attribute_is_refused(tmp_path, data, capsys):
    path = _write(tmp_path, data, "shape.cxi")
    with h5py.File(path, "a") as f:
        f[GEOM].attrs["object_shape"] = np.array([10**6, 10**6])
    code, _, err = _recon(path, tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "shape.cxi" in err and "object_shape" in err and "1000000x1000000" in err


def test_absurd_object_shape_in_python_is_a_value_error(data):
    with pytest.raises(ValueError, match="more than 4x the area"):
        PtychoData(intensities=data.intensities, positions=data.positions,
                   object_shape=(50_000, 50_000))


def test_more_ranks_than_frames_is_refused():
    from recon_env.runner import load_share

    class Comm:
        rank, size = 0, 8

    with pytest.raises(ValueError, match="4 frames cannot be split over 8 ranks"):
        load_share({"n_frames": 4, "frame_size": 16, "probe_diameter": 5}, Comm())
