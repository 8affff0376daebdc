"""Ground-truth errors of a reconstructed object, after removing ptychography's ambiguities.

A reconstruction is only defined up to a global phase, a linear phase ramp and a (subpixel)
shift of the object traded against the probe, and a scale of the amplitude. These are
removed before comparing, and only the well-illuminated region (illumination above
``threshold`` x its maximum) is compared.
"""
from __future__ import annotations

import numpy as np


def _phase_ramp(d: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Phase gradient (rad/px along y, x) of d = recon * conj(truth) inside region."""
    pair_y = region[1:, :] & region[:-1, :]
    pair_x = region[:, 1:] & region[:, :-1]
    ky = np.angle(np.sum((d[1:, :] * np.conj(d[:-1, :]))[pair_y]))
    kx = np.angle(np.sum((d[:, 1:] * np.conj(d[:, :-1]))[pair_x]))
    return float(ky), float(kx)


def _remove_ramp_and_phase(recon: np.ndarray, truth: np.ndarray, region: np.ndarray) -> np.ndarray:
    y, x = np.indices(recon.shape, dtype=np.float64)
    d = recon * np.conj(truth)
    ky, kx = _phase_ramp(d, region)
    out = recon * np.exp(-1j * (ky * y + kx * x))
    phi0 = np.angle(np.sum((out * np.conj(truth))[region]))
    return out * np.exp(-1j * phi0)


def _subpixel_shift(recon: np.ndarray, truth: np.ndarray, region: np.ndarray,
                    upsample: int = 40) -> tuple[float, float]:
    """Shift (dy, dx) that best maps truth onto recon: cross-correlation peak refined to
    1/upsample pixel by a local upsampled DFT (Guizar-Sicairos et al. 2008)."""
    # only the reconstruction is windowed: the truth is known everywhere, so the window's
    # own autocorrelation does not pull the peak towards zero shift
    w = region.astype(np.float64)
    a = np.fft.fft2((recon - np.mean(recon[region])) * w)
    b = np.fft.fft2(truth - np.mean(truth[region]))
    spec = a * np.conj(b)
    cc = np.abs(np.fft.ifft2(spec))
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape), dtype=np.float64)
    shape = np.array(cc.shape)
    peak = np.where(peak > shape / 2, peak - shape, peak)
    offsets = np.arange(-1.5 * upsample, 1.5 * upsample + 1) / upsample
    ky = np.fft.fftfreq(cc.shape[0])
    kx = np.fft.fftfreq(cc.shape[1])
    ker_y = np.exp(2j * np.pi * np.outer(peak[0] + offsets, ky))
    ker_x = np.exp(2j * np.pi * np.outer(kx, peak[1] + offsets))
    fine = np.abs(ker_y @ spec @ ker_x)
    iy, ix = np.unravel_index(np.argmax(fine), fine.shape)
    return float(peak[0] + offsets[iy]), float(peak[1] + offsets[ix])


def fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """img moved by (dy, dx) pixels (periodic, subpixel through the Fourier shift theorem)."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * dy + kx * dx)))


def compare_objects(recon: np.ndarray, truth: np.ndarray, illumination: np.ndarray,
                    threshold: float = 0.5, max_shift: float = 8.0) -> dict:
    """Phase RMS (rad), phase/amplitude/complex NRMSE, shift found, region size.

    The ambiguities are estimated (a phase ramp from neighbour phase differences, a shift
    from the cross-correlation peak), and an estimate is kept only if it lowers the phase
    error: on a poor reconstruction the correlation peak and the ramp are noise, and
    applying them would make the score worse than no registration at all. So the result
    is the best of: global phase only, ramp and phase, shift and ramp and phase, all on the
    same region (eroded by the shift). A shift beyond ``max_shift`` pixels is no match."""
    recon = np.asarray(recon, dtype=np.complex128)
    truth = np.asarray(truth, dtype=np.complex128)
    if recon.shape != truth.shape:
        raise ValueError(f"object shape {recon.shape} != truth shape {truth.shape}")
    region = illumination > threshold * illumination.max()
    if region.sum() < 16:
        raise ValueError("the well-illuminated region has fewer than 16 pixels")
    work = _remove_ramp_and_phase(recon, truth, region)
    dy, dx = _subpixel_shift(work, truth, region)
    if max(abs(dy), abs(dx)) > max_shift:  # no real match (e.g. an unconverged object)
        dy, dx = 0.0, 0.0
    still = _inner(region, 0.0, 0.0)
    candidates = [(_remove_phase(recon, truth, still), (0.0, 0.0), still),
                  (_remove_ramp_and_phase(recon, truth, still), (0.0, 0.0), still)]
    if (dy, dx) != (0.0, 0.0):
        inner = _inner(region, dy, dx)
        shifted = fourier_shift(recon, -dy, -dx)
        candidates.append((_remove_ramp_and_phase(shifted, truth, inner), (dy, dx), inner))
    scored = [(_errors(w, truth, where), shift, where) for w, shift, where in candidates]
    best, shift, where = min(scored, key=lambda item: item[0]["phase_rms"])
    return {**best, "shift": shift, "region_pixels": int(where.sum())}


def _inner(region: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """The region eroded by a shift, so that wrapped pixels are never compared."""
    pad = int(np.ceil(max(abs(dy), abs(dx)))) + 1
    inner = region.copy()
    inner[:pad, :] = inner[-pad:, :] = False
    inner[:, :pad] = inner[:, -pad:] = False
    return inner & np.roll(region, (int(round(-dy)), int(round(-dx))), axis=(0, 1))


def _remove_phase(recon: np.ndarray, truth: np.ndarray, region: np.ndarray) -> np.ndarray:
    return recon * np.exp(-1j * np.angle(np.sum((recon * np.conj(truth))[region])))


def _errors(work: np.ndarray, truth: np.ndarray, inner: np.ndarray) -> dict:
    """The error figures of a registered object against the truth inside ``inner``."""
    ra, ta = np.abs(work[inner]), np.abs(truth[inner])
    scale = float(np.sum(ra * ta) / max(np.sum(ra * ra), 1e-30))
    dphi = np.angle(work[inner] * np.conj(truth[inner]))
    tphase = np.angle(truth[inner])
    tphase = tphase - tphase.mean()
    complex_err = np.linalg.norm(scale * work[inner] - truth[inner]) / np.linalg.norm(truth[inner])
    return {
        "phase_rms": float(np.sqrt(np.mean(dphi**2))),
        "phase_nrmse": float(np.linalg.norm(dphi) / max(float(np.linalg.norm(tphase)), 1e-30)),
        "amplitude_nrmse": float(np.linalg.norm(scale * ra - ta) / max(float(np.linalg.norm(ta)), 1e-30)),
        "complex_nrmse": float(complex_err),
    }
