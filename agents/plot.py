"""Learning-curve PNG: training episode returns (raw and smoothed) and evaluation means."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def plot_learning_curve(episodes: Sequence[Sequence[float]], evals: Sequence[Sequence[float]],
                        path: Path, title: str, window: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if len(episodes):
        ep = np.asarray(episodes, float)
        ax.plot(ep[:, 0], ep[:, 1], color="tab:blue", alpha=0.25, lw=0.8, label="episode return")
        if len(ep) >= window:
            smooth = np.convolve(ep[:, 1], np.ones(window) / window, mode="valid")
            ax.plot(ep[window - 1:, 0], smooth, color="tab:blue", lw=1.8,
                    label=f"mean of last {window}")
    if len(evals):
        ev = np.asarray(evals, float)
        ax.errorbar(ev[:, 0], ev[:, 1], yerr=ev[:, 2], color="tab:red", marker="o", ms=4,
                    capsize=3, lw=1.2, label="greedy evaluation (mean +- std)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
