"""Likelihood ratios on real scans (Fadul, ../shared/data): the shipped model and
leave-one-firearm-out models on four of the ten slides (120 pairs, every firearm's scans)."""

from __future__ import annotations

import numpy as np
import pytest

import balllink as bl
from balllink.evidence import Pairs, cross_validate, default_model, validation_metrics
from balllink.preprocessing import prepare_if_needed


@pytest.fixture(scope="module")
def fadul_pairs(fadul_dir, fadul_truth):
    guns = sorted(set(fadul_truth.values()))[:4]
    names = sorted(f for f, g in fadul_truth.items() if g in guns)
    scans = [prepare_if_needed(bl.read_scan(fadul_dir / n)) for n in names]  # as ingest does
    comps, firearms = [], []
    for i in range(len(names) - 1):
        out = bl.compare_many(scans[i], scans[i + 1 :])
        comps += out
        firearms += [
            (fadul_truth[names[i]], fadul_truth[names[j]]) for j in range(i + 1, len(names))
        ]
    return comps, Pairs.from_comparisons(comps, firearms)


def test_shipped_model_on_fadul(fadul_pairs):
    comps, pairs = fadul_pairs
    model = default_model()
    same = pairs.same
    llr = np.array([c.log10_lr for c in comps])
    assert np.isfinite(llr).all() and all(c.evidence.model == model.id for c in comps)
    # every same-gun pair is a lead with strong support; no different-gun pair is a lead
    assert all(c.lead for c, s in zip(comps, same) if s)
    assert not any(c.lead for c, s in zip(comps, same) if not s)
    assert llr[same].min() >= 3.0
    # the LR never exceeds what the training data support, and the intervals hold it
    assert llr.max() <= model.bounds[1] + 1e-9 and llr.min() >= model.bounds[0] - 1e-9
    assert all(c.evidence.interval[0] <= c.log10_lr <= c.evidence.interval[1] for c in comps)
    # misleading different-source evidence is rare (the one known pair has LR 12)
    assert np.mean(llr[~same] > 0) <= 0.01
    # flagged only where the comparison itself had too little evidence (and then no lead)
    out = [c for c in comps if not c.evidence.in_range]
    assert all(c.reason.startswith("too little evidence") and not c.lead for c in out)
    assert all(c.evidence.reason.startswith("too little evidence") for c in out)


def test_leave_one_firearm_out_on_fadul(fadul_pairs):
    _, pairs = fadul_pairs
    llr = cross_validate(pairs, "count")
    m = validation_metrics(llr, pairs.same)
    assert m["misleading_same"] == 0.0 and m["misleading_different"] == 0.0
    # trained on three firearms, the bounds are about +-1.3 (ELUB), so even perfectly
    # separated pairs cost about 0.06: the cost of claiming no more than the data support
    assert m["cllr"] < 0.1 and m["cllr_min"] <= m["cllr"]
