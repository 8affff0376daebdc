"""PNG figures a beamline scientist looks at first: object phase/amplitude and error curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _region(obj: np.ndarray, illumination: np.ndarray | None, threshold: float) -> np.ndarray:
    if illumination is None:
        return np.ones(obj.shape, bool)
    return illumination > threshold * illumination.max()


def _flat_phase(obj: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Phase with the global phase of the illuminated area removed (it is arbitrary)."""
    return np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[region]))))


def phase_rgb(obj: np.ndarray, illumination: np.ndarray | None = None,
              threshold: float = 0.05) -> np.ndarray:
    """The object phase as an H x W x 3 uint8 image (viridis; dark outside the lit area),
    e.g. for Gymnasium's ``render()``."""
    from matplotlib import colormaps

    region = _region(obj, illumination, threshold)
    phase = _flat_phase(obj, region)
    lo, hi = np.percentile(phase[region], [0.5, 99.5]) if region.any() else (-np.pi, np.pi)
    scaled = np.clip((phase - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = colormaps["viridis"](scaled)[..., :3]
    rgb[~region] *= 0.25
    return (rgb * 255).round().astype(np.uint8)


def _extent_um(shape: tuple[int, ...], pixel_m: float | None) -> tuple[list[float] | None, str]:
    if not pixel_m:
        return None, "pixels"
    h, w = shape[0] * pixel_m * 1e6, shape[1] * pixel_m * 1e6
    return [0.0, w, h, 0.0], "µm"


def save_object_png(obj: np.ndarray, illumination: np.ndarray | None, path: str | Path,
                    threshold: float = 0.05, *, pixel_m: float | None = None,
                    title: str | None = None, probe: np.ndarray | None = None,
                    truth: np.ndarray | None = None) -> dict:
    """Phase and amplitude of the object (axes in µm when ``pixel_m`` is known), the probe
    (amplitude, its phase as hue) and, for simulated data, the true phase beside the result.
    Colour limits come from the illuminated area only. Returns what was drawn (panel
    titles, axis unit, title) so callers and tests can check it without reading pixels."""
    plt = _pyplot()
    region = _region(obj, illumination, threshold)
    phase = _flat_phase(obj, region)
    amp = np.abs(obj)
    extent, unit = _extent_um(obj.shape, pixel_m)
    panels = [("object phase [rad]", phase, "viridis"), ("object amplitude |O| [a.u.]", amp, "gray")]
    if truth is not None and truth.shape == obj.shape:
        panels.append(("true phase [rad] (simulation)", _flat_phase(truth, region), "viridis"))
    n = len(panels) + (probe is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.6), squeeze=False)
    axes = axes[0]
    # one phase scale for result and truth: the truth's range when known
    plo, phi = np.percentile(panels[-1][1][region] if len(panels) == 3 else phase[region],
                             [0.5, 99.5])
    for ax, (label, img, cmap) in zip(axes, panels):
        lo, hi = (plo, phi) if "phase" in label else np.percentile(img[region], [0.5, 99.5])
        im = ax.imshow(np.where(region, img, np.nan), cmap=cmap, vmin=lo, vmax=hi, extent=extent)
        ax.set_title(label)
        ax.set_xlabel(f"x [{unit}]")
        ax.set_ylabel(f"y [{unit}]")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if probe is not None:
        _probe_panel(fig, axes[-1], probe, pixel_m)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    drawn = {"panels": [ax.get_title() for ax in axes], "unit": unit, "title": title}
    plt.close(fig)
    return drawn


def _probe_panel(fig, ax, probe: np.ndarray, pixel_m: float | None) -> None:
    """Probe amplitude as brightness, phase as hue (HSV), so focus and curvature both show."""
    from matplotlib.colors import hsv_to_rgb

    amp = np.abs(probe)
    hsv = np.stack([(np.angle(probe) + np.pi) / (2 * np.pi), np.ones(amp.shape),
                    amp / max(float(amp.max()), 1e-30)], axis=-1)
    extent, unit = _extent_um(probe.shape, pixel_m)
    ax.imshow(hsv_to_rgb(hsv), extent=extent)
    ax.set_title("probe (brightness |P|, hue phase)")
    ax.set_xlabel(f"x [{unit}]")
    ax.set_ylabel(f"y [{unit}]")


def save_errors_png(history: dict, path: str | Path, schedule: list[dict] | None = None,
                    title: str | None = None) -> None:
    """Fourier error and exit-wave change per iteration (log scale); below them the
    relaxation that was played (beta per iteration, DM / RAAR), with the agent's decision
    points when ``schedule`` is given."""
    plt = _pyplot()
    betas = np.asarray(history.get("beta", []), dtype=float)
    algorithms = list(history.get("algorithm", []))
    show_schedule = betas.size > 0
    fig, axes = plt.subplots(2 if show_schedule else 1, 1, figsize=(7, 6 if show_schedule else 4),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4] if show_schedule else [1]})
    ax = axes[0][0]
    for key in ("fourier_error", "exit_change"):
        values = np.asarray(history.get(key, []), dtype=float)
        if values.size:
            ax.semilogy(np.arange(1, values.size + 1), values, label=key)
    if schedule:
        ax.semilogy([e["start"] + e["iterations"] for e in schedule],
                    [e["model_error"] for e in schedule], "k.", ms=5,
                    label="model_error (agent's input)")
    ax.set_ylabel("relative error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    if show_schedule:
        sax = axes[1][0]
        its = np.arange(1, betas.size + 1)
        for name, colour in (("dm", "tab:blue"), ("raar", "tab:orange")):
            sel = np.array([a == name for a in algorithms[:betas.size]], dtype=bool)
            if sel.any():
                sax.scatter(its[sel], betas[sel], s=8, color=colour, label=name.upper())
        sax.step(its, betas, where="mid", color="0.6", lw=0.8, zorder=0)
        for entry in schedule or []:
            sax.axvline(entry["start"] + 0.5, color="0.85", lw=0.6, zorder=-1)
        sax.set_ylabel("beta")
        sax.set_ylim(0, 1.05)
        sax.legend(loc="lower right", fontsize=8,
                   title="agent schedule" if schedule else None, title_fontsize=8)
        sax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
