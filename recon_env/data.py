"""The measured (or simulated) ptychographic data set, as the engine consumes it.

Conventions (kept identical in the simulator, the CXI reader and the engine):
- ``intensities[j]`` is the far-field diffraction pattern of frame j in photon counts,
  centred (zero frequency in the middle, as a detector records it), shape (F, N, N).
- ``positions[j] = (y, x)`` is the top-left corner of frame j's N x N window in the object
  array, in object pixels (fractional ones are modelled: engine.EngineConfig.subpixel).
- ``mask`` is (N, N) bool, True where a detector pixel is valid.
- Physical metadata (energy, distance, detector pixel size) are only needed for CXI and for
  converting translations in metres to object pixels.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import NegativeIntensityWarning

PLANCK_EV_M = 1.239841984e-6  # h*c in eV*m: wavelength = PLANCK_EV_M / energy_ev


@dataclass
class PtychoData:
    intensities: np.ndarray
    positions: np.ndarray
    mask: np.ndarray | None = None
    energy_ev: float = 8000.0
    distance_m: float = 2.0
    detector_pixel_m: float = 75e-6
    probe_guess: np.ndarray | None = None
    truth_object: np.ndarray | None = None
    truth_probe: np.ndarray | None = None
    object_shape: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.intensities = np.asarray(self.intensities)
        self.positions = np.asarray(self.positions, dtype=np.float64)
        validate(self)
        warn_negative(self)
        if self.mask is None:
            self.mask = np.ones(self.intensities.shape[1:], dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.object_shape is None:
            self.object_shape = default_object_shape(self.positions, self.frame_shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.intensities.shape[1:])  # type: ignore[return-value]

    @property
    def wavelength_m(self) -> float:
        return PLANCK_EV_M / self.energy_ev

    @property
    def object_pixel_m(self) -> float:
        """Object-plane pixel size of the far-field geometry: lambda z / (N dx_det)."""
        return self.wavelength_m * self.distance_m / (self.frame_shape[0] * self.detector_pixel_m)

    def subset(self, start: int, stop: int) -> "PtychoData":
        """Frames [start, stop) with the full-object geometry kept (for MPI ranks)."""
        return PtychoData(
            intensities=self.intensities[start:stop], positions=self.positions[start:stop],
            mask=self.mask, energy_ev=self.energy_ev, distance_m=self.distance_m,
            detector_pixel_m=self.detector_pixel_m, probe_guess=self.probe_guess,
            truth_object=self.truth_object, truth_probe=self.truth_probe,
            object_shape=self.object_shape,
            meta={**self.meta, "total_frames": self.meta.get("total_frames", self.n_frames)})


def default_object_shape(positions: np.ndarray, n: int, margin: int = 0) -> tuple[int, int]:
    """Smallest object array holding every frame window (positions start at >= 0)."""
    if len(positions) == 0:
        return (n, n)
    top = np.ceil(positions.max(axis=0)).astype(int) + n + margin
    return int(top[0]), int(top[1])


# an object array larger than this many times the frames' total area (plus a few frames'
# worth) is refused: no real scan needs it, and allocating it ends in a MemoryError
AREA_FACTOR = 4
AREA_SLACK_FRAMES = 16


def object_size_problem(object_shape: tuple[int, int], n_frames: int, n: int) -> str | None:
    """Why an object array of ``object_shape`` is absurd for ``n_frames`` frames of n x n
    (None when it is plausible). Such shapes come from translations in the wrong unit or a
    corrupt ``object_shape``; without this check they end in a MemoryError traceback."""
    pixels = int(object_shape[0]) * int(object_shape[1])
    limit = (AREA_FACTOR * max(n_frames, 1) + AREA_SLACK_FRAMES) * n * n
    if pixels <= limit:
        return None
    return (f"object of {object_shape[0]}x{object_shape[1]} pixels ({pixels:.3g}) is more than "
            f"{AREA_FACTOR}x the area of the {n_frames} frames of {n}x{n} "
            f"(limit {limit:.3g} pixels); translations in the wrong unit?")


def negative_summary(intensities: np.ndarray, first_frame: int = 0) -> str | None:
    """'N negative pixels in K of F frames (e.g. frames a, b, c), min v', or None."""
    neg = intensities < 0
    count = int(np.count_nonzero(neg))
    if count == 0:
        return None
    frames = np.flatnonzero(neg.reshape(len(intensities), -1).any(axis=1)) + first_frame
    shown = ", ".join(str(int(f)) for f in frames[:5]) + (", ..." if len(frames) > 5 else "")
    return (f"{count} negative intensity values in {len(frames)} of {len(intensities)} frames "
            f"(frames {shown}; min {float(intensities.min()):.4g})")


def warn_negative(data: PtychoData) -> None:
    """Say (NegativeIntensityWarning) that negative intensities will count as zero."""
    first = int(data.meta.get("frames", (0, 0))[0])
    text = negative_summary(data.intensities, first)
    if text is not None:
        source = data.meta.get("source", "the data")
        warnings.warn(f"{source}: {text}; they are treated as 0", NegativeIntensityWarning,
                      stacklevel=3)


def validate(data: PtychoData) -> None:
    """Raise ValueError naming the field that is inconsistent."""
    inten, pos = data.intensities, data.positions
    if inten.ndim != 3 or inten.shape[1] != inten.shape[2]:
        raise ValueError(f"intensities must have shape (frames, N, N), got {inten.shape}")
    if inten.shape[0] < 1:
        raise ValueError("intensities: need at least one frame")
    if not np.all(np.isfinite(inten)):
        raise ValueError("intensities contain NaN or inf")
    if pos.shape != (inten.shape[0], 2):
        raise ValueError(
            f"positions must have shape ({inten.shape[0]}, 2) to match the intensities, "
            f"got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    if pos.min() < 0:
        raise ValueError(f"positions must be >= 0 (object pixels), min is {pos.min():.3g}")
    if data.mask is not None and np.shape(data.mask) != inten.shape[1:]:
        raise ValueError(f"mask shape {np.shape(data.mask)} != frame shape {inten.shape[1:]}")
    for name in ("energy_ev", "distance_m", "detector_pixel_m"):
        value = getattr(data, name)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if data.probe_guess is not None and np.shape(data.probe_guess) != inten.shape[1:]:
        raise ValueError(
            f"probe_guess shape {np.shape(data.probe_guess)} != frame shape {inten.shape[1:]}")
    shape = data.object_shape if data.object_shape is not None else default_object_shape(
        pos, inten.shape[1])
    problem = object_size_problem(shape, int(data.meta.get("total_frames", inten.shape[0])),
                                  inten.shape[1])
    if problem:
        raise ValueError(problem)
    if data.object_shape is not None:
        need = default_object_shape(pos, inten.shape[1])
        if data.object_shape[0] < need[0] or data.object_shape[1] < need[1]:
            raise ValueError(
                f"object_shape {tuple(data.object_shape)} too small for the scan; need {need}")
