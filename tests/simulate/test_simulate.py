"""Simulator: determinism, truth, planted geometry, raw artefacts, laziness."""

from __future__ import annotations

import doctest
import inspect
import pickle
import tracemalloc
from itertools import islice

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.transform import rotate

import balllink as bl
from balllink import simulate as sim
from balllink.simulate import _casings, _difficulty, _streams, _surface, _truth
from balllink.simulate._generator import Generator
from helpers import finite_corr as _corr
from helpers import same_bits as _same

SMALL = {"shape": (96, 96), "spacing_um": 25.0}
MID = {"shape": (200, 200), "spacing_um": 12.5}


def _to_signature_frame(z: np.ndarray, row, spacing: float) -> np.ndarray:
    """Undo a firing's pose: shift by -t, then rotate by -θ (the documented convention)."""
    finite = np.isfinite(z)
    shift = (-row["shift_y_um"] / spacing, -row["shift_x_um"] / spacing)
    back = rotate(ndi.shift(np.where(finite, z, 0.0), shift, order=1), -row["rotation_deg"])
    ok = rotate(ndi.shift(finite.astype(float), shift, order=1), -row["rotation_deg"]) > 0.999
    return np.where(ok, back, np.nan)


@pytest.fixture(scope="module")
def small_set():
    return sim.casings(4, 3, seed=11, difficulty="easy", **SMALL)


@pytest.fixture(scope="module")
def raw_scan():
    return sim.casings(1, 1, seed=5, raw=True, shape=(640, 640), spacing_um=6.25).scans[0]


# ----------------------------------------------------------------------- determinism


def test_same_seed_is_bit_identical(small_set):
    again = sim.casings(4, 3, seed=11, difficulty="easy", **SMALL)
    assert _same(small_set.truth, again.truth)
    for a, b in zip(small_set.scans, again.scans, strict=True):
        assert _same(a.heights, b.heights)
        sa, sb = a.meta["simulation"], b.meta["simulation"]
        assert _same(sa["clean_surface"], sb["clean_surface"])
        assert _same(sa["breech_face_mask"], sb["breech_face_mask"])


def test_different_seeds_differ(small_set):
    other = sim.casings(4, 3, seed=12, difficulty="easy", **SMALL)
    assert not np.array_equal(small_set.truth["rotation_deg"], other.truth["rotation_deg"])
    assert not _same(small_set.scans[0].heights, other.scans[0].heights)


def test_casings_equal_first_items_of_stream(small_set):
    stream = sim.iter_casings(50, 3, seed=11, difficulty="easy", **SMALL)
    assert inspect.isgenerator(stream)
    streamed = list(islice(stream, 7))
    # the first 7 casings of a 150-casing stream are those of the 12-casing set
    for (scan, row), ref, ref_row in zip(streamed, small_set.scans, small_set.truth):
        assert _same(scan.heights, ref.heights)
        assert row == ref_row
        assert _same(
            scan.meta["simulation"]["clean_surface"], ref.meta["simulation"]["clean_surface"]
        )


def test_stream_can_start_at_a_firearm(small_set):
    # a slice made alone (as parallel benchmark workers do) equals the full stream's casings
    part = list(sim.iter_casings(4, 3, seed=11, difficulty="easy", first_firearm=2, **SMALL))
    assert [int(row["firearm_id"]) for _, row in part] == [2, 2, 2, 3, 3, 3]
    for (scan, row), ref, ref_row in zip(part, small_set.scans[6:], small_set.truth[6:]):
        assert _same(scan.heights, ref.heights)
        assert row == ref_row
    with pytest.raises(ValueError, match="first_firearm"):
        sim.iter_casings(4, 3, seed=11, first_firearm=5)


def test_lazy_truth_arrays_match_kept_ones(small_set):
    lazy = sim.casings(4, 3, seed=11, difficulty="easy", keep_truth_arrays=False, **SMALL)
    for k in (0, 5, 11):
        kept, late = small_set.scans[k].meta["simulation"], lazy.scans[k].meta["simulation"]
        assert type(kept) is dict and not isinstance(late, dict)
        assert "clean_surface" in late and set(late) == set(kept)
        assert _same(late["clean_surface"], kept["clean_surface"])
        assert _same(late["breech_face_mask"], kept["breech_face_mask"])
    scan = pickle.loads(pickle.dumps(lazy.scans[3]))
    assert _same(
        scan.meta["simulation"]["clean_surface"],
        small_set.scans[3].meta["simulation"]["clean_surface"],
    )


