"""LR models on planted distributions (issue 13): data drawn from known binomial /
beta-binomial / normal laws must give LRs close to the analytic ones, a perfectly
separating set must give bounded LRs, inputs unlike the training data are flagged, and the
threshold's predicted false-lead rate matches what the planted law produces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import balllink as bl
from balllink.evidence import LRModel, ModelMismatchError, Pairs

LN10 = math.log(10)


def planted(rng, *, n_guns=40, same_per_gun=30, diff_per_gun=300, n_cells=50, same_law, diff_law):
    """Pairs whose counts come from the given scipy frozen-law factories ``law(n)``."""
    rows = {"k": [], "n": [], "same": [], "fa": [], "fb": []}
    for g in range(n_guns):
        for same, m, law in ((True, same_per_gun, same_law), (False, diff_per_gun, diff_law)):
            n = np.full(m, n_cells)
            rows["k"] += list(law(n_cells).rvs(size=m, random_state=rng))
            rows["n"] += list(n)
            rows["same"] += [same] * m
            rows["fa"] += [f"g{g}"] * m
            rows["fb"] += [f"g{g}" if same else f"h{g}"] * m
    return Pairs.build(k=rows["k"], n=rows["n"], same=rows["same"], firearm_a=rows["fa"],
                       firearm_b=rows["fb"])  # fmt: skip


def _check_against(model, truth_llr, n_cells, tol):
    ks = np.arange(n_cells + 1)
    got = model.evaluate(ks, np.full(len(ks), n_cells)).log10_lr
    lo, hi = model.bounds
    inside = (truth_llr > lo + 0.3) & (truth_llr < hi - 0.3)
    assert inside.sum() >= 5, "the planted laws leave too few counts inside the bounds"
    err = np.abs(got[inside] - truth_llr[inside])
    assert err.max() < tol, (
        f"largest |log10 LR - analytic| = {err.max():.3f} at k={ks[inside][err.argmax()]}"
    )
    # outside the bounds the LR is held at the bound, never beyond
    assert np.all(got >= lo - 1e-9) and np.all(got <= hi + 1e-9)


def test_count_model_recovers_beta_binomial_vs_binomial():
    rng = np.random.default_rng(11)
    same = lambda n: stats.betabinom(n, 6.0, 6.0)  # noqa: E731
    diff = lambda n: stats.binom(n, 0.08)  # noqa: E731
    pairs = planted(rng, same_law=same, diff_law=diff)
    model = LRModel.fit(pairs, "count", different="binomial", n_boot=20)
    ks = np.arange(51)
    truth = (same(50).logpmf(ks) - diff(50).logpmf(ks)) / LN10
    _check_against(model, truth, 50, tol=0.25)
    [[_, _, rho_d]] = model.params["point"]["different"]
    assert rho_d == 0.0  # binomial: no overdispersion
    [[_, mu, rho]] = model.params["point"]["same"]  # one component: BIC keeps the single law
    assert mu == pytest.approx(0.5, abs=0.02) and rho == pytest.approx(1 / 13, abs=0.02)


def test_count_model_recovers_a_mixture_of_same_source_populations():
    """Same-source pairs from two populations (crisp marks, poor marks): the default
    two-component law gets the LR right where one beta-binomial law cannot."""
    rng = np.random.default_rng(21)
    crisp, poor = stats.betabinom(50, 40.0, 3.0), stats.betabinom(50, 3.0, 9.0)
    diff = lambda n: stats.binom(n, 0.03)  # noqa: E731

    class Mix:
        def rvs(self, size, random_state):
            pick = random_state.random(size) < 0.6
            return np.where(pick, crisp.rvs(size=size, random_state=random_state),
                            poor.rvs(size=size, random_state=random_state))  # fmt: skip

    pairs = planted(rng, same_law=lambda n: Mix(), diff_law=diff)
    ks = np.arange(51)
    truth = (np.log(0.6 * crisp.pmf(ks) + 0.4 * poor.pmf(ks)) - diff(50).logpmf(ks)) / LN10
    mixed = LRModel.fit(pairs, "count", n_boot=0)
    assert len(mixed.params["point"]["same"]) == 2
    _check_against(mixed, truth, 50, tol=0.3)
    single = LRModel.fit(pairs, "count", same="betabinom", n_boot=0)
    with pytest.raises(AssertionError, match="largest"):
        _check_against(single, truth, 50, tol=0.3)


def test_count_model_recovers_two_beta_binomials():
    rng = np.random.default_rng(12)
    same = lambda n: stats.betabinom(n, 9.0, 5.0)  # noqa: E731
    diff = lambda n: stats.betabinom(n, 0.6, 12.0)  # noqa: E731
    pairs = planted(rng, same_law=same, diff_law=diff)
    model = LRModel.fit(pairs, "count", n_boot=20)
    ks = np.arange(51)
    truth = (same(50).logpmf(ks) - diff(50).logpmf(ks)) / LN10
    _check_against(model, truth, 50, tol=0.25)


def test_score_model_recovers_normal_lr():
    rng = np.random.default_rng(13)
    n1, n0 = 2000, 20000
    raw = np.r_[rng.normal(0.45, 0.08, n1), rng.normal(0.2, 0.08, n0)]
    same = np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
    guns = np.arange(n1 + n0) % 50
    pairs = Pairs.build(k=np.zeros(n1 + n0, int), n=np.full(n1 + n0, 40), raw=raw, same=same,
                        firearm_a=guns, firearm_b=np.where(same, guns, guns + 100))  # fmt: skip
    model = LRModel.fit(pairs, "score", n_boot=10)
    x = np.linspace(0.15, 0.5, 15)
    truth = (stats.norm(0.45, 0.08).logpdf(x) - stats.norm(0.2, 0.08).logpdf(x)) / LN10
    got = model.evaluate(np.zeros(15, int), np.full(15, 40), x).log10_lr
    assert np.abs(got - truth).max() < 0.3


def test_perfect_separation_gives_bounded_lrs():
    rng = np.random.default_rng(14)
    same = lambda n: stats.betabinom(n, 40.0, 2.0)  # noqa: E731  nearly every cell congruent
    diff = lambda n: stats.binom(n, 0.0)  # noqa: E731  never one
    pairs = planted(rng, n_guns=10, same_per_gun=6, diff_per_gun=60, same_law=same, diff_law=diff)
    assert pairs.k[pairs.same].min() > pairs.k[~pairs.same].max()  # perfectly separated
    for kind in ("count", "score"):
        p = pairs if kind == "count" else Pairs.build(
            k=pairs.k, n=pairs.n, raw=pairs.k / pairs.n, same=pairs.same,
            firearm_a=pairs.firearm_a, firearm_b=pairs.firearm_b)  # fmt: skip
        model = LRModel.fit(p, kind, n_boot=10)
        e = model.evaluate(np.arange(51), np.full(51, 50), np.arange(51) / 50)
        assert np.isfinite(e.log10_lr).all() and np.isfinite(e.lo).all() and np.isfinite(e.hi).all()
        # ELUB: never more than the data support (about log10 of the class sizes + 1)
        assert model.bounds[1] <= math.log10(pairs.n_different + 1) + 0.01
        assert model.bounds[0] >= -math.log10(pairs.n_same + 1) - 0.01
        assert e.log10_lr.max() == pytest.approx(model.bounds[1])
        assert e.log10_lr.min() == pytest.approx(model.bounds[0])


def test_out_of_range_inputs_are_flagged_and_other_configs_refused():
    rng = np.random.default_rng(15)
    pairs = planted(rng, n_guns=10, same_per_gun=5, diff_per_gun=20,
                    same_law=lambda n: stats.binom(n, 0.6), diff_law=lambda n: stats.binom(n, 0.05))  # fmt: skip
    model = LRModel.fit(pairs, n_boot=5)
    e = model.evaluate(
        [3, 20, 20, 0, 20], [8, 50, 50, 0, 50], spacing_um=[6.25, 6.25, 12.5, 6.25, 1.5]
    )
    assert list(e.in_range) == [False, True, False, False, True]
    assert "fewer than in any training pair" in e.reason[0]
    assert "coarser than the training scans" in e.reason[2] and "12.5 µm" in e.reason[2]
    assert e.reason[3] == "no cell was compared" and e.log10_lr[3] == 0.0
    # a finer source (1.5 µm) is resampled to the compared grid: in range
    with pytest.raises(ModelMismatchError, match=r"correlation_threshold=0\.5"):
        model.check_config(bl.CMCConfig(correlation_threshold=0.5))
    model.check_config(bl.CMCConfig(lead_threshold=0.9))  # not a counting parameter


def test_interval_holds_the_estimate_and_narrows_with_data():
    def width(n_guns):
        rng = np.random.default_rng(16)
        pairs = planted(rng, n_guns=n_guns, same_per_gun=6, diff_per_gun=30,
                        same_law=lambda n: stats.betabinom(n, 5, 5),
                        diff_law=lambda n: stats.betabinom(n, 1, 15))  # fmt: skip
        m = LRModel.fit(pairs, n_boot=40, seed=1, same="betabinom")
        e = m.evaluate([12], [50])
        assert e.lo[0] <= e.log10_lr[0] <= e.hi[0]
        return e.hi[0] - e.lo[0]

    assert width(60) < width(8)


def test_threshold_prediction_matches_the_planted_law():
    rng = np.random.default_rng(17)
    same = lambda n: stats.betabinom(n, 6.0, 4.0)  # noqa: E731
    diff = lambda n: stats.betabinom(n, 1.0, 14.0)  # noqa: E731
    pairs = planted(rng, n_guns=30, same_per_gun=20, diff_per_gun=200, same_law=same, diff_law=diff)
    model = LRModel.fit(pairs, n_boot=0, target_rate=1e-2)
    # the measured rate of LR >= t on fresh different-source pairs from the planted law
    k_new = diff(50).rvs(size=200_000, random_state=np.random.default_rng(18))
    llr = model.evaluate(k_new, np.full(len(k_new), 50)).log10_lr
    for t, predicted in model.rate_table[::6]:
        measured = float(np.mean(llr >= t - 1e-12))
        sd = math.sqrt(max(predicted, 1e-6) * (1 - predicted) / len(k_new))
        assert abs(measured - predicted) < 4 * sd + 0.15 * predicted, (t, predicted, measured)
    assert model.predicted_rate <= 1e-2
    stricter = model.with_target(1e-4)
    assert stricter.lead_log10_lr >= model.lead_log10_lr and stricter.predicted_rate <= 1e-4
    assert stricter.id == model.id  # the same LRs: the threshold is a policy, not the model


def test_model_file_round_trip_and_edit_refused(tmp_path):
    rng = np.random.default_rng(19)
    pairs = planted(rng, n_guns=6, same_per_gun=4, diff_per_gun=12,
                    same_law=lambda n: stats.binom(n, 0.5), diff_law=lambda n: stats.binom(n, 0.05))  # fmt: skip
    model = LRModel.fit(pairs, n_boot=4)
    path = model.save(tmp_path / "m.json")
    back = LRModel.load(path)
    assert back.id == model.id
    np.testing.assert_array_equal(back.evaluate([5, 25], [50, 50]).log10_lr,
                                  model.evaluate([5, 25], [50, 50]).log10_lr)  # fmt: skip
    d = json.loads(path.read_text())
    d["bounds_log10"][1] += 3  # claim more than the data support
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="does not match its id"):
        LRModel.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the LR model"):
        LRModel.load(path)


def test_pairs_csv_round_trip_and_errors(tmp_path):
    p = Pairs.build(k=[3, 0], n=[40, 38], raw=[0.05, 0.0], same=[True, False],
                    firearm_a=["=g1", "g1"], firearm_b=["=g1", "g2"], a=["x", "y"], b=["y", "z"])  # fmt: skip
    back = Pairs.from_csv(p.to_csv(tmp_path / "p.csv"))
    assert list(back.k) == [3, 0] and list(back.same) == [True, False]
    (tmp_path / "bad.csv").write_text("firearm_a,firearm_b,cmc_count,n_cells\ng1,g1,9,4\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*cmc_count 9 is not within 0\.\.n_cells 4"):
        Pairs.from_csv(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="needs the columns"):
        Pairs.from_csv(tmp_path / "cols.csv")
