"""The default method's score: the raw score of the congruent cells and its logistic
calibration into ``Comparison.score``."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CAL_CENTER", "CAL_WIDTH", "calibrated", "raw_score"]

# Calibration of the shipped score: a logistic of the raw score. Measured raw scores with the
# default (benchmarks/eval_fadul.py): the 780 Fadul pairs KNM max 0.07, KM min 0.46;
# simulated sets bl.simulate.casings(6, 4): "medium" seeds 12 / 22 KNM max 0.04 / 0.05, KM
# min 0.25 / 0.22; "fadul-like" seeds 11 / 21 KNM max 0.03 / 0.06, KM min 0.64 / 0.65. The
# centre sits between the highest non-match (0.07) and the lowest match (0.22) of all,
# leaning to recall (a lead is reviewed by an examiner); the width sets how hard it
# saturates (its variance ratio says nothing about separation: use the count's or the raw
# score's).
#: Raw score at which the calibrated score is 0.5 (the default lead threshold).
CAL_CENTER = 0.14
#: Raw-score scale of the logistic: the score goes from 0.27 to 0.73 within +-CAL_WIDTH.
CAL_WIDTH = 0.02


def raw_score(n_cong: int, n_cells: int, corr_cong: np.ndarray) -> float:
    """Congruent share of the compared cells (both directions pooled) times their mean
    correlation: 0 when nothing is congruent, 1 for a perfect copy.

    Examples
    --------
    >>> import numpy as np
    >>> raw_score(10, 20, np.array([0.5, 0.7])), raw_score(0, 20, np.array([]))
    (0.3, 0.0)
    """
    if n_cells == 0 or n_cong == 0:
        return 0.0
    return float(n_cong / n_cells * np.mean(corr_cong))


def calibrated(raw: float) -> float:
    """``Comparison.score``: the logistic of the raw score, centre `CAL_CENTER`, width
    `CAL_WIDTH`.

    Examples
    --------
    >>> calibrated(CAL_CENTER), round(calibrated(0.0), 6), round(calibrated(0.46), 6)
    (0.5, 0.000911, 1.0)
    """
    return float(1.0 / (1.0 + math.exp(-(raw - CAL_CENTER) / CAL_WIDTH)))
