"""Mirrored exports, unprepared input and thin evidence in compare and in the index
(issue: every lab's scans). Planted answers on simulated casings, then the real scans."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

import balllink as bl
from balllink.comparison import mirror_scan


@pytest.fixture(scope="module")
def sims():
    return bl.simulate.casings(3, 2, seed=11, difficulty="fadul-like")


def _flip(scan: bl.Scan, hand=None) -> bl.Scan:
    """The export of another tool: rows reversed, handedness as that tool says (unknown)."""
    return bl.Scan(
        scan.mirrored().masked_heights(),
        spacing_um=scan.spacing_um,
        meta={"handedness": hand},
        source=f"mirrored-{scan.name}",
    )


def _planted(scan: bl.Scan, theta: float, dy_px: float, dx_px: float) -> bl.Scan:
    """b such that b turned by theta about its centre and moved by (dy, dx) px lands on scan."""
    a = scan.masked_heights().astype(np.float64)
    t = math.radians(theta)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    c = (np.array(a.shape) - 1) / 2
    b = ndi.affine_transform(
        a, rot, offset=c - rot @ c + np.array([dy_px, dx_px]), order=1, cval=np.nan
    )
    return bl.Scan(b, spacing_um=scan.spacing_um, source="planted")


def _angle_err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_mirrored_export_is_found_with_its_pose(sims):
    a = sims.scans[0]
    b = _planted(a, 128.0, 9.0, -14.0)
    cmp = bl.compare(a, _flip(b))
    assert cmp.mirrored and cmp.lead
    # the pose places the mirror image of the given scan (= b) on a
    assert _angle_err(cmp.rotation_deg, 128.0) <= 1.5
    sp = a.spacing_um[0]
    assert abs(cmp.translation_um[0] / sp - 9.0) <= 2, cmp.translation_um
    assert abs(cmp.translation_um[1] / sp + 14.0) <= 2, cmp.translation_um
    plain = bl.compare(a, b)
    assert plain.lead and not plain.mirrored
    assert abs(cmp.cmc_count - plain.cmc_count) <= 0.1 * plain.cmc_count


def test_same_gun_mirrored_and_transposed_exports(sims):
    a, b = sims.scans[0], sims.scans[1]  # two firings of firearm 0
    base = bl.compare(a, b)
    assert base.lead and not base.mirrored
    for other in (_flip(b), bl.Scan(b.masked_heights().T, spacing_um=b.spacing_um)):
        cmp = bl.compare(a, other)  # a transpose is a reflection plus a quarter turn
        assert cmp.mirrored and cmp.lead, cmp.reason
        assert cmp.cmc_count >= 0.7 * base.cmc_count
    different = bl.compare(a, _flip(sims.scans[2]))  # another firearm, mirrored
    assert not different.lead


def test_known_handedness_is_used_and_search_can_be_turned_off(sims):
    a = sims.scans[0].replace(meta={**sims.scans[0].meta, "handedness": "viewed"})
    b = sims.scans[1]
    told_mirrored = bl.compare(a, _flip(b, "mirrored"))
    assert told_mirrored.mirrored and told_mirrored.lead
    # metadata that claims agreement is followed: no search, so a mislabelled mirror is
    # compared as it is (and does not match)
    lied = bl.compare(a, _flip(b, "viewed"))
    assert not lied.mirrored and not lied.lead
    off = bl.compare(sims.scans[0], _flip(b), config=bl.CMCConfig(handedness="same"))
    assert not off.mirrored and not off.lead
    with pytest.raises(ValueError, match="handedness"):
        bl.CMCConfig(handedness="left")


def test_unprepared_input_is_prepared_and_recorded():
    raw = bl.simulate.casings(1, 2, seed=4, raw=True, shape=(700, 700), spacing_um=6.25)
    cmp = bl.compare(*raw.scans)
    assert cmp.auto_prepared == (True, True)
    prepared = [bl.preprocess(s) for s in raw.scans]
    ref = bl.compare(*prepared)
    assert ref.auto_prepared == (False, False)
    assert cmp.lead == ref.lead and abs(cmp.cmc_count - ref.cmc_count) <= 2


@pytest.mark.parametrize("size", [90, 150, 200])
def test_small_crops_give_no_lead_against_other_firearms(sims, size):
    rng = np.random.default_rng(size)
    others = [s for s, f in zip(sims.scans, sims.truth["firearm_id"], strict=True) if f != 0]
    src = sims.scans[0]
    density = ndi.uniform_filter(src.mask.astype(float), size, mode="constant")
    valid = np.argwhere(density >= np.quantile(density, 0.98))  # the best-filled windows
    leads = 0
    for _ in range(3):
        cy, cx = valid[rng.integers(len(valid))]
        y0, x0 = max(0, cy - size // 2), max(0, cx - size // 2)
        crop = bl.Scan(src.heights[y0 : y0 + size, x0 : x0 + size], spacing_um=src.spacing_um)
        for cmp in bl.compare_many(crop, others):
            leads += cmp.lead
            assert cmp.score == 0.0 and cmp.reason.startswith("too little evidence")
    assert leads == 0


def test_index_finds_mirrored_mates(sims):
    ids = np.arange(len(sims.scans))
    index = bl.CasingIndex()
    index.add(ids, sims.scans)
    queries = [_flip(s) for s in sims.scans]
    got, _ = index.search(queries, k=2)
    firearm = sims.truth["firearm_id"]
    for i, row in enumerate(got):
        assert row[0] == i  # its own mirror image first
        assert firearm[row[1]] == firearm[i]  # then the mirrored mate
    same = bl.CasingIndex(handedness="same")
    same.add(ids, sims.scans)
    _, scores_same = same.search(queries, k=2)
    _, scores = index.search(queries, k=2)
    assert scores_same[:, 0].mean() < 0.5 * scores[:, 0].mean()


def test_mirror_keypoints_equals_embedding_the_flipped_scan(sims):
    s = sims.scans[0]
    n = s.shape[0] // 4 * 4  # whole 12.5 µm blocks, so both grids see the same blocks
    s = s.replace(heights=s.heights[:n, :n], mask=s.mask[:n, :n])
    rows = bl.embed(s)
    flipped = bl.embed(mirror_scan(s))  # the same data, rows reversed
    mirrored = bl.features.mirror_keypoints(rows)
    # the same keypoints are found at mirrored positions, with the mirrored descriptors
    pos = {(round(float(r[0])), round(float(r[1]))): r for r in flipped}
    matched = 0
    for r in mirrored[:50]:
        hit = pos.get((round(float(r[0])), round(float(r[1]))))
        if hit is not None:
            matched += 1
            assert np.allclose(hit[3:], r[3:], atol=2e-3)
            assert _angle_err(math.degrees(hit[2]), math.degrees(r[2])) < 0.5
    assert matched >= 40


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_fadul_crops_give_no_lead_against_other_firearms(fadul_dir, fadul_truth):
    names = sorted(fadul_truth)
    src = bl.read_scan(fadul_dir / names[0])
    others = [bl.read_scan(fadul_dir / n) for n in names if fadul_truth[n] != fadul_truth[names[0]]]
    valid = np.argwhere(ndi.uniform_filter(src.mask.astype(float), 200) > 0.9)
    leads = 0
    for size in (90, 120, 150, 200):
        cy, cx = valid[len(valid) // 2]
        crop = bl.Scan(
            src.heights[cy - size // 2 : cy + size - size // 2, cx - size // 2 : cx + size // 2],
            spacing_um=src.spacing_um,
        )
        leads += sum(c.lead for c in bl.compare_many(crop, others[:12]))
    assert leads == 0


@pytest.mark.realdata
def test_dfsc_pair_same_call_raw_or_prepared_and_mirrored(raw_dfsc_dir):
    a, b = (bl.read_scan(p) for p in sorted(raw_dfsc_dir.glob("*.x3p")))
    raw = bl.compare(a, b)  # as a new user calls it: unprepared TopMatch exports
    prepared = bl.compare(bl.preprocess(a), bl.preprocess(b))
    assert raw.auto_prepared == (True, True)
    assert raw.lead == prepared.lead is True
    z = b.masked_heights()
    dy, dx = b.spacing_um
    others = [  # every reflection another exporter may write, with any quarter turn
        _flip(b),
        bl.Scan(np.fliplr(z), spacing_um=(dy, dx), source="fliplr"),
        bl.Scan(z.T, spacing_um=(dx, dy), source="transpose"),
        bl.Scan(np.rot90(z, 2).T, spacing_um=(dx, dy), source="anti-transpose"),
    ]
    for other in others:
        cmp = bl.compare(a, other)
        assert cmp.mirrored and cmp.lead, (cmp.cmc_count, cmp.reason)


def test_min_cells_alone_blocks_a_lead(sims):
    a, b = sims.scans[0], sims.scans[1]  # same firearm, full scans, well above 2 mm²
    assert bl.compare(a, b).lead
    strict = bl.compare(a, b, config=bl.CMCConfig(min_cells=200))
    assert not strict.lead and strict.score == 0 and "cells compared" in strict.reason
    assert strict.cmc_count > 0  # the comparison itself was still made and reported


@pytest.mark.realdata
def test_fadul_crop_above_the_gate_still_links_its_gun_only(fadul_dir, fadul_truth):
    """Just above the minimum area a crop is compared as any scan: its own gun's casings
    are leads, the others are not (benchmarks/eval_thin_evidence.py has the full table)."""
    names = sorted(fadul_truth)
    src = bl.read_scan(fadul_dir / names[0])
    gun = fadul_truth[names[0]]
    for size in (400, 440, 480):
        share = ndi.uniform_filter(src.mask.astype(float), size, mode="constant")
        cy, cx = np.unravel_index(np.argmax(share), share.shape)
        y0, x0 = max(0, cy - size // 2), max(0, cx - size // 2)
        crop = bl.Scan(src.masked_heights()[y0 : y0 + size, x0 : x0 + size], spacing_um=6.25)
        if crop.area_mm2 >= 2.1:
            break
    assert crop.area_mm2 >= 2.1
    mates = [bl.read_scan(fadul_dir / n) for n in names if fadul_truth[n] == gun][1:]
    others = [bl.read_scan(fadul_dir / n) for n in names if fadul_truth[n] != gun][:12]
    assert all(c.lead for c in bl.compare_many(crop, mates))
    assert not any(c.lead for c in bl.compare_many(crop, others))


def test_zero_filled_export_compares_like_the_nan_one(sims, tmp_path):
    """Another exporter writes 0 where nothing was measured: read back, it is NaN again,
    and the casing still links to its gun's other firing."""
    a, b = sims.scans[0], sims.scans[1]
    path = tmp_path / "zero-filled.npz"
    np.savez(path, heights=np.where(b.mask, b.heights, 0.0).astype(np.float32), spacing_um=6.25)
    back = bl.read_scan(path)
    assert np.array_equal(np.isfinite(back.heights), b.mask)
    assert bl.compare(a, back).lead