# ----------------------------------------------------------------------------- truth


def test_truth_table_is_consistent():
    sims = sim.casings(8, 5, seed=3, **SMALL)
    t = sims.truth
    assert t.dtype == sim.TRUTH_DTYPE and len(t) == len(sims.scans) == 40
    assert t["casing_id"].tolist() == list(range(40))
    assert t["firearm_id"].tolist() == np.repeat(np.arange(8), 5).tolist()
    rot = t["rotation_deg"]
    assert np.all((rot >= 0) & (rot < 360))
    assert rot.min() < 45 and rot.max() > 315  # the full circle is used
    assert np.histogram(rot, bins=4, range=(0, 360))[0].min() >= 4
    assert np.any(np.abs(t["shift_y_um"]) > 1) and np.any(np.abs(t["shift_x_um"]) > 1)
    for scan, row in zip(sims.scans, t, strict=True):
        info = scan.meta["simulation"]
        assert scan.meta["generator"] == "balllink.simulate"
        assert (info["casing_id"], info["firearm_id"]) == (row["casing_id"], row["firearm_id"])
        assert info["rotation_deg"] == row["rotation_deg"]
        assert info["shift_um"] == (row["shift_y_um"], row["shift_x_um"])
        assert scan.heights.dtype == np.float32 and scan.spacing_um == (25.0, 25.0)
        assert scan.meta["simulation"]["clean_surface"].dtype == np.float32
    _, _, same = sims.pairs()
    assert same.sum() == 8 * 10 and len(same) == 40 * 39 // 2


def test_prepared_scan_structure(small_set):
    for scan in small_set.scans:
        info = scan.meta["simulation"]
        mask, clean = info["breech_face_mask"], info["clean_surface"]
        assert _same(mask, np.isfinite(scan.heights)) and _same(mask, scan.mask)
        # NaN outside the annulus, both in the scan and in the clean surface
        ny, nx = scan.shape
        yy, xx = np.mgrid[:ny, :nx] * scan.spacing_um[0]
        r_o = np.hypot(yy - info["primer_center_um"][0], xx - info["primer_center_um"][1])
        r_h = np.hypot(yy - info["hole_center_um"][0], xx - info["hole_center_um"][1])
        annulus = (r_o <= info["primer_radius_um"]) & (r_h >= info["hole_radius_um"])
        edge = np.abs(r_o - info["primer_radius_um"]) < 1e-3
        assert np.array_equal(np.isfinite(clean) | edge, annulus | edge)
        assert not np.any(mask & ~annulus)
        # the scan is the clean surface plus small white noise
        assert _corr(scan.heights, clean) > 0.99


# ------------------------------------------------------------------- planted geometry


def test_planted_pose_recovers_the_signature():
    sims = sim.casings(2, 2, seed=21, difficulty="easy", **MID)
    sp = MID["spacing_um"]
    back = [
        _to_signature_frame(s.meta["simulation"]["clean_surface"], row, sp)
        for s, row in zip(sims.scans, sims.truth, strict=True)
    ]
    same_a, same_b = _corr(back[0], back[1]), _corr(back[2], back[3])
    different = [_corr(back[i], back[j]) for i in (0, 1) for j in (2, 3)]
    assert same_a > 0.8 and same_b > 0.8
    assert max(abs(c) for c in different) < 0.25
    # a wrong pose (rotation off by 20°) loses the match
    row = sims.truth[1].copy()
    row["rotation_deg"] += 20.0
    wrong = _to_signature_frame(sims.scans[1].meta["simulation"]["clean_surface"], row, sp)
    assert _corr(back[0], wrong) < 0.3


def test_relative_pose_maps_one_firing_onto_the_other():
    sims = sim.casings(1, 2, seed=4, difficulty="easy", **MID)
    a, b = (s.meta["simulation"]["clean_surface"] for s in sims.scans)
    theta, dy, dx = sim.relative_pose(sims.truth[0], sims.truth[1])
    sp = MID["spacing_um"]
    finite = np.isfinite(a)
    moved = ndi.shift(rotate(np.where(finite, a, 0.0), theta), (dy / sp, dx / sp), order=1)
    ok = ndi.shift(rotate(finite.astype(float), theta), (dy / sp, dx / sp), order=1) > 0.999
    assert _corr(np.where(ok, moved, np.nan), b) > 0.8
    assert _corr(np.where(ok, moved, np.nan)[::-1], b) < 0.3


