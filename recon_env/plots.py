"""PNG figures a beamline scientist looks at first: object phase/amplitude and error curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_object_png(obj: np.ndarray, illumination: np.ndarray | None, path: str | Path,
                    threshold: float = 0.05) -> None:
    """Phase and amplitude side by side; colour limits from the illuminated area only."""
    plt = _pyplot()
    region = np.ones(obj.shape, bool) if illumination is None else (
        illumination > threshold * illumination.max())
    phase = np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[region]))))
    amp = np.abs(obj)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, img, title, cmap in ((axes[0], phase, "phase [rad]", "viridis"),
                                 (axes[1], amp, "amplitude", "gray")):
        lo, hi = np.percentile(img[region], [0.5, 99.5])
        shown = np.where(region, img, np.nan)
        im = ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_errors_png(history: dict, path: str | Path) -> None:
    """Fourier error and exit-wave change per iteration (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("fourier_error", "exit_change"):
        values = np.asarray(history.get(key, []), dtype=float)
        if values.size:
            ax.semilogy(np.arange(1, values.size + 1), values, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