def test_index_uses_known_handedness(sims, tmp_path):
    """Known on both sides, only the right reflection's vote counts; unknown, both do."""
    ids = np.arange(len(sims.scans))
    index = bl.CasingIndex()
    index.add(ids, sims.scans)  # simulated scans: handedness "viewed"
    told_mirrored = [bl.simulate.mirror(s) for s in sims.scans]  # say "mirrored"
    lying = [m.replace(meta={**m.meta, "handedness": "viewed"}) for m in told_mirrored]
    firearm = sims.truth["firearm_id"]
    got, _ = index.search(told_mirrored, k=2)
    assert all(firearm[row[1]] == firearm[i] for i, row in enumerate(got))
    # a mirror image that claims to be viewed is taken at its word: no mirror vote
    _, lied_scores = index.search(lying, k=1)
    _, told_scores = index.search(told_mirrored, k=1)
    assert lied_scores[:, 0].mean() < 0.5 * told_scores[:, 0].mean()
    index.save(tmp_path / "i.blx")  # handedness is saved with the index
    again = bl.CasingIndex.load(tmp_path / "i.blx")
    np.testing.assert_array_equal(again.search(told_mirrored, k=2)[0], got)


def test_hostile_inputs_fail_cleanly_or_are_repaired(sims, tmp_path):
    good, mate = sims.scans[0], sims.scans[1]
    # a strip too thin to align, as candidate b: a reason, never an internal error
    z = np.full_like(good.heights, np.nan)
    z[200:208] = good.heights[200:208]
    strip = bl.Scan(z, spacing_um=6.25, source="band8.npy")
    for cmp in (bl.compare(good, strip), *bl.compare_many(good, [mate, strip])[1:]):
        assert not cmp.lead and cmp.reason
    # a spacing in the wrong unit is refused at once, naming the scan
    for spacing in (500.0, 6.25e-6):
        with pytest.raises(bl.PreprocessError, match=r"wrong\.npy.*not a breech-face scan"):
            bl.compare(bl.Scan(good.heights, spacing_um=spacing, source="wrong.npy"), mate)
    # float sentinels in .npy are not measured, as in X3P
    h = good.heights.astype(np.float64)
    h[np.random.default_rng(0).random(h.shape) < 1e-4] = 3.4e38
    np.save(tmp_path / "s.npy", h)
    back = bl.read_scan(tmp_path / "s.npy", spacing_um=6.25)
    assert any("sentinel" in q for q in back.meta["quirks"])
    assert bl.compare(back, mate).lead
    # scattered dropouts do not make an already cut region fall apart
    d = np.random.default_rng(1).random(good.shape) < 0.5
    holey = bl.Scan(np.where(d, np.nan, good.heights), spacing_um=6.25)
    assert bl.preprocess(holey).n_valid >= 0.9 * holey.n_valid


def test_gross_outliers_do_not_ruin_a_good_scan(sims):
    good, mate = sims.scans[0], sims.scans[1]
    z = good.heights.astype(np.float64)
    z[np.random.default_rng(0).random(z.shape) < 1e-4] = -999999.0  # an "invalid" marker
    spiked = bl.Scan(z, spacing_um=6.25, source="spiked.npy")
    prep = bl.preprocess(spiked)
    assert "gross_outliers" in [f["code"] for f in prep.meta["prepared"]["flags"]]
    assert bl.compare(spiked, mate).lead