def test_relative_pose_examples():
    t = np.zeros(2, dtype=sim.TRUTH_DTYPE)
    t["rotation_deg"] = [350.0, 20.0]
    t["shift_y_um"] = [10.0, 0.0]
    theta, dy, dx = sim.relative_pose(t[0], t[1])
    assert theta == pytest.approx(30.0)
    # t_b - R(30°) t_a with t_a = (10, 0): R maps (y, x) = (10, 0) to (10 cos, 10 sin)
    assert (dy, dx) == pytest.approx((-10 * np.cos(np.pi / 6), -10 * np.sin(np.pi / 6)))


def test_difficulty_orders_match_strength():
    def km_and_batch(difficulty):
        sims = sim.casings(4, 2, seed=8, difficulty=difficulty, **MID)
        sp = MID["spacing_um"]
        back = [
            _to_signature_frame(s.heights, row, sp)
            for s, row in zip(sims.scans, sims.truth, strict=True)
        ]
        km = np.mean([_corr(back[2 * f], back[2 * f + 1]) for f in range(4)])
        knm = np.mean([_corr(back[i], back[j]) for i in (0, 1) for j in (2, 3)])
        return km, knm

    easy, medium, hard = (km_and_batch(d) for d in ("easy", "medium", "hard"))
    assert easy[0] > medium[0] > hard[0]
    assert hard[0] > 0.1
    assert abs(easy[1]) < 0.1  # no shared batch component when easy
    assert hard[1] > easy[1] + 0.03  # batch mates share subclass marks when hard
    assert sim.Difficulty.from_value(0.5) == sim.DIFFICULTIES["medium"]
    assert sim.Difficulty.from_value(0.0) == sim.DIFFICULTIES["easy"]


# ---------------------------------------------------------------------------- raw


def test_raw_scan_carries_the_artefacts(raw_scan):
    info = raw_scan.meta["simulation"]
    z = raw_scan.heights
    mask = info["breech_face_mask"]
    ny, nx = z.shape
    yy, xx = np.mgrid[:ny, :nx] * raw_scan.spacing_um[0]
    r_o = np.hypot(yy - info["primer_center_um"][0], xx - info["primer_center_um"][1])
    r_h = np.hypot(yy - info["hole_center_um"][0], xx - info["hole_center_um"][1])
    annulus = (r_o <= info["primer_radius_um"]) & (r_h >= info["hole_radius_um"])
    finite = np.isfinite(z)
    # mask = the usable annulus: inside the circles and measured
    inter = np.count_nonzero(mask & annulus & finite)
    union = np.count_nonzero(mask | (annulus & finite))
    assert inter / union > 0.999
    assert not np.any(mask & ~finite)
    clean = info["clean_surface"]
    assert not np.any(np.isfinite(clean) & ~annulus)
    # tilt: a plane fitted over the breech face has the recorded slope
    sel = mask & (np.abs(z - np.nanmedian(z[mask])) < 150)
    a = np.c_[yy[sel], xx[sel], np.ones(sel.sum())]
    coef = np.linalg.lstsq(a, z[sel], rcond=None)[0]
    slope = 1000 * np.hypot(coef[0], coef[1])
    assert slope == pytest.approx(info["tilt_um_per_mm"], rel=0.15)
    assert slope > 4.0
    # crater: far below the breech face
    crater = (r_h < 0.7 * info["hole_radius_um"]) & finite
    assert np.median(z[crater] - a_plane(coef, yy, xx)[crater]) < -20
    # spikes: isolated outliers
    spikes = np.abs(z - ndi.median_filter(np.where(finite, z, 0), size=3)) > 15
    assert np.count_nonzero(spikes & mask) >= 3
    assert np.count_nonzero(spikes) >= info["n_spikes"] // 2
    # outside the primer: the casing head sits at another level, with data missing
    head = r_o > info["primer_radius_um"] + 100
    assert (~finite[head]).mean() > 0.05
    assert (~finite[head]).mean() < 0.9
    # what remains after removing a quadratic surface is the clean surface
    good = sel & ~ndi.binary_dilation(spikes, iterations=1)
    q = np.c_[yy[good], xx[good], yy[good] ** 2, xx[good] ** 2, yy[good] * xx[good]]
    q = np.c_[q, np.ones(good.sum())]
    resid = z[good] - q @ np.linalg.lstsq(q, z[good], rcond=None)[0]
    assert np.corrcoef(resid, clean[good])[0, 1] > 0.95


