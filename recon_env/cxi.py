"""CXI (HDF5) input and output following the CXI 1.5 conventions.

Read/written paths (SI units, as the CXI format asks):
    /cxi_version                                         150
    /entry_1/instrument_1/detector_1/data                (F, N, N) diffraction intensities
    /entry_1/instrument_1/detector_1/distance            sample-detector distance [m]
    /entry_1/instrument_1/detector_1/x_pixel_size        detector pixel size [m] (y too)
    /entry_1/instrument_1/detector_1/mask                (N, N) uint32, 0 = good pixel
    /entry_1/instrument_1/source_1/energy                photon energy [J]
    /entry_1/instrument_1/source_1/illumination          optional probe guess (N, N) complex
    /entry_1/sample_1/geometry_1/translation             (F, 3) sample positions x, y, z [m]
    /entry_1/data_1/data                                 soft link to the detector data
Ground truth of simulated data, when present, goes to /entry_1/sample_1/truth_object and
/entry_1/instrument_1/source_1/truth_illumination (not CXI standard, ignored by others).
Reconstruction results go to /entry_1/image_1/data (object), .../process_1/final_illumination
(probe) and .../process_1/fourier_error, exit_change.
Every missing or malformed item raises CXIFormatError naming the file and the HDF5 path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import PtychoData
from .errors import CXIFormatError

EV_TO_J = 1.602176634e-19
DET = "/entry_1/instrument_1/detector_1"
SRC = "/entry_1/instrument_1/source_1"
GEOM = "/entry_1/sample_1/geometry_1"


def write_cxi(path: str | Path, data: PtychoData, result: dict | None = None,
              history: dict | None = None) -> None:
    """Write data (and optionally a reconstruction result and its error history)."""
    import h5py

    dx = data.object_pixel_m
    trans = np.zeros((data.n_frames, 3))
    trans[:, 0] = data.positions[:, 1] * dx  # x
    trans[:, 1] = data.positions[:, 0] * dx  # y
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        det = f.create_group(DET)
        det.create_dataset("data", data=data.intensities, chunks=(1,) + data.frame_shape,
                           compression="gzip", compression_opts=1)
        det["distance"] = data.distance_m
        det["x_pixel_size"] = data.detector_pixel_m
        det["y_pixel_size"] = data.detector_pixel_m
        assert data.mask is not None  # PtychoData.__post_init__ sets it
        det["mask"] = (~data.mask).astype(np.uint32)
        src = f.create_group(SRC)
        src["energy"] = data.energy_ev * EV_TO_J
        if data.probe_guess is not None:
            src["illumination"] = np.asarray(data.probe_guess, dtype=np.complex64)
        if data.truth_probe is not None:
            src["truth_illumination"] = np.asarray(data.truth_probe, dtype=np.complex64)
        geom = f.create_group(GEOM)
        geom["translation"] = trans
        geom.attrs["object_shape"] = np.asarray(data.object_shape, dtype=np.int64)
        if data.truth_object is not None:
            f["/entry_1/sample_1/truth_object"] = np.asarray(data.truth_object, dtype=np.complex64)
        f.create_group("/entry_1/data_1")
        f["/entry_1/data_1/data"] = h5py.SoftLink(DET + "/data")
        if result is not None:
            _write_image(f, result, history, dx)


def _write_image(f, result: dict, history: dict | None, pixel_m: float) -> None:
    img = f.create_group("/entry_1/image_1")
    img["data"] = np.asarray(result["object"], dtype=np.complex64)
    img["data"].attrs["pixel_size_m"] = pixel_m
    proc = img.create_group("process_1")
    proc["final_illumination"] = np.asarray(result["probe"], dtype=np.complex64)
    if "illumination" in result:
        proc["illumination_map"] = np.asarray(result["illumination"], dtype=np.float32)
    if result.get("positions") is not None:  # the positions the reconstruction ended with
        proc["translation"] = _translation(result["positions"], pixel_m)
        proc["translation"].attrs["refined"] = bool(
            result.get("config", {}).get("refine_positions", False))
    if result.get("probe_modes") is not None:
        proc["probe_modes"] = np.asarray(result["probe_modes"], dtype=np.complex64)
        proc["probe_modes"].attrs["power_fractions"] = np.asarray(result["mode_fractions"])
    for key, values in (history or {}).items():
        if len(values) and isinstance(values[0], (int, float, np.floating)):
            proc[key] = np.asarray(values, dtype=np.float64)


def _translation(positions: np.ndarray, pixel_m: float) -> np.ndarray:
    """(F, 2) (y, x) object pixels -> CXI (F, 3) x, y, z translations in metres."""
    positions = np.asarray(positions, dtype=np.float64)
    trans = np.zeros((len(positions), 3))
    trans[:, 0] = positions[:, 1] * pixel_m
    trans[:, 1] = positions[:, 0] * pixel_m
    return trans


def write_result_cxi(path: str | Path, result: dict, history: dict | None, pixel_m: float,
                     source: str = "") -> None:
    """A CXI file holding only the reconstruction (/entry_1/image_1); data stay in the input."""
    import h5py

    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        f.create_group("/entry_1")
        f["/entry_1"].attrs["input"] = source
        _write_image(f, result, history, pixel_m)
        if result.get("positions") is not None:  # refined positions at the standard path
            f[GEOM + "/translation"] = _translation(result["positions"], pixel_m)


def read_result_cxi(path: str | Path) -> dict:
    """Object, probe and error history written by write_cxi/write_result_cxi (plus the final
    positions in object pixels and the probe modes, when written)."""
    filename = str(path)
    with _open(path) as f:
        obj = _get(f, filename, "/entry_1/image_1/data", ndim=2)[()]
        probe = _get(f, filename, "/entry_1/image_1/process_1/final_illumination", ndim=2)[()]
        proc = f["/entry_1/image_1/process_1"]
        history = {k: proc[k][()].tolist() for k in proc if proc[k].ndim == 1}
        out = {"object": obj, "probe": probe, "history": history}
        pixel = f["/entry_1/image_1/data"].attrs.get("pixel_size_m")
        if "translation" in proc and pixel:
            trans = proc["translation"][()]
            out["positions"] = np.stack([trans[:, 1], trans[:, 0]], axis=1) / float(pixel)
        if "probe_modes" in proc:
            out["probe_modes"] = proc["probe_modes"][()]
            out["mode_fractions"] = proc["probe_modes"].attrs["power_fractions"].tolist()
    return out


def _open(path: str | Path):
    import h5py

    filename = str(path)
    if not Path(path).is_file():
        raise CXIFormatError(filename, "/", "file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise CXIFormatError(filename, "/", f"not a readable HDF5 file ({err})") from err


def frame_count(path: str | Path) -> int:
    """Number of frames in a CXI file (checks that the data set exists)."""
    with _open(path) as f:
        return int(_get(f, str(path), DET + "/data", ndim=3).shape[0])


def _get(f, filename: str, path: str, *, ndim: int | None = None, optional: bool = False):
    if path not in f:
        if optional:
            return None
        raise CXIFormatError(filename, path, "missing (required by CXI ptychography input)")
    item = f[path]
    if not hasattr(item, "shape"):
        raise CXIFormatError(filename, path, "is a group, expected a dataset")
    if ndim is not None and item.ndim != ndim:
        raise CXIFormatError(filename, path, f"expected {ndim} dimensions, got shape {item.shape}")
    return item


def _positive_scalar(f, filename: str, path: str) -> float:
    item = _get(f, filename, path)
    try:
        value = float(np.asarray(item[()]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError) as err:
        raise CXIFormatError(filename, path, f"not a number ({err})") from err
    if not (np.isfinite(value) and value > 0):
        raise CXIFormatError(filename, path, f"must be a positive number, got {value}")
    return value


def read_cxi(path: str | Path, frame_range: tuple[int, int] | None = None) -> PtychoData:
    """Read a CXI ptychography file. ``frame_range=(start, stop)`` reads only those frames
    (one MPI rank's share) while the object geometry still comes from all positions."""

    filename = str(path)
    with _open(path) as f:
        dset = _get(f, filename, DET + "/data", ndim=3)
        n_frames, ny, nx = dset.shape
        if n_frames == 0:
            raise CXIFormatError(filename, DET + "/data", "holds no frames (shape "
                                 f"{dset.shape})")
        if ny != nx:
            raise CXIFormatError(filename, DET + "/data", f"frames must be square, got {ny}x{nx}")
        trans = _get(f, filename, GEOM + "/translation", ndim=2)
        if trans.shape[0] != n_frames or trans.shape[1] < 2:
            raise CXIFormatError(filename, GEOM + "/translation",
                                 f"expected shape ({n_frames}, 3) to match {DET}/data, "
                                 f"got {trans.shape}")
        trans = np.asarray(trans[()], dtype=np.float64)
        if not np.all(np.isfinite(trans)):
            raise CXIFormatError(filename, GEOM + "/translation", "contains NaN or inf")
        energy_ev = _positive_scalar(f, filename, SRC + "/energy") / EV_TO_J
        distance = _positive_scalar(f, filename, DET + "/distance")
        pixel = _positive_scalar(f, filename, DET + "/x_pixel_size")
        mask_item = _get(f, filename, DET + "/mask", ndim=2, optional=True)
        mask = None
        if mask_item is not None:
            if mask_item.shape != (ny, nx):
                raise CXIFormatError(filename, DET + "/mask",
                                     f"shape {mask_item.shape} != frame shape {(ny, nx)}")
            mask = np.asarray(mask_item[()]) == 0
        start, stop = (0, n_frames) if frame_range is None else frame_range
        if not 0 <= start <= stop <= n_frames:
            raise ValueError(f"frame_range {frame_range} outside 0..{n_frames} of {filename}")
        try:
            intensities = np.asarray(dset[start:stop], dtype=np.float32)
        except (OSError, ValueError) as err:
            raise CXIFormatError(filename, DET + "/data", f"cannot read ({err})") from err
        if not np.all(np.isfinite(intensities)):
            raise CXIFormatError(filename, DET + "/data", "contains NaN or inf")
        probe = _get(f, filename, SRC + "/illumination", ndim=2, optional=True)
        probe = None if probe is None else np.asarray(probe[()], dtype=np.complex64)
        if probe is not None and probe.shape != (ny, nx):
            raise CXIFormatError(filename, SRC + "/illumination",
                                 f"shape {probe.shape} != frame shape {(ny, nx)}")
        truth_o = _get(f, filename, "/entry_1/sample_1/truth_object", ndim=2, optional=True)
        truth_p = _get(f, filename, SRC + "/truth_illumination", ndim=2, optional=True)
        shape_attr = f[GEOM].attrs.get("object_shape")
        truth_o = None if truth_o is None else np.asarray(truth_o[()], dtype=np.complex64)
        truth_p = None if truth_p is None else np.asarray(truth_p[()], dtype=np.complex64)

    wavelength = 1.239841984e-6 / energy_ev
    dx = wavelength * distance / (nx * pixel)
    positions = np.stack([trans[:, 1], trans[:, 0]], axis=1) / dx
    positions -= np.minimum(positions.min(axis=0), 0.0)  # make all windows start >= 0
    positions = np.round(positions, 6)
    from .data import default_object_shape, object_size_problem

    full_shape = default_object_shape(positions, nx)
    problem = object_size_problem(full_shape, n_frames, nx)
    if problem:
        raise CXIFormatError(filename, GEOM + "/translation", f"the scan spans an {problem}")
    if shape_attr is not None and len(shape_attr) == 2:
        try:
            attr_shape = (int(shape_attr[0]), int(shape_attr[1]))
        except (TypeError, ValueError, OverflowError) as err:
            raise CXIFormatError(filename, GEOM + " attribute object_shape",
                                 f"not two integers ({err})") from err
        problem = object_size_problem(attr_shape, n_frames, nx)
        if problem:
            raise CXIFormatError(filename, GEOM + " attribute object_shape", problem)
        full_shape = (max(attr_shape[0], full_shape[0]), max(attr_shape[1], full_shape[1]))
    if truth_o is not None and truth_o.shape != full_shape:
        truth_o = None  # geometry changed: the truth no longer lines up
    if mask is not None:
        intensities *= mask
    return PtychoData(intensities=intensities, positions=positions[start:stop], mask=mask,
                      energy_ev=energy_ev, distance_m=distance, detector_pixel_m=pixel,
                      probe_guess=probe, truth_object=truth_o, truth_probe=truth_p,
                      object_shape=full_shape,
                      meta={"source": filename, "frames": (start, stop), "total_frames": n_frames})
