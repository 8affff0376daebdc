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


def plot_comparison(curves: dict[str, list[tuple[list[int], list[float]]]],
                    phases: dict[str, np.ndarray | None], truth_phase: np.ndarray,
                    path: Path) -> Path:
    """Left: model error vs iteration (median over scans, 25-75 % band); right: the final
    phase of the first held-out scan for each policy beside the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    fig = plt.figure(figsize=(4.2 + 2.4 * (len(names) + 1), 4.2), dpi=110)
    grid = fig.add_gridspec(1, len(names) + 2, width_ratios=[1.8] + [1] * (len(names) + 1))
    ax = fig.add_subplot(grid[0, 0])
    for name in names:
        runs = [c for c in curves[name] if len(c[1]) > 1]
        length = min(len(c[1]) for c in runs)
        arr = np.log10(np.array([c[1][:length] for c in runs]))
        it = np.asarray(runs[0][0][:length])
        ax.plot(it, 10 ** np.median(arr, axis=0), lw=1.6, marker=".", label=name)
        ax.fill_between(it, 10 ** np.percentile(arr, 25, axis=0),
                        10 ** np.percentile(arr, 75, axis=0), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("model error (Fourier error of the estimate)")
    ax.set_title(f"held-out scans (n={len(curves[names[0]])}), median and 25-75 %", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    images = [("truth", truth_phase)] + [(n, phases[n]) for n in names]
    lo, hi = float(np.min(truth_phase)), float(np.max(truth_phase))
    for i, (name, img) in enumerate(images):
        axi = fig.add_subplot(grid[0, i + 1])
        if img is not None:
            axi.imshow(img - np.median(img) + np.median(truth_phase), cmap="gray", vmin=lo, vmax=hi)
        axi.set_title(name, fontsize=7)
        axi.axis("off")
    fig.suptitle("final object phase, first held-out scan (right)", fontsize=8, x=0.7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_method_comparison(rows: list[dict], runs: dict[str, list], reference: str, path: Path,
                           title: str) -> Path:
    """Left: mean true phase RMS with its 95 % interval per method, every scan as a dot;
    right: each scan's true phase RMS against the best fixed setting's (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110,
                                  gridspec_kw={"width_ratios": [1.6, 1]})
    names = [r["method"] for r in rows]
    y = np.arange(len(names))[::-1]
    for yi, row in zip(y, rows):
        values = [r.phase_rms if np.isfinite(r.phase_rms) else 1.0 for r in runs[row["method"]]]
        ax.scatter(values, np.full(len(values), yi) + np.linspace(-0.2, 0.2, len(values)),
                   s=8, alpha=0.4, color="grey")
        ax.errorbar(row["mean_phase_rms"], yi,
                    xerr=[[row["mean_phase_rms"] - row["ci95_low"]],
                          [row["ci95_high"] - row["mean_phase_rms"]]],
                    fmt="o", color="C3" if row["method"].startswith("agent") else "C0",
                    capsize=4, lw=2)
    ax.set_yticks(y, [f"{n}\nmodel err {r['geomean_model_error']:.2g}"
                      for n, r in zip(names, rows)], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("true phase RMS after registration (rad); mean and 95 % CI, dots: scans")
    ax.grid(alpha=0.3, which="both", axis="x")
    ref = np.array([r.phase_rms for r in runs[reference]])
    for i, name in enumerate(n for n in names if n.startswith("agent") or n.startswith("(d)")):
        other = np.array([r.phase_rms if np.isfinite(r.phase_rms) else 1.0 for r in runs[name]])
        ax2.scatter(ref, other, s=14, label=name, marker="os^vDP*x"[i % 8])
    lim = [min(ref.min(), 0.01), 1.0]
    ax2.plot(lim, lim, "k-", lw=0.8)
    ax2.plot(lim, [1.1 * v for v in lim], "k:", lw=0.8, label="+10 %")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel(f"{reference}: true phase RMS (rad)")
    ax2.set_ylabel("method: true phase RMS (rad)")
    ax2.set_title("per scan vs best fixed (above the line: worse)", fontsize=9)
    ax2.legend(fontsize=6)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(f"agent compare: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_true_error_curves(panels: list[tuple[str, dict[str, list[list[float]]]]], path: Path,
                           title: str) -> Path:
    """One panel per scan: true phase RMS after registration vs iteration for each method
    (curves as [iteration, error] pairs); the dotted line is the first curve's final error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=100,
                             squeeze=False)
    for ax, (name, curves) in zip(axes.flat, panels):
        for i, (label, curve) in enumerate(curves.items()):
            if not curve:
                continue
            pts = np.asarray(curve, float)
            ax.plot(pts[:, 0], pts[:, 1], marker=".", lw=1.4, label=label)
            if i == 0:
                ax.axhline(pts[-1, 1], color="C0", ls=":", lw=0.9)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("true phase RMS (rad)")
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
