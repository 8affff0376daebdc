"""PNGs of a dataset: a gallery of phase crops ordered by true error, and the measured
error against the true one (how much a trivial estimator already knows)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_gallery(phase: np.ndarray, truth_rms: np.ndarray, path: str | Path, max_images: int = 16) -> None:
    """Phase crops from best to worst true phase RMS, titled with it."""
    plt = _pyplot()
    order = np.argsort(truth_rms)
    picks = order[np.linspace(0, len(order) - 1, min(max_images, len(order))).astype(int)]
    cols = min(8, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        ax.imshow(phase[i], cmap="viridis")
        ax.set_title(f"{truth_rms[i]:.3f} rad", fontsize=8)
    fig.suptitle("reconstructed phase crops, by true phase RMS error", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_error_scatter(model_error: np.ndarray, truth_rms: np.ndarray, algorithm: np.ndarray,
                       path: str | Path) -> None:
    """Measured final model error vs true phase RMS, one colour per algorithm (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in sorted(set(algorithm)):
        sel = algorithm == name
        ax.scatter(model_error[sel], truth_rms[sel], s=14, label=name.upper())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured model error (final)")
    ax.set_ylabel("true phase RMS error [rad]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_prediction_png(true: np.ndarray, predicted: np.ndarray, baseline: np.ndarray,
                        path: str | Path) -> None:
    """Validation scans: predicted vs true log10 phase RMS, model and baseline."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="ideal")
    ax.scatter(true, baseline, s=12, marker="x", label="baseline (final model error)")
    ax.scatter(true, predicted, s=14, label="estimator")
    ax.set_xlabel("true log10 phase RMS [rad]")
    ax.set_ylabel("predicted log10 phase RMS [rad]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
