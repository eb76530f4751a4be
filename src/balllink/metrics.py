"""Measures of quality for scores over known-match (KM) and known-non-match (KNM) pairs.

These are the figures DESIGN.md asks every method to report: ROC AUC, error rates at a
threshold, and the variance ratio used by the CMC literature to compare score separations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = ["ErrorRates", "error_rates", "roc_auc", "variance_ratio"]


def _split(scores, same) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if scores.shape != same.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({same.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity; drop or fill them first")
    return scores[same], scores[~same]


def roc_auc(scores, same) -> float:
    """Area under the ROC curve of ``scores`` for telling KM from KNM pairs.

    Computed exactly as the Mann-Whitney statistic (ties count one half).

    Parameters
    ----------
    scores : array_like of float
        One score per pair, higher = more similar.
    same : array_like of bool
        True for a known match (same firearm).

    Returns
    -------
    float
        1.0 for complete separation, 0.5 for chance.

    Examples
    --------
    >>> roc_auc([0.9, 0.8, 0.1, 0.3], [True, True, False, False])
    1.0
    """
    km, knm = _split(scores, same)
    if km.size == 0 or knm.size == 0:
        raise ValueError("roc_auc needs at least one KM and one KNM pair")
    ranks = rankdata(np.concatenate([km, knm]))
    u = ranks[: km.size].sum() - km.size * (km.size + 1) / 2.0
    return float(u / (km.size * knm.size))


def variance_ratio(scores, same) -> float:
    """Between-group over within-group variability of scores (KM vs KNM).

    ``V = sum_g n_g (mean_g - mean)^2 / sum_g (n_g - 1) var_g`` over the two groups
    g in {KM, KNM}, the statistic the CMC literature (Zemmels et al. 2022, cmcR) uses to
    compare how well methods separate matches from non-matches. Larger is better.

    When neither group varies, V is infinite if the two groups differ and undefined (NaN)
    if every score is the same.

    Examples
    --------
    >>> round(variance_ratio([10, 12, 0, 1, 2], [True, True, False, False, False]), 2)
    30.0
    """
    km, knm = _split(scores, same)
    if km.size < 2 or knm.size < 2:
        raise ValueError("variance_ratio needs at least two KM and two KNM pairs")
    if np.ptp(km) == 0 and np.ptp(knm) == 0:
        # no spread: decided on the values, as the rounding of the means of constant
        # groups would give an arbitrary ratio of two tiny numbers
        return float("inf") if km[0] != knm[0] else float("nan")
    grand = np.concatenate([km, knm]).mean()
    between = km.size * (km.mean() - grand) ** 2 + knm.size * (knm.mean() - grand) ** 2
    within = (km.size - 1) * km.var(ddof=1) + (knm.size - 1) * knm.var(ddof=1)
    return float(between / within)


@dataclass(frozen=True)
class ErrorRates:
    """False-positive and false-negative counts and rates at one threshold."""

    threshold: float
    false_positives: int
    false_negatives: int
    n_km: int
    n_knm: int

    @property
    def fpr(self) -> float:
        return self.false_positives / self.n_knm if self.n_knm else 0.0

    @property
    def fnr(self) -> float:
        return self.false_negatives / self.n_km if self.n_km else 0.0


def error_rates(scores, same, threshold: float) -> ErrorRates:
    """Errors when pairs with ``score >= threshold`` are called matches.

    ``threshold`` may be infinite (``inf``: nothing is called a match), not NaN. With no
    KNM (KM) pair the false-positive (false-negative) rate is 0.

    Examples
    --------
    >>> r = error_rates([0.9, 0.4, 0.6, 0.1], [True, True, False, False], 0.5)
    >>> r.false_positives, r.false_negatives, r.fpr
    (1, 1, 0.5)
    """
    km, knm = _split(scores, same)
    if np.isnan(threshold):
        raise ValueError("threshold is NaN: every comparison with it is false; give a number")
    return ErrorRates(
        threshold=float(threshold),
        false_positives=int(np.count_nonzero(knm >= threshold)),
        false_negatives=int(np.count_nonzero(km < threshold)),
        n_km=int(km.size),
        n_knm=int(knm.size),
    )
