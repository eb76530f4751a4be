"""Decisions on searched cells: which cells are congruent in one direction (cmcR's
``decision_CMC``, original and High CMC), and how the two directions make one count (cmcR's
``decision_combineDirections``, or the sum / minimum of the two counts)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _kernels as K
from ._config import CMCConfig
from ._result import CellSearch

__all__ = ["Combined", "Decision", "combine_cmcr", "combined_count", "decide"]


@dataclass(frozen=True)
class Decision:
    """The congruent cells of one direction under each rule."""

    original: np.ndarray  # bool (n_theta, n_cells)
    high: np.ndarray  # bool (n_theta, n_cells)
    high_passed: bool
    theta_max: float  # NaN when High CMC failed or no mode


def decide(search: CellSearch, cfg: CMCConfig) -> Decision:
    """cmcR ``decision_CMC`` (original and High CMC) and ``calcMaxCMCTheta`` for one direction."""
    thetas, dy, dx, corr, present = search
    t_xy = cfg.translation_threshold_px
    t_th = cfg.rotation_threshold_deg
    t_c = cfg.correlation_threshold
    thetas = np.asarray(thetas, dtype=np.float64)
    original = K.original_cmc(dx, dy, thetas, corr, present, t_xy, t_th, t_c)
    cand = K.high_cmc_candidates(dx, dy, corr, present, t_xy, t_c)
    high = np.zeros_like(cand)
    counts = cand.sum(axis=1)
    if counts.max(initial=0) == 0:
        return Decision(original, high, False, math.nan)
    is_high = (counts > 0) & (counts >= counts.max() - cfg.tau)
    th_high = thetas[is_high]
    if th_high.max() - th_high.min() > t_th:
        return Decision(original, high, False, math.nan)
    rows = cand & is_high[:, None]
    c = np.where(rows, corr, -np.inf)
    best = c.max(axis=0)
    high = rows & (c == best[None, :]) & np.isfinite(best)[None, :]
    # calcMaxCMCTheta(highCMC_thresh = 1, thetaThresh, "minDistance")
    n_per = high.sum(axis=1)
    th_present = n_per > 0
    if not th_present.any():
        return Decision(original, high, True, math.nan)
    nmax = n_per.max()
    at_max = thetas[n_per == nmax]
    if np.any(np.diff(at_max) > t_th):
        return Decision(original, high, True, math.nan)
    near = thetas[th_present & (n_per >= nmax - 1)]
    dist = np.array([np.min(np.abs(at_max - t)) for t in near])
    if np.all(dist.max() > t_th):
        return Decision(original, high, True, math.nan)
    return Decision(original, high, True, float(np.median(at_max)))


class Combined(NamedTuple):
    """Two directions made one: the count, the cells it counts in each direction (bool
    (n_theta, n_cells)) and the modal rotation (degrees, NaN when undetermined)."""

    count: int
    congruent1: np.ndarray
    congruent2: np.ndarray
    theta: float


def combine_cmcr(
    d1: Decision, d2: Decision, thetas: np.ndarray, corr1: np.ndarray, corr2: np.ndarray,
    t_th: float,
) -> Combined:  # fmt: skip
    """cmcR ``decision_combineDirections`` (missingThetaDecision="fail", compareThetas=TRUE)."""
    n1 = int(d1.original.sum())
    n2 = int(d2.original.sum())
    fallback_first = n1 <= n2  # which.min: first on ties
    fallback = Combined(
        min(n1, n2),
        d1.original if fallback_first else np.zeros_like(d1.original),
        np.zeros_like(d2.original) if fallback_first else d2.original,
        math.nan,
    )
    t1, t2 = d1.theta_max, d2.theta_max
    if math.isnan(t1) or math.isnan(t2):
        return fallback
    for d, t in ((d1, t1), (d2, t2)):
        th_orig = np.broadcast_to(np.asarray(thetas)[:, None], d.original.shape)[d.original]
        if th_orig.size == 0 or abs(t - np.median(th_orig)) > t_th:
            return fallback
    if (np.sign(t1) == np.sign(t2) and abs(t1 + t2) > t_th) or abs(abs(t1) - abs(t2)) > t_th:
        return fallback
    th = np.asarray(thetas)[:, None]
    s1 = d1.high & (np.abs(th - t1) <= t_th)
    s2 = d2.high & (np.abs(th - t2) <= t_th)
    # a cell index counted once, in the direction where its correlation is higher
    c1 = np.where(s1, corr1, -np.inf).max(axis=0)
    c2 = np.where(s2, corr2, -np.inf).max(axis=0)
    any1 = s1.any(axis=0)
    any2 = s2.any(axis=0)
    count = int(np.count_nonzero(any1 | any2))
    keep1 = any1 & (~any2 | (c1 >= c2))
    keep2 = any2 & (~any1 | (c2 >= c1))
    return Combined(count, s1 & keep1[None, :], s2 & keep2[None, :], t1)


def combined_count(n1: int, n2: int, combine: str) -> int:
    """The count of two directions with ``n1`` and ``n2`` congruent cells: their minimum
    (``combine="min"``) or their sum (any other rule: the cells of the two scans are
    distinct, so the sum counts every cell congruent in either direction).

    Examples
    --------
    >>> combined_count(3, 5, "min"), combined_count(3, 5, "sum")
    (3, 8)
    """
    return min(n1, n2) if combine == "min" else n1 + n2
