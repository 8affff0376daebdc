"""A small Gaussian-process Bayesian optimiser of one bounded parameter (NumPy/SciPy only).

The published practice for tuning a reconstruction's relaxation (Cao et al., Sci. Rep. 2022;
PtyRAD's hypertune) is BO with one full reconstruction per trial; ``agent compare`` uses
this as baseline (d). GP with a squared-exponential kernel on [0, 1] (parameter rescaled),
observations standardised, length scale chosen by the marginal likelihood over a short grid,
a small noise term (reconstructions are deterministic but rugged), expected improvement
maximised on a dense grid. Three space-filling starting points, then one point per trial.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats

LENGTH_SCALES = (0.05, 0.1, 0.2, 0.4, 0.8)
NOISE = 1e-3  # variance of standardised observations


def _kernel(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    return np.exp(-0.5 * ((a[:, None] - b[None, :]) / length) ** 2)


def gp_posterior(x: np.ndarray, y: np.ndarray, query: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation at ``query`` (x in [0, 1])."""
    mean, scale = float(y.mean()), float(y.std()) or 1.0
    z = (y - mean) / scale
    best = None
    for length in LENGTH_SCALES:  # type-II maximum likelihood over a grid
        k = _kernel(x, x, length) + NOISE * np.eye(x.size)
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        loglik = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
        if best is None or loglik > best[0]:
            best = (loglik, length, chol, alpha)
    assert best is not None  # LENGTH_SCALES is not empty
    _, length, chol, alpha = best
    ks = _kernel(query, x, length)
    mu = ks @ alpha
    v = np.linalg.solve(chol, ks.T)
    var = np.maximum(1.0 - (v * v).sum(axis=0), 1e-12)
    return mean + scale * mu, scale * np.sqrt(var)


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI for minimisation."""
    gap = best - mu
    z = gap / sd
    return gap * stats.norm.cdf(z) + sd * stats.norm.pdf(z)


def minimize_scalar_bo(objective: Callable[[float], float], lo: float, hi: float, trials: int,
                       rng: np.random.Generator) -> tuple[float, float]:
    """Minimise ``objective`` on [lo, hi] in ``trials`` evaluations; (best x, best value)."""
    if trials < 1 or not lo < hi:
        raise ValueError(f"BO needs trials >= 1 and lo < hi, got {trials}, [{lo}, {hi}]")
    start = min(trials, 3)
    unit = list((np.arange(start) + rng.uniform(0.2, 0.8)) / start)  # one per third
    xs: list[float] = []
    ys: list[float] = []
    grid = np.linspace(0.0, 1.0, 401)
    for t in range(trials):
        if t < start:
            u = unit[t]
        else:
            mu, sd = gp_posterior(np.asarray(xs), np.asarray(ys), grid)
            ei = expected_improvement(mu, sd, min(ys))
            ei[np.isin(np.round(grid, 6), np.round(xs, 6))] = -1.0  # no repeats
            u = float(grid[int(np.argmax(ei))])
        xs.append(u)
        value = float(objective(lo + u * (hi - lo)))
        ys.append(value if math.isfinite(value) else max(ys, default=0.0) + 1.0)
    i = int(np.argmin(ys))
    return lo + xs[i] * (hi - lo), ys[i]
