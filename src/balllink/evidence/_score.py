"""The score model's curve: log10 LR of the continuous raw score from kernel density
estimates of the same-source and different-source scores (`lir.algorithms.kde`), kept as
values on a fixed grid so that a saved model needs no refit."""

from __future__ import annotations

import numpy as np

__all__ = ["GRID", "MIN_BANDWIDTH", "bandwidths", "kde_curve", "kde_tail"]

#: Raw scores at which a score model keeps its curve (the raw score lies in [0, 1]).
GRID = np.round(np.linspace(0.0, 1.0, 401), 6)


#: Smallest kernel width: a class whose scores are all equal (every different-source pair
#: at 0, say) would get lir's stand-in standard deviation of 1 from Silverman's rule.
MIN_BANDWIDTH = 0.005


def bandwidths(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Silverman's rule per class (labels 0, 1), at least `MIN_BANDWIDTH`.

    Examples
    --------
    >>> bandwidths(np.r_[np.zeros(50), np.linspace(0.3, 0.7, 50)], np.r_[np.zeros(50), np.ones(50)])[0]
    0.005
    """
    out = []
    x = np.asarray(x, float).ravel()
    for label in (0, 1):
        v = x[np.asarray(y) == label]
        sd = float(np.std(v)) if len(v) else 0.0
        out.append(max(MIN_BANDWIDTH, (4.0 / 3.0 * sd**5 / max(len(v), 1)) ** 0.2))
    return out[0], out[1]


def _fit(raw: np.ndarray, same: np.ndarray):
    from lir.algorithms.kde import KDECalibrator

    return KDECalibrator(bandwidth=bandwidths).fit(raw.astype(float), same.astype(int))


def kde_curve(raw, same, weights=None) -> np.ndarray:
    """log10 LR at `GRID` from the raw scores of labelled pairs (``weights``: integer
    multiplicities from the firearm resampling).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> raw = np.r_[rng.normal(0.5, 0.1, 300), rng.normal(0.05, 0.02, 3000)]
    >>> same = np.r_[np.ones(300, bool), np.zeros(3000, bool)]
    >>> c = kde_curve(raw, same)
    >>> bool(c[GRID == 0.5][0] > 3 and c[GRID == 0.05][0] < -2)
    True
    """
    raw, same = np.asarray(raw, float), np.asarray(same, bool)
    if weights is not None:
        reps = np.asarray(weights, int)
        raw, same = np.repeat(raw, reps), np.repeat(same, reps)
    ok = np.isfinite(raw)
    raw, same = raw[ok], same[ok]
    if same.all() or not same.any():
        raise ValueError("a score model needs same-source and different-source pairs")
    return np.asarray(_fit(raw, same).transform(GRID), float)


def kde_tail(raw, same) -> np.ndarray:
    """Probability mass of the different-source score density in each `GRID` cell (the
    cell of a grid value spans half-way to its neighbours; the ends take the tails)."""
    from scipy import stats

    raw, same = np.asarray(raw, float), np.asarray(same, bool)
    x0 = raw[~same & np.isfinite(raw)]
    h = bandwidths(x0, np.zeros(len(x0)))[0]
    edges = np.r_[-np.inf, (GRID[1:] + GRID[:-1]) / 2, np.inf]
    cdf = stats.norm.cdf((edges[None, :] - x0[:, None]) / h).mean(axis=0)
    return np.diff(cdf)
