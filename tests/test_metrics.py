"""balllink.metrics on planted scores whose answers are computed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from balllink.metrics import ErrorRates, error_rates, roc_auc, variance_ratio


def _auc_by_pairs(km, knm):
    """AUC from its definition: P(KM score > KNM score) + P(equal) / 2 over all pairs."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(km, knm)]
    return sum(wins) / len(wins)


# ------------------------------------------------------------------------------ roc_auc
def test_roc_auc_of_separated_reversed_and_tied_scores():
    same = [True, True, True, False, False]
    assert roc_auc([5, 4, 3, 2, 1], same) == 1.0  # every KM above every KNM
    assert roc_auc([1, 2, 3, 4, 5], same) == 0.0  # every KM below every KNM
    assert roc_auc([7, 7, 7, 7, 7], same) == 0.5  # all tied: each pair counts one half


def test_roc_auc_hand_computed_with_a_tie():
    # KM (3, 1, 2), KNM (2, 0): pairs 3>2, 3>0, 1<2, 1>0, 2=2, 2>0 -> (4 + 0.5) / 6
    assert roc_auc([3, 1, 2, 2, 0], [True, True, True, False, False]) == pytest.approx(0.75)


def test_roc_auc_equals_the_pair_count_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    same = rng.random(60) < 0.3
    assert roc_auc(scores, same) == pytest.approx(_auc_by_pairs(scores[same], scores[~same]))


def test_roc_auc_refuses_what_it_cannot_rank():
    with pytest.raises(ValueError, match="at least one KM and one KNM"):
        roc_auc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([1.0, np.nan], [True, False])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([1.0, 2.0, 3.0], [True, False])


# ------------------------------------------------------------------------ variance_ratio
def test_variance_ratio_hand_computed():
    # KM (4, 6): mean 5; KNM (0, 2): mean 1; grand mean 3.
    # between = 2 (5 - 3)^2 + 2 (1 - 3)^2 = 16; within = 1 * 2 + 1 * 2 = 4 -> 4
    assert variance_ratio([4, 6, 0, 2], [True, True, False, False]) == pytest.approx(4.0)
    # unequal groups: KM (10, 12), KNM (0, 1, 2): between 2*36 + 3*16 = 120, within 2 + 2
    assert variance_ratio([10, 12, 0, 1, 2], [True, True, False, False, False]) == 30.0


def test_variance_ratio_is_invariant_to_units_and_grows_with_separation():
    rng = np.random.default_rng(1)
    same = np.r_[np.ones(20, bool), np.zeros(50, bool)]
    scores = np.where(same, 2.0, 0.0) + rng.normal(size=70)
    v = variance_ratio(scores, same)
    assert variance_ratio(3.0 * scores - 7.0, same) == pytest.approx(v)
    assert variance_ratio(scores + np.where(same, 1.0, 0.0), same) > v
    assert variance_ratio(rng.permutation(scores), same) < v


def test_variance_ratio_without_spread_inside_the_groups():
    same = [True, True, False, False]
    assert variance_ratio([0.1, 0.1, 0.3, 0.3], same) == np.inf  # apart, no spread
    assert variance_ratio([0.1] * 3 + [0.3] * 4, [True] * 3 + [False] * 4) == np.inf
    # every score equal: no separation at all, 0 / 0 (this used to report inf, or for
    # groups of 3 and 4 the ratio of two rounding errors, 5.33)
    assert np.isnan(variance_ratio([0.1, 0.1, 0.1, 0.1], same))
    assert np.isnan(variance_ratio([0.1] * 7, [True] * 3 + [False] * 4))
    with pytest.raises(ValueError, match="two KM and two KNM"):
        variance_ratio([1.0, 2.0, 3.0], [True, False, False])


# --------------------------------------------------------------------------- error_rates
def test_error_rates_hand_computed():
    scores = [0.9, 0.4, 0.6, 0.1, 0.5]
    same = [True, True, False, False, False]
    r = error_rates(scores, same, 0.5)
    # KM 0.4 < 0.5 is missed; KNM 0.6 and 0.5 (>= is a match) are false leads
    assert r == ErrorRates(0.5, false_positives=2, false_negatives=1, n_km=2, n_knm=3)
    assert r.fpr == pytest.approx(2 / 3) and r.fnr == 0.5


def test_error_rates_at_the_extremes_and_the_equal_error_rate():
    km, knm = [0.9, 0.7, 0.3], [0.8, 0.2, 0.1]
    scores, same = km + knm, [True] * 3 + [False] * 3
    none = error_rates(scores, same, np.inf)  # nothing called a match
    assert (none.false_positives, none.false_negatives) == (0, 3)
    every = error_rates(scores, same, -np.inf)
    assert (every.false_positives, every.false_negatives) == (3, 0)
    # sweeping the threshold, FNR rises and FPR falls; they are equal (the equal error
    # rate, 1/3) exactly for thresholds in (0.3, 0.7]: KM 0.3 missed, KNM 0.8 a false lead
    grid = np.linspace(0, 1, 101)
    rates = [error_rates(scores, same, t) for t in grid]
    assert all(np.diff([r.fnr for r in rates]) >= 0) and all(np.diff([r.fpr for r in rates]) <= 0)
    equal = [t for t, r in zip(grid, rates, strict=True) if r.fpr == r.fnr]
    assert equal and all(0.3 < t <= 0.7 for t in equal)
    assert {error_rates(scores, same, t).fpr for t in equal} == {1 / 3}


def test_error_rates_with_one_group_missing_and_a_nan_threshold():
    only_km = error_rates([0.2, 0.8], [True, True], 0.5)
    assert only_km.n_knm == 0 and only_km.fpr == 0.0 and only_km.fnr == 0.5
    with pytest.raises(ValueError, match="threshold is NaN"):
        error_rates([0.2, 0.8], [True, False], np.nan)