def a_plane(coef, yy, xx):
    return coef[0] * yy + coef[1] * xx + coef[2]


def test_raw_default_geometry():
    gen = Generator(
        seed=0, raw=True, difficulty="medium", shape=None, spacing_um=None, per_firearm=1
    )
    assert gen.shape == (1400, 1400) and gen.spacing == 3.125
    prep = Generator(
        seed=0, raw=False, difficulty="medium", shape=None, spacing_um=None, per_firearm=1
    )
    assert prep.shape == (545, 545) and prep.spacing == 6.25
    assert gen.radius == pytest.approx(prep.radius, rel=0.01)


# ---------------------------------------------------------------------- real data


def test_default_scans_look_like_fadul(fadul_dir):
    x3pio = pytest.importorskip("x3pio")
    real = []
    for path in sorted(fadul_dir.glob("*.x3p"))[:6]:
        z = np.asarray(x3pio.read(path).layers[0].z, dtype=float) * 1e6
        real.append((z.shape[0], np.isfinite(z).mean(), np.nanstd(z)))
    real = np.array(real)
    sims = sim.casings(2, 1, seed=0, difficulty="fadul-like")
    for scan in sims.scans:
        assert real[:, 0].min() * 0.95 <= scan.shape[0] <= real[:, 0].max() * 1.05
        valid = np.isfinite(scan.heights).mean()
        assert real[:, 1].min() - 0.08 <= valid <= real[:, 1].max() + 0.08
        assert real[:, 2].min() * 0.7 <= np.nanstd(scan.heights) <= real[:, 2].max() * 1.3


# --------------------------------------------------------------------- streaming


def test_stream_of_a_million_is_lazy():
    tracemalloc.start()
    try:
        stream = sim.iter_casings(10**5, 10, seed=2, shape=(48, 48), spacing_um=50.0)
        last = None
        for _scan, row in islice(stream, 1000):
            last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last["casing_id"] == 999 and last["firearm_id"] == 99
    assert peak < 30e6  # 1000 scans of 48x48 are 9 MB of heights alone, plus truth arrays


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "difficulty": "brutal"}, "difficulty"),
        ({"seed": 0, "difficulty": 1.5}, "difficulty"),
        ({"seed": 0, "shape": (8, 8)}, "shape"),
        ({"seed": 0, "spacing_um": -1.0}, "spacing_um"),
        ({"seed": 0, "spacing_um": (3.0, 4.0)}, "spacing_um"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.casings(1, 1, **kwargs)


def test_bad_counts_and_difficulty_fields():
    with pytest.raises(ValueError, match="n_firearms"):
        sim.casings(0, 1, seed=0)
    with pytest.raises(ValueError, match="per_firearm"):
        sim.iter_casings(1, 0, seed=0)
    with pytest.raises(ValueError, match="reproduction"):
        sim.Difficulty(
            reproduction=0.0,
            shared=0.0,
            batch_size=1,
            contact=1.0,
            dropout=0.0,
            noise_um=0.0,
            shift_sd_um=0.0,
        )


def test_custom_difficulty_and_progress():
    custom = sim.Difficulty(
        reproduction=1.0,
        shared=0.0,
        batch_size=1,
        contact=1.0,
        dropout=0.0,
        noise_um=0.0,
        shift_sd_um=0.0,
    )
    seen = []
    sims = sim.casings(
        1, 2, seed=9, difficulty=custom, progress=lambda d, t: seen.append((d, t)), **MID
    )
    assert seen == [(1, 2), (2, 2)]
    assert np.all(sims.truth["shift_y_um"] == 0)
    a, b = (s.heights for s in sims.scans)
    ta, tb = sims.truth
    # full reproduction, full contact: the two firings are the same surface re-posed
    sp = MID["spacing_um"]
    assert _corr(_to_signature_frame(a, ta, sp), _to_signature_frame(b, tb, sp)) > 0.97


def test_docstring_examples_run():
    attempted = 0
    for module in (sim, _casings, _difficulty, _streams, _surface, _truth):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 10
    assert bl.simulate is sim
