"""Mixed-state probes (Thibault & Menzel 2013): K mutually incoherent probe modes.

A partially coherent beam is modelled as K orthogonal modes whose far-field intensities
add; only the density matrix sum_k |P_k><P_k| is determined, so after each update the
modes are re-orthogonalised (eigenvectors of their K x K Gram matrix, strongest first),
which keeps that sum and makes the power fractions well defined.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def orthogonalize(xp, modes):
    """Modes (K, n, n) -> (orthogonal modes with the same density matrix, by decreasing
    power; the K x K unitary U with new = U @ old, which the exit waves must follow)."""
    k = modes.shape[0]
    flat = modes.reshape(k, -1)
    gram = np.asarray(xp.asnumpy(flat.conj() @ flat.T) if hasattr(xp, "asnumpy")
                      else flat.conj() @ flat.T, dtype=np.complex128)
    evals, evecs = np.linalg.eigh(gram)  # gram = V diag(e) V^H, ascending
    order = np.argsort(evals)[::-1]
    unitary = evecs[:, order].T.astype(np.complex64)
    new = (xp.asarray(unitary) @ flat).reshape(modes.shape).astype(xp.complex64)
    return new, unitary


def power_fractions(modes) -> list[float]:
    """Each mode's share of the total probe power."""
    powers = np.array([float((abs(m) ** 2).sum()) for m in modes])
    return (powers / max(powers.sum(), 1e-30)).tolist()


def initial_modes(probe: np.ndarray, k: int, fraction: float = 0.1) -> np.ndarray:
    """Mode 0 = the probe; mode m > 0 = the probe times a low-order Hermite pattern
    (y, x, yx, y^2 - x^2 ...) holding ``fraction`` of the power each, then orthogonalised
    (different spatial shapes let the modes separate during the reconstruction)."""
    n = probe.shape[0]
    y, x = (np.indices((n, n)) - n / 2 + 0.5) / (n / 4)
    shapes = [y, x, y * x, y * y - x * x, y * (x * x - 1), x * (y * y - 1)]
    power = float(np.sum(np.abs(probe) ** 2))
    out = [probe.astype(np.complex128) * np.sqrt(1.0 - fraction * (k - 1))]
    for m in range(1, k):
        extra = probe * shapes[(m - 1) % len(shapes)] * (1 + (m - 1) // len(shapes))
        for prev in out:  # Gram-Schmidt against the earlier modes
            extra = extra - np.vdot(prev, extra) / np.vdot(prev, prev) * prev
        extra *= np.sqrt(fraction * power / max(float(np.sum(np.abs(extra) ** 2)), 1e-30))
        out.append(extra)
    return np.stack(out).astype(np.complex64)


def save_modes_png(modes: np.ndarray, path: str | Path, pixel_m: float | None = None) -> None:
    """Amplitude of each probe mode, titled with its power fraction."""
    from .plots import _pyplot

    plt = _pyplot()
    fractions = power_fractions(modes)
    k = len(modes)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k + 0.5, 3.4), squeeze=False)
    n = modes.shape[-1]
    extent = None
    if pixel_m:
        half = n * pixel_m * 1e6 / 2
        extent = (-half, half, half, -half)
    for m, ax in enumerate(axes[0]):
        im = ax.imshow(np.abs(modes[m]), cmap="magma", extent=extent)
        ax.set_title(f"mode {m}: {100 * fractions[m]:.1f} % of power")
        if extent is not None:
            ax.set_xlabel("x [µm]")
            ax.set_ylabel("y [µm]")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("probe modes (amplitude)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
