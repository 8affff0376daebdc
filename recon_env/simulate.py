"""Ptychography simulator: probes, test objects, scan patterns, noisy far-field data.

Everything is deterministic for a given ``seed`` (built-in objects use their own fixed
seed, so the same object comes back whatever the noise seed). Positions are whole object
pixels unless ``subpixel=True``: then each frame sees the object window Fourier-shifted by
its fractional offset (an object-side model, independent of the engine's probe-side one).
``mode_powers`` makes a partially coherent probe: orthogonal modes with those power
fractions whose far-field intensities add.

Photon count = expected photons per frame *incident* on the sample (sum |probe|^2); the
object's absorption lowers what reaches the detector. ``photons=None`` gives noise-free data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .data import PtychoData

PROBES = ("airy", "gaussian")
OBJECTS = ("mixed", "siemens", "cells", "rings", "flat")
SCANS = ("fermat", "raster", "concentric")


@dataclass
class SimulationConfig:
    """Parameters of one simulated scan (defaults give a well-posed 128-pixel case)."""

    n_frames: int = 512
    """diffraction frames in the scan"""
    frame_size: int = 128
    """detector pixels per side (square frames; an even number >= 8)"""
    probe: Literal["airy", "gaussian"] = "airy"
    """probe shape: airy (a focused beam) or gaussian"""
    probe_diameter: float = 40.0
    """probe size (px): the Airy first-zero diameter, the Gaussian FWHM"""
    probe_defocus: float = 3.0
    """rad of quadratic phase at the pupil edge (Airy) or at r = FWHM (Gaussian)"""
    object: str = "mixed"
    """built-in (mixed, siemens, cells, rings, flat) or an image / .npy file"""
    phase_max: float = 1.0
    """object phase range (rad)"""
    amplitude_min: float = 0.6
    """lowest object amplitude (the range is [amplitude_min, 1])"""
    scan: Literal["fermat", "raster", "concentric"] = "fermat"
    """scan pattern"""
    overlap: float = 0.75
    """probe overlap fraction: 1 - step / probe_diameter"""
    jitter: float = 0.0
    """std (px) of Gaussian scan position errors (rounded to whole pixels)"""
    photons: float | None = 1e8
    """photons per frame incident on the sample (None: noise-free data)"""
    bad_pixels: float = 0.0
    """fraction of randomly masked (dead) detector pixels"""
    beamstop: float = 0.0
    """radius (px) of a masked central disc"""
    seed: int = 0
    """seed of the noise and the scan errors (built-in objects keep their own)"""
    energy_ev: float = 8000.0
    """photon energy (eV)"""
    distance_m: float = 2.0
    """sample-detector distance (m)"""
    detector_pixel_m: float = 75e-6
    """detector pixel size (m)"""
    subpixel: bool = False
    """keep fractional positions (each frame's object window Fourier-shifted)"""
    mode_powers: tuple[float, ...] | None = None
    """a partially coherent probe with these mode power fractions (summing to 1)"""
    position_error: float = 0.0
    """RMS error (px, vector length) of the recorded positions; the true ones go to
    meta["true_positions"]"""

    def check(self) -> None:
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.frame_size < 8 or self.frame_size % 2:
            raise ValueError(f"frame_size must be an even number >= 8, got {self.frame_size}")
        if self.probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {self.probe!r}")
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {self.scan!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0 < self.probe_diameter < self.frame_size:
            raise ValueError(
                f"probe_diameter must be in (0, frame_size={self.frame_size}), "
                f"got {self.probe_diameter}")
        if self.photons is not None and not self.photons > 0:
            raise ValueError(f"photons must be > 0 or None, got {self.photons}")
        if not 0.0 <= self.bad_pixels < 1.0:
            raise ValueError(f"bad_pixels must be a fraction in [0, 1), got {self.bad_pixels}")
        if self.jitter < 0 or self.beamstop < 0:
            raise ValueError("jitter and beamstop must be >= 0")
        if not 0 <= self.position_error <= 20:
            raise ValueError(f"position_error must be in [0, 20] px, got {self.position_error}")
        if not 0 < self.amplitude_min <= 1:
            raise ValueError(f"amplitude_min must be in (0, 1], got {self.amplitude_min}")
        if self.mode_powers is not None:
            powers = np.asarray(self.mode_powers, dtype=np.float64)
            if (powers.ndim != 1 or not 1 <= powers.size <= 8 or np.any(powers <= 0)
                    or abs(powers.sum() - 1.0) > 1e-3):
                raise ValueError("mode_powers must be 1 to 8 positive fractions summing to 1, "
                                 f"got {self.mode_powers!r}")


# ---------------------------------------------------------------- probes
def _radius2(n: int) -> np.ndarray:
    y, x = np.indices((n, n)) - n // 2
    return (y * y + x * x).astype(np.float64)


def make_probe_modes(probe: np.ndarray, powers) -> np.ndarray:
    """Orthogonal modes (K, n, n) with the given power fractions of the probe's power:
    mode 0 is the probe, mode k the probe times a low-order Hermite pattern (what a
    partially coherent focus looks like), Gram-Schmidt orthogonalised."""
    n = probe.shape[0]
    y, x = (np.indices((n, n)) - n / 2 + 0.5) / (n / 8)
    patterns = [np.ones((n, n)), x, y, x * y, x * x - y * y, x * (y * y - 1), y * (x * x - 1),
                x * x + y * y - 2]
    total = float(np.sum(np.abs(probe) ** 2))
    modes: list[np.ndarray] = []
    for k, frac in enumerate(powers):
        m = probe.astype(np.complex128) * patterns[k]
        for prev in modes:
            m = m - np.vdot(prev, m) / np.vdot(prev, prev) * prev
        modes.append(m * np.sqrt(frac * total / np.sum(np.abs(m) ** 2)))
    return np.stack(modes)


def make_probe(kind: str, n: int, diameter: float, defocus: float = 0.0) -> np.ndarray:
    """Unit-power probe (sum |P|^2 = 1), centred in an n x n window.

    airy: a focused beam, the inverse FFT of a circular pupil with ``defocus`` rad of
    quadratic phase at its edge (phase curvature -> structured probe, which helps probe
    retrieval). gaussian: FWHM ``diameter`` with ``defocus`` rad of curvature at r = FWHM.
    """
    if kind == "airy":
        pupil_radius = 1.22 * n / diameter
        rho2 = _radius2(n) / pupil_radius**2
        pupil = (rho2 <= 1.0) * np.exp(1j * defocus * rho2)
        probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
        # a soft aperture keeps the ring tails inside the window (no wrap-around)
        r = np.sqrt(_radius2(n)) / (0.4 * n)
        probe = probe * np.exp(-(r**8))
    elif kind == "gaussian":
        r2 = _radius2(n) / diameter**2
        probe = np.exp(-4 * np.log(2) * r2 / 2) * np.exp(1j * defocus * r2)
    else:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    probe = probe.astype(np.complex128)
    return probe / np.sqrt(np.sum(np.abs(probe) ** 2))


# ---------------------------------------------------------------- objects
def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur through the FFT (keeps built-in objects band-limited, no scipy need)."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (ky**2 + kx**2))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * g))


def _norm01(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _siemens(shape: tuple[int, int], spokes: int = 24) -> np.ndarray:
    y, x = np.indices(shape, dtype=np.float64)
    y -= shape[0] / 2
    x -= shape[1] / 2
    theta = np.arctan2(y, x)
    r = np.hypot(y, x)
    star = (np.sin(spokes / 2 * theta) > 0).astype(np.float64)
    star[r < 0.04 * min(shape)] = 0.5
    return _norm01(_smooth(star, 0.8))


def _cells(shape: tuple[int, int], count: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(20171121)  # fixed: the object does not depend on the seed
    count = count or max(8, shape[0] * shape[1] // 900)
    img = np.zeros(shape)
    for cy, cx, rad, val in zip(rng.uniform(0, shape[0], count), rng.uniform(0, shape[1], count),
                                rng.uniform(3, 14, count), rng.uniform(0.3, 1.0, count)):
        # each blob only on its own patch: large objects stay cheap
        y0, y1 = max(0, int(cy - 4 * rad)), min(shape[0], int(cy + 4 * rad) + 1)
        x0, x1 = max(0, int(cx - 4 * rad)), min(shape[1], int(cx + 4 * rad) + 1)
        y, x = np.ogrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1] += val * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rad**2))
    return _norm01(_smooth(img, 1.0))


def _rings(shape: tuple[int, int]) -> np.ndarray:
    r2 = (np.indices(shape, dtype=np.float64) - np.array(shape)[:, None, None] / 2) ** 2
    r = np.sqrt(r2.sum(axis=0))
    return _norm01(_smooth(0.5 + 0.5 * np.cos(2 * np.pi * r / (6 + 0.02 * r)), 0.7))


def _load_image(path: str, shape: tuple[int, int]) -> np.ndarray:
    """Grey image in [0, 1] (or a complex .npy array, returned unchanged) resized to shape."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"object image file not found: {path}")
    if file.suffix == ".npy":
        arr = np.load(file)
        if np.iscomplexobj(arr):
            if arr.shape != shape:
                raise ValueError(f"{path}: complex object shape {arr.shape} != needed {shape}")
            return arr
    else:
        import matplotlib.image as mpimg  # only needed for image files

        try:
            arr = np.asarray(mpimg.imread(file), dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{path}: cannot read as an image ({err})") from err
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=2)
    return _norm01(_resize(arr.astype(np.float64), shape))


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (pixel centres aligned), numpy only."""
    for axis, size in enumerate(shape):
        old = img.shape[axis]
        x = (np.arange(size) + 0.5) * old / size - 0.5
        lo = np.clip(np.floor(x).astype(int), 0, old - 1)
        hi = np.clip(lo + 1, 0, old - 1)
        w = np.clip(x - lo, 0.0, 1.0)
        shape_w = [1, 1]
        shape_w[axis] = size
        img = (np.take(img, lo, axis=axis) * (1 - w).reshape(shape_w)
               + np.take(img, hi, axis=axis) * w.reshape(shape_w))
    return img


def make_object(kind: str, shape: tuple[int, int], phase_max: float = 1.0,
                amplitude_min: float = 0.6) -> np.ndarray:
    """Complex transmission with amplitude in [amplitude_min, 1] and phase in [0, phase_max].

    ``mixed`` uses different patterns for amplitude (cells) and phase (Siemens star) so that
    crosstalk between them is visible; any other value that is not a built-in name is read
    as an image file (grey levels -> both amplitude and phase) or a complex .npy array.
    """
    builtin = {"siemens": (_siemens, _siemens), "cells": (_cells, _cells),
               "rings": (_rings, _rings), "mixed": (_cells, _siemens)}
    if kind == "flat":
        return np.ones(shape, dtype=np.complex128)
    if kind in builtin:
        amp_fn, phase_fn = builtin[kind]
        amp_img, phase_img = amp_fn(shape), phase_fn(shape)
    else:
        img = _load_image(kind, shape)
        if np.iscomplexobj(img):
            return img.astype(np.complex128)
        amp_img = phase_img = img
    amplitude = 1.0 - (1.0 - amplitude_min) * amp_img
    return amplitude * np.exp(1j * phase_max * phase_img)


# ---------------------------------------------------------------- scans
def scan_positions(kind: str, n_frames: int, step: float, jitter: float = 0.0,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame centres (y, x) in pixels, first n_frames of the pattern, min at 0."""
    if step <= 0:
        raise ValueError(f"scan step must be > 0 px (overlap too large?), got {step}")
    idx = np.arange(n_frames, dtype=np.float64)
    if kind == "raster":
        side = int(np.ceil(np.sqrt(n_frames)))
        pos = np.stack([idx // side, idx % side], axis=1) * step
    elif kind == "concentric":
        pts = [(0.0, 0.0)]
        ring = 1
        while len(pts) < n_frames:
            count = int(round(2 * np.pi * ring))
            ang = 2 * np.pi * np.arange(count) / count
            pts += list(zip(ring * step * np.sin(ang), ring * step * np.cos(ang)))
            ring += 1
        pos = np.asarray(pts[:n_frames])
    elif kind == "fermat":
        # r = c sqrt(n), theta = n * golden angle: one point per pi c^2 of area, so the
        # mean neighbour distance is about step for c = step / sqrt(pi).
        c = step / np.sqrt(np.pi)
        theta = idx * np.deg2rad(137.50776405)
        r = c * np.sqrt(idx + 0.5)
        pos = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    else:
        raise ValueError(f"scan must be one of {SCANS}, got {kind!r}")
    if jitter > 0:
        rng = rng or np.random.default_rng(0)
        pos = pos + rng.normal(0.0, jitter, pos.shape)
    return pos - pos.min(axis=0)


# ---------------------------------------------------------------- data
def simulate(config: SimulationConfig | None = None, frame_range: tuple[int, int] | None = None,
             gpu: bool = False, **overrides) -> PtychoData:
    """Simulate a far-field ptychography scan; returns data with the ground truth attached.

    ``frame_range=(start, stop)`` simulates only those frames (an MPI rank's share); the
    noise of frame j depends on (seed, j) alone, so shares agree with a whole-scan run.
    ``gpu=True`` computes the diffraction with CuPy (large benchmark scans); its noise is
    seeded per block of frames, so it matches the CPU simulation only without noise.
    """
    cfg = config or SimulationConfig()
    if overrides:
        cfg = SimulationConfig(**{**cfg.__dict__, **overrides})
    cfg.check()
    n = cfg.frame_size
    rng = np.random.default_rng(cfg.seed)
    step = (1.0 - cfg.overlap) * cfg.probe_diameter
    centres = scan_positions(cfg.scan, cfg.n_frames, step, cfg.jitter, rng)
    # top-left corners; whole pixels unless sub-pixel positions are asked for
    positions = centres.astype(np.float64) if cfg.subpixel else np.round(centres)
    margin = n // 8
    positions += margin
    obj_shape = (int(positions[:, 0].max()) + n + margin, int(positions[:, 1].max()) + n + margin)

    power = cfg.photons if cfg.photons is not None else 1e6
    probe = make_probe(cfg.probe, n, cfg.probe_diameter, cfg.probe_defocus) * np.sqrt(power)
    obj = make_object(cfg.object, obj_shape, cfg.phase_max, cfg.amplitude_min)

    mask = np.ones((n, n), dtype=bool)
    if cfg.bad_pixels > 0:
        mask &= rng.random((n, n)) >= cfg.bad_pixels
    if cfg.beamstop > 0:
        mask &= _radius2(n) > cfg.beamstop**2

    start, stop = (0, cfg.n_frames) if frame_range is None else frame_range
    if not 0 <= start <= stop <= cfg.n_frames:
        raise ValueError(f"frame_range {frame_range} outside 0..{cfg.n_frames}")
    modes = None if cfg.mode_powers is None else make_probe_modes(probe, cfg.mode_powers)
    if gpu and (cfg.subpixel or modes is not None):
        raise ValueError("gpu simulation supports whole-pixel, single-mode probes only "
                         "(drop subpixel / mode_powers or simulate on the CPU)")
    forward = _diffraction_gpu if gpu else _diffraction
    intensities = forward(obj, (probe if modes is None else modes).astype(np.complex64),
                          positions[start:stop], cfg, start)
    intensities *= mask  # a masked pixel carries no signal

    reported = positions[start:stop]
    extra_meta: dict = {}
    if cfg.position_error > 0:  # what a positioner with errors would have recorded
        err_rng = np.random.default_rng([cfg.seed, 7919])
        errors = err_rng.normal(0.0, cfg.position_error / np.sqrt(2), positions.shape)
        limit = np.array(obj_shape, dtype=np.float64) - n - 1
        reported = np.clip(positions + errors, 0.0, limit)[start:stop]
        extra_meta["true_positions"] = positions[start:stop].copy()
    # the experimenter's guess: a flat-phase Gaussian with the focus size (intensity FWHM)
    fwhm = cfg.probe_diameter * (0.42 if cfg.probe == "airy" else 1.0)
    guess = make_probe("gaussian", n, fwhm, 0.0) * np.sqrt(power)
    return PtychoData(
        intensities=intensities, positions=reported, mask=mask,
        energy_ev=cfg.energy_ev, distance_m=cfg.distance_m, detector_pixel_m=cfg.detector_pixel_m,
        probe_guess=guess.astype(np.complex64), truth_object=obj.astype(np.complex64),
        truth_probe=(probe if modes is None else modes[0]).astype(np.complex64),
        object_shape=obj_shape,
        meta={"simulation": dict(cfg.__dict__), "frames": (start, stop),
              "total_frames": cfg.n_frames, **extra_meta,
              **({} if modes is None else {"truth_probe_modes": modes.astype(np.complex64),
                                           "mode_powers": list(cfg.mode_powers or ())})})


SHIFT_PAD = 8  # px of object around a window that a sub-pixel Fourier shift may wrap


def object_windows(obj: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """(F, n, n) object windows O(r + p_j) for (y, x) positions p_j: whole-pixel crops,
    Fourier-shifted by the fractional part on a padded crop (exact for a band-limited
    object; the padding takes the wrap-around). Whole-pixel positions are plain crops."""
    whole = np.floor(positions).astype(int)
    frac = positions - whole
    if not np.any(frac):
        return np.stack([obj[y:y + n, x:x + n] for y, x in whole])
    pad = SHIFT_PAD
    padded = np.pad(obj, pad, mode="edge")
    m = n + 2 * pad
    crops = np.stack([padded[y:y + m, x:x + m] for y, x in whole])
    k = np.fft.fftfreq(m)
    ry = np.exp(2j * np.pi * np.outer(frac[:, 0], k))[:, :, None]
    rx = np.exp(2j * np.pi * np.outer(frac[:, 1], k))[:, None, :]
    moved = np.fft.ifft2(np.fft.fft2(crops) * ry * rx)
    return moved[:, pad:pad + n, pad:pad + n]


def _diffraction(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                 cfg: SimulationConfig, first: int) -> np.ndarray:
    """sum_k |FFT(P_k * O_j)|^2 (centred; one k for a coherent probe), Poisson-sampled per
    frame with seed (cfg.seed, j)."""
    from .ops_numpy import fft2

    modes = probe if probe.ndim == 3 else probe[None]
    n = modes.shape[-1]
    obj64 = obj.astype(np.complex64)
    out = np.empty((len(positions), n, n), dtype=np.float32)
    for j0 in range(0, len(positions), 64):  # blocks keep the temporaries small
        j1 = min(j0 + 64, len(positions))
        windows = object_windows(obj64, positions[j0:j1], n).astype(np.complex64)
        inten = np.zeros((j1 - j0, n, n), dtype=np.float32)
        for mode in modes:
            far = fft2(windows * mode, workers=os.cpu_count() or 1)
            inten += far.real**2 + far.imag**2
        inten = np.fft.fftshift(inten, axes=(-2, -1))
        if cfg.photons is not None:
            for j in range(j1 - j0):
                frame_rng = np.random.default_rng([cfg.seed, first + j0 + j])
                inten[j] = frame_rng.poisson(inten[j].astype(np.float64))
        out[j0:j1] = inten
    return out


def _diffraction_gpu(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                     cfg: SimulationConfig, first: int) -> np.ndarray:
    """Same forward model on the current CUDA device, in blocks of 1024 frames."""
    import cupy as cp

    from .ops_cupy import CupyOps

    ops, n = CupyOps(), probe.shape[0]
    obj_d, probe_d = cp.asarray(obj, dtype=cp.complex64), cp.asarray(probe)
    iy = cp.asarray(positions[:, 0].astype(np.int32))
    ix = cp.asarray(positions[:, 1].astype(np.int32))
    out = np.empty((len(positions), n, n), dtype=np.float32)
    for j0 in range(0, len(positions), 1024):
        j1 = min(j0 + 1024, len(positions))
        waves = ops.gather_product(obj_d, probe_d, iy[j0:j1], ix[j0:j1],
                                   cp.empty((j1 - j0, n, n), dtype=cp.complex64))
        far = cp.fft.fft2(waves, axes=(-2, -1), norm="ortho")
        inten = cp.fft.fftshift(cp.abs(far) ** 2, axes=(-2, -1))
        if cfg.photons is not None:
            rs = cp.random.RandomState(cfg.seed * 1000003 + first + j0)
            inten = rs.poisson(inten.astype(cp.float64)).astype(cp.float32)
        out[j0:j1] = cp.asnumpy(inten.astype(cp.float32))
    return out
