"""Sub-pixel scan positions and their refinement.

A frame at position p = i + f (i whole pixels, |f| <= 1/2) is modelled as the probe
Fourier-shifted by f times the whole-pixel object window at i: P(r - f) O(r + i) is the
exit wave P(r) O(r + p) moved by f, which has the same far-field intensity. The shift is
a phase ramp on the probe's spectrum, separable in y and x, so a block of views costs one
batched inverse FFT and no per-view Python work.

Position refinement (Guizar-Sicairos & Fienup 2008, gradient form as in ptychoshelves):
the model error's gradient with respect to a frame's shift is the object gradient seen
through the probe, d(P O_j)/dp = P grad(O)_j; one Gauss-Newton step against the modulus
correction P_F(P O_j) - P O_j gives each frame's shift, bounded per iteration, and the
mean shift over all frames is removed (a common drift is the object moving, not the scan).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def split_positions(positions: np.ndarray, subpixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(whole-pixel windows int32, fractional remainders float64 in [-1/2, 1/2])."""
    whole = np.round(positions).astype(np.int32)
    frac = positions - whole if subpixel else np.zeros_like(positions)
    return whole, frac


def shift_ramps(xp, frac: np.ndarray, n: int):
    """Separable spectra ramps (F, n) for y and x: multiplying a spectrum by
    ry[:, :, None] * rx[:, None, :] moves the image by +frac (out(r) = in(r - f))."""
    k = np.fft.fftfreq(n)
    ry = np.exp(-2j * np.pi * np.outer(frac[:, 0], k)).astype(np.complex64)
    rx = np.exp(-2j * np.pi * np.outer(frac[:, 1], k)).astype(np.complex64)
    return xp.asarray(ry), xp.asarray(rx)


def ramp_block(ry, rx):
    """(F, n, n) phase ramps of a block of frames from the separable factors."""
    return ry[:, :, None] * rx[:, None, :]


def solve_shifts(a11, a22, a12, b1, b2, reg: float = 1e-3) -> np.ndarray:
    """Per-frame Gauss-Newton shift (dy, dx) from the 2x2 normal equations
    [[a11, a12], [a12, a22]] d = [b1, b2], Tikhonov-damped relative to the trace (frames
    over flat object regions carry no position information and must not move)."""
    a11, a22, a12, b1, b2 = (np.asarray(v, dtype=np.float64) for v in (a11, a22, a12, b1, b2))
    lam = reg * (np.median(a11 + a22) + 1e-30)
    a11, a22 = a11 + lam, a22 + lam
    det = a11 * a22 - a12 * a12
    dy = (a22 * b1 - a12 * b2) / det
    dx = (a11 * b2 - a12 * b1) / det
    return np.stack([dy, dx], axis=1)


def bound_steps(steps: np.ndarray, max_step: float) -> np.ndarray:
    """Scale each frame's step so that its length is at most max_step pixels."""
    length = np.hypot(steps[:, 0], steps[:, 1])
    scale = np.minimum(1.0, max_step / np.maximum(length, 1e-30))
    return steps * scale[:, None]


def position_error_rms(found: np.ndarray, truth: np.ndarray) -> float:
    """RMS distance (px) between two position sets after removing their mean offset."""
    d = np.asarray(found, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def save_positions_png(initial: np.ndarray, refined: np.ndarray, pixel_m: float,
                       path: str | Path, truth: np.ndarray | None = None) -> None:
    """Scan positions before/after refinement and the shift field (arrows, magnified),
    axes in micrometres."""
    from .plots import _pyplot

    plt = _pyplot()
    um = pixel_m * 1e6
    p0, p1 = np.asarray(initial) * um, np.asarray(refined) * um
    shift = p1 - p0
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    ax = axes[0]
    ax.scatter(p0[:, 1], p0[:, 0], s=8, c="0.6", label="initial")
    ax.scatter(p1[:, 1], p1[:, 0], s=8, c="C1", label="refined")
    if truth is not None:
        pt = np.asarray(truth) * um
        pt = pt - (pt - p1).mean(axis=0)
        ax.scatter(pt[:, 1], pt[:, 0], s=14, facecolors="none", edgecolors="C2",
                   label="true (mean-aligned)")
    ax.set_title("scan positions")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    length = np.hypot(shift[:, 0], shift[:, 1])
    q = ax.quiver(p0[:, 1], p0[:, 0], shift[:, 1], shift[:, 0], length, angles="xy",
                  cmap="viridis")
    fig.colorbar(q, ax=ax, label="shift [µm]")
    ax.set_title(f"shift field (refined - initial), RMS {np.sqrt(np.mean(length**2)):.3g} µm")
    for ax in axes:
        ax.set_xlabel("x [µm]")
        ax.set_ylabel("y [µm]")
        ax.set_aspect("equal")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
