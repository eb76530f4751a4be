"""Simulated exports: varied cuts, mirrored exports, small crops, annotation masks."""

from __future__ import annotations

import collections
import doctest
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.transform import rotate

import balllink as bl
from balllink import simulate as sim
from balllink.simulate import _annotations, _crop, _cuts, _mirror
from balllink.simulate._cuts import Cut
from helpers import finite_corr as _corr
from helpers import same_bits as _same

SMALL = {"shape": (96, 96), "spacing_um": 25.0}
MID = {"shape": (200, 200), "spacing_um": 12.5}
CROSS = ndi.generate_binary_structure(2, 1)  # 4-connectivity: touching corners do not join


def _moved(z: np.ndarray, pose, spacing: float) -> np.ndarray:
    """``shift(rotate(z, θ), t / spacing)`` with NaN where the move has no data."""
    theta, dy, dx = pose
    finite = np.isfinite(z)
    shift = (dy / spacing, dx / spacing)
    moved = ndi.shift(rotate(np.where(finite, z, 0.0), theta), shift, order=1)
    ok = ndi.shift(rotate(finite.astype(float), theta), shift, order=1) > 0.999
    return np.where(ok, moved, np.nan)


def _cut_of(info) -> Cut:
    """The `Cut` that the truth entries describe."""
    return Cut(
        kind=info["cut"],
        centre_um=info["primer_center_um"],
        axes_um=info["primer_axes_um"],
        angle_deg=info["primer_angle_deg"],
        hole_centre_um=info["hole_center_um"],
        hole_radius_um=info["hole_radius_um"],
        sector_deg=info["sector_deg"],
    )


def _describes(info, region: np.ndarray, spacing: float) -> bool:
    """The cut entries of the truth give the region (up to pixels on its boundary)."""
    return np.count_nonzero(_cut_of(info).mask(region.shape, spacing) != region) <= 4


@pytest.fixture(scope="module")
def pair():
    """Two firings of one firearm, 'easy', on a 200 x 200 grid."""
    return sim.casings(1, 2, seed=4, difficulty="easy", **MID)


# ----------------------------------------------------------------- existing streams


def test_existing_seeds_give_the_same_arrays():
    # values recorded before the geometry, mirror and crop options existed
    sims = sim.casings(2, 2, seed=11, difficulty="easy", **SMALL)
    a, d = sims.scans[0].heights, sims.scans[3].heights
    assert a[30, 70] == pytest.approx(-0.23238438, rel=1e-4)
    assert d[48, 20] == pytest.approx(1.65772295, rel=1e-4)
    assert abs(int(np.isfinite(a).sum()) - 3061) <= 2
    assert abs(int(np.isfinite(d).sum()) - 3015) <= 2
    assert sims.truth["rotation_deg"][3] == pytest.approx(289.44148539)
    raw = sim.casings(1, 1, seed=5, raw=True, shape=(120, 120), spacing_um=25.0).scans[0]
    assert raw.heights[60, 10] == pytest.approx(1.67687917, rel=1e-4)
    assert abs(int(np.isfinite(raw.heights).sum()) - 10687) <= 2


def test_defaults_are_viewed_annulus_scans():
    sims = sim.casings(2, 2, seed=11, difficulty="easy", **SMALL)
    assert sims.truth.dtype.names[-1] == "mirrored" and not sims.truth["mirrored"].any()
    assert sims.params["geometry"] == "annulus" and sims.params["mirrored"] == 0.0
    for scan in sims.scans:
        info = scan.meta["simulation"]
        assert scan.meta["handedness"] == "viewed"
        assert info["cut"] == "annulus" and info["mirrored"] is False
        assert info["primer_axes_um"] == (info["primer_radius_um"],) * 2
        # the cut entries describe the usable region exactly
        assert _describes(info, np.isfinite(info["clean_surface"]), scan.spacing_um[0])


def test_options_do_not_change_the_surfaces():
    base = sim.casings(3, 2, seed=6, **SMALL)
    varied = sim.casings(3, 2, seed=6, geometry="varied", mirrored=0.5, **SMALL)
    assert np.array_equal(base.truth["rotation_deg"], varied.truth["rotation_deg"])
    assert 0 < varied.truth["mirrored"].sum() < 6
    for a, b, row in zip(base.scans, varied.scans, varied.truth, strict=True):
        zb = b.heights[::-1] if row["mirrored"] else b.heights
        both = np.isfinite(a.heights) & np.isfinite(zb)
        assert both.sum() > 100
        assert np.array_equal(a.heights[both], zb[both])  # same marks, another cut
        assert not np.array_equal(np.isfinite(a.heights), np.isfinite(zb))


# ---------------------------------------------------------------------- varied cuts


def test_200_cut_geometries_cover_every_kind():
    shape, sp = (280, 280), 12.5  # the default 560 x 560 at 6.25 µm, at half the pixels
    field = 280 * sp
    kinds = collections.Counter()
    seen = set()
    for i, scan in enumerate(sim.cut_geometries(200, seed=0, shape=shape, spacing_um=sp)):
        info = scan.meta["simulation"]
        kind = info["cut"]
        kinds[kind] += 1
        assert info["cut_index"] == i and info["firearm_id"] == 0
        region = np.isfinite(info["clean_surface"])  # the cut, before dropouts
        valid = scan.mask
        seen.add(np.packbits(region).tobytes())
        # the truth mask is the usable breech face; the cut entries describe the cut
        assert _same(info["breech_face_mask"], valid) and not np.any(valid & ~region)
        assert np.array_equal(_cut_of(info).mask(shape, sp), region)
        assert 0.15 < valid.mean() < 0.65 and valid.sum() > 0.8 * region.sum()
        r = info["primer_radius_um"]
        a, b = info["primer_axes_um"]
        assert 0.4 * 0.85 * field - 1e-6 <= r <= 0.4 * 1.15 * field + 1e-6
        assert 0.9 - 1e-9 <= b / a <= 1.0
        assert 0.2 - 1e-9 <= info["hole_radius_um"] / r <= 0.6 + 1e-9
        assert info["clipped"] == (kind == "clipped")
        border = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
        assert border == (kind == "clipped")
        assert (info["sector_deg"] is not None) == (kind == "sector")
        # NaN regions: is the hole one region with the outside?
        labels, _ = ndi.label(~region, structure=CROSS)
        hy, hx = (round(v / sp) for v in info["hole_center_um"])
        hole, outside = labels[hy, hx], labels[0, 0] if not region[0, 0] else labels[-1, -1]
        assert hole > 0 and outside > 0
        offset = math.dist(info["hole_center_um"], info["primer_center_um"])
        gap = info["rim_gap_um"]
        if kind == "open":
            assert hole == outside and gap < -0.2 * info["hole_radius_um"] * 0.99
            pieces, _ = ndi.label(region, structure=CROSS)
            assert np.bincount(pieces.ravel())[1:].max() > 0.97 * region.sum()  # a C-shape
        elif kind == "touching":
            assert -0.5 * sp - 1e-6 <= gap <= 1.0 * sp + 1e-6
            near = ndi.binary_dilation(labels == hole, iterations=3)
            assert np.any(near & (labels == outside))
        elif kind == "sector":
            start, width = info["sector_deg"]
            assert 20.0 <= width <= 120.0
            mid = math.radians(start + width / 2)
            cy, cx = info["primer_center_um"]
            for rr in np.linspace(0.7, 0.95, 6) * info["primer_axes_um"][1]:
                y, x = cy - rr * math.sin(mid), cx + rr * math.cos(mid)
                assert not region[round(y / sp), round(x / sp)]  # the wedge is missing
            assert (
                labels[
                    round((cy - 0.95 * b * math.sin(mid)) / sp),
                    round((cx + 0.95 * b * math.cos(mid)) / sp),
                ]
                == outside
            )
        else:  # centred, offcentre, clipped: a closed ring around the hole
            assert hole != outside and gap >= max(3 * sp, 0.04 * r) - 1e-6
            if kind == "centred":
                assert offset <= 0.08 * r + 1e-6
            if kind == "offcentre":
                assert 0.12 * r - 1e-6 <= offset <= 0.4 * r + 1e-6
    assert set(kinds) == set(sim.CUT_KINDS) and min(kinds.values()) >= 10
    assert len(seen) == 200  # all distinct
    default = next(sim.cut_geometries(1, seed=0))
    assert default.shape == (560, 560) and default.spacing_um == (6.25, 6.25)


def test_cut_kinds_can_be_chosen_and_are_seeded():
    first = [
        s.meta["simulation"]["cut"]
        for s in sim.cut_geometries(12, seed=3, kinds=["open", "touching"], **SMALL)
    ]
    assert set(first) == {"open", "touching"}
    again = list(sim.cut_geometries(3, seed=3, kinds=["open", "touching"], **SMALL))
    other = list(sim.cut_geometries(3, seed=4, kinds=["open", "touching"], **SMALL))
    assert [s.meta["simulation"]["cut"] for s in again] == first[:3]
    assert _same(
        again[0].heights,
        next(sim.cut_geometries(1, seed=3, kinds=["open", "touching"], **SMALL)).heights,
    )
    assert not _same(again[0].mask, other[0].mask)


def test_varied_casings_stay_comparable(pair):
    # same firearm, different cuts: the truth pose still maps one firing onto the other
    sims = sim.casings(1, 2, seed=4, difficulty="easy", geometry="varied", **MID)
    a, b = (s.meta["simulation"]["clean_surface"] for s in sims.scans)
    pose = sim.relative_pose(sims.truth[0], sims.truth[1])
    assert pose == sim.relative_pose(pair.truth[0], pair.truth[1])
    assert _corr(_moved(a, pose, MID["spacing_um"]), b) > 0.8
    lazy = sim.casings(1, 2, seed=4, difficulty="easy", geometry="varied",
                       keep_truth_arrays=False, **MID)  # fmt: skip
    late = lazy.scans[1].meta["simulation"]
    assert late["cut"] == sims.scans[1].meta["simulation"]["cut"]
    assert _same(late["breech_face_mask"], sims.scans[1].meta["simulation"]["breech_face_mask"])


# ------------------------------------------------------------------------- mirroring


def test_mirror_flips_rows_and_back(pair):
    scan = pair.scans[0]
    flipped = sim.mirror(scan)
    info, back = flipped.meta["simulation"], sim.mirror(flipped)
    assert np.array_equal(flipped.heights, np.flipud(scan.heights), equal_nan=True)
    assert _same(flipped.mask, np.ascontiguousarray(scan.mask[::-1]))
    assert flipped.meta["handedness"] == "mirrored" and info["mirrored"] is True
    assert _same(info["clean_surface"], scan.meta["simulation"]["clean_surface"][::-1].copy())
    assert _describes(info, np.isfinite(info["clean_surface"]), 12.5)
    # the pose of the casing as viewed is kept; mirroring twice gives the original
    assert info["rotation_deg"] == scan.meta["simulation"]["rotation_deg"]
    assert _same(back.heights, scan.heights) and back.meta["handedness"] == "viewed"
    orig = scan.meta["simulation"]
    for key in ("hole_center_um", "primer_center_um"):
        assert back.meta["simulation"][key] == pytest.approx(orig[key])
    assert _same(back.meta["simulation"]["breech_face_mask"], orig["breech_face_mask"])
    # a scan without truth or handedness is taken as viewed
    plain = sim.mirror(bl.Scan(np.arange(6.0).reshape(3, 2), spacing_um=1.0))
    assert plain.meta["handedness"] == "mirrored" and plain.heights[0].tolist() == [4.0, 5.0]


def test_mirror_keeps_varied_cut_truth():
    for scan in sim.cut_geometries(12, seed=9, kinds=["sector", "open", "clipped"], **SMALL):
        flipped = sim.mirror(scan)
        info = flipped.meta["simulation"]
        assert _describes(info, np.isfinite(info["clean_surface"]), 25.0)


def test_mirrored_share_and_rows(pair):
    base = sim.casings(10, 4, seed=2, **SMALL)
    mixed = sim.casings(10, 4, seed=2, mirrored=0.5, **SMALL)
    more = sim.casings(10, 4, seed=2, mirrored=0.8, keep_truth_arrays=False, **SMALL)
    flags = mixed.truth["mirrored"]
    assert 10 <= flags.sum() <= 30
    assert np.all(more.truth["mirrored"] >= flags)  # a larger share mirrors a superset
    for a, b, row, lazy in zip(base.scans, mixed.scans, mixed.truth, more.scans, strict=True):
        info = b.meta["simulation"]
        assert info["mirrored"] == row["mirrored"] == (b.meta["handedness"] == "mirrored")
        expect = sim.mirror(a) if row["mirrored"] else a
        assert _same(b.heights, expect.heights)
        assert _same(info["breech_face_mask"], expect.meta["simulation"]["breech_face_mask"])
        assert info["hole_center_um"] == pytest.approx(expect.meta["simulation"]["hole_center_um"])
        if lazy.meta["simulation"]["mirrored"]:  # lazy truth arrays come back flipped too
            ref = sim.mirror(a).meta["simulation"]["breech_face_mask"]
            assert _same(lazy.meta["simulation"]["breech_face_mask"], ref)


@pytest.mark.parametrize(("flip_a", "flip_b"), [(False, True), (True, False), (True, True)])
def test_relative_pose_with_mirrored_exports(pair, flip_a, flip_b):
    a, b = pair.scans
    if flip_a:
        a = sim.mirror(a)
    if flip_b:
        b = sim.mirror(b)
    ta, tb = a.meta["simulation"], b.meta["simulation"]
    pose = sim.relative_pose(ta, tb)
    za, zb = ta["clean_surface"], tb["clean_surface"]
    zb = zb[::-1] if flip_a != flip_b else zb  # b brought to a's handedness
    assert _corr(_moved(za, pose, 12.5), zb) > 0.8
    if flip_a:  # the viewed pose does not fit a mirrored a
        viewed = sim.relative_pose(pair.truth[0], pair.truth[1])
        assert _corr(_moved(za, viewed, 12.5), zb) < 0.3


def test_relative_pose_moves_a_planted_dot():
    # a dot at q (µm from the image centre) of the signature shows at R(θ) q + t (viewed)
    n, sp = 101, 10.0
    c = (n - 1) / 2
    q = np.array([-120.0, 200.0])
    yy, xx = np.mgrid[:n, :n]

    def export(theta, t, mirrored):
        y, x = c + (_rot(theta) @ q + np.array(t)) / sp
        z = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)
        return z[::-1] if mirrored else z

    for flip_a, flip_b in [(True, False), (False, True), (True, True)]:
        ta = {"rotation_deg": 30.0, "shift_um": (40.0, -20.0), "mirrored": flip_a}
        tb = {"rotation_deg": 110.0, "shift_um": (-50.0, 60.0), "mirrored": flip_b}
        za = export(30.0, (40.0, -20.0), flip_a)
        zb = export(110.0, (-50.0, 60.0), flip_b)
        zb = zb[::-1] if flip_a != flip_b else zb  # b brought to a's handedness
        moved = _moved(za, sim.relative_pose(ta, tb), sp)
        got = np.unravel_index(np.nanargmax(moved), moved.shape)
        want = np.unravel_index(np.argmax(zb), zb.shape)
        assert np.hypot(got[0] - want[0], got[1] - want[1]) <= 1.0, (flip_a, flip_b)


def _rot(theta):
    t = math.radians(theta)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


# ------------------------------------------------------------------------------ crops


@pytest.fixture(scope="module")
def fine_scan():
    return next(sim.cut_geometries(1, seed=2, shape=(320, 320), spacing_um=6.25))


@pytest.mark.parametrize("size", [90, 150, 200])
def test_crop_is_the_source_at_its_offset(fine_scan, size):
    part = sim.crop(fine_scan, size, seed=size)
    oy, ox = part.meta["crop"]["offset_px"]
    window = (slice(oy, oy + size), slice(ox, ox + size))
    assert part.shape == (size, size) and part.meta["crop"]["source_shape"] == (320, 320)
    assert _same(part.heights, np.ascontiguousarray(fine_scan.heights[window]))
    assert part.mask.mean() >= 0.8 and part.meta["crop"]["valid_share"] == pytest.approx(
        part.mask.mean()
    )
    info, src = part.meta["simulation"], fine_scan.meta["simulation"]
    assert info["firearm_id"] == src["firearm_id"] and info["casing_id"] == src["casing_id"]
    assert _same(info["breech_face_mask"], np.ascontiguousarray(src["breech_face_mask"][window]))
    hy, hx = info["hole_center_um"]
    assert (hy, hx) == pytest.approx(
        (src["hole_center_um"][0] - oy * 6.25, src["hole_center_um"][1] - ox * 6.25)
    )


def test_crop_choice(fine_scan):
    picks = {sim.crop(fine_scan, 90, seed=s).meta["crop"]["offset_px"] for s in range(6)}
    assert len(picks) >= 5
    assert (
        sim.crop(fine_scan, 90, seed=1).meta["crop"] == sim.crop(fine_scan, 90, seed=1).meta["crop"]
    )
    best = sim.crop(fine_scan, 120)  # no seed: the most valid window
    assert best.meta["crop"] == sim.crop(fine_scan, 120).meta["crop"]
    assert best.mask.mean() >= max(sim.crop(fine_scan, 120, seed=s).mask.mean() for s in range(5))
    at = sim.crop(fine_scan, 100, centre=(160, 60))
    assert at.meta["crop"]["offset_px"] == (110, 10)
    with pytest.raises(ValueError, match="size_px"):
        sim.crop(fine_scan, 400)
    with pytest.raises(ValueError, match="centre"):
        sim.crop(fine_scan, 100, centre=(20, 160))


def test_crops_of_one_firearm_relate_by_their_truth(pair):
    # crop b somewhere, crop a where the same marks lie: relative_pose maps one on the other
    sp, size, half = 12.5, 64, 32
    theta, dy, dx = sim.relative_pose(pair.truth[0], pair.truth[1])
    c = np.array([99.5, 99.5])
    ma, mb = (ndi.uniform_filter(s.mask.astype(float), size) for s in pair.scans)
    # the window centre in (viewed) b whose same-marks window in a is best covered
    best, cb = -1.0, None
    for y in range(half, 200 - half, 4):
        for x in range(half, 200 - half, 4):
            ca = np.round(_rot(theta).T @ (np.array([y, x]) - c - np.array([dy, dx]) / sp) + c)
            if np.all((ca >= half) & (ca < 200 - half)):
                score = mb[y, x] * ma[int(ca[0]), int(ca[1])]
                if score > best:
                    best, cb = score, np.array([y, x])
    assert best > 0.2
    # a's window is placed 5 px off the same marks: only its own truth knows by how much
    ca = _rot(theta).T @ (cb - c - np.array([dy, dx]) / sp) + c + np.array([5.0, -4.0])
    for flip_b in (False, True):
        b = sim.mirror(pair.scans[1]) if flip_b else pair.scans[1]
        stored_cb = (199 - cb[0], cb[1]) if flip_b else cb
        crop_b = sim.crop(b, size, centre=tuple(round(v) for v in stored_cb))
        crop_a = sim.crop(pair.scans[0], size, centre=tuple(round(v) for v in ca))
        ta, tb = crop_a.meta["simulation"], crop_b.meta["simulation"]
        pose = sim.relative_pose(ta, tb)
        zb = tb["clean_surface"][::-1] if flip_b else tb["clean_surface"]
        fit = _corr(_moved(ta["clean_surface"], pose, sp), zb)
        assert fit > 0.7
        for ey, ex in ((1, 0), (-1, 0), (0, 1), (0, -1)):  # a pixel off fits worse
            off = (pose[0], pose[1] + ey * sp, pose[2] + ex * sp)
            assert _corr(_moved(ta["clean_surface"], off, sp), zb) < fit - 0.03
        # the source pose does not fit the crops (one is off by 6 px)
        assert _corr(_moved(ta["clean_surface"], (theta, dy, dx), sp), zb) < 0.3
        # mirroring a crop is cropping the mirrored source
        twice = sim.mirror(crop_b)
        oy, ox = twice.meta["crop"]["offset_px"]
        src = sim.mirror(b).heights
        assert _same(twice.heights, np.ascontiguousarray(src[oy : oy + size, ox : ox + size]))


# ------------------------------------------------------------------------ annotations


@pytest.mark.parametrize("source", ["annulus", "open"])
def test_annotations_are_small_disjoint_marks(source, fine_scan):
    if source == "annulus":
        scan = sim.casings(1, 1, seed=1, shape=(240, 240), spacing_um=12.5).scans[0]
    else:
        scan = next(sim.cut_geometries(1, seed=5, kinds=["open"], shape=(240, 240)))
    masks = sim.annotations(scan, seed=7, n=4)
    assert list(masks) == list(sim.ANNOTATION_NAMES)
    n_valid = scan.n_valid
    taken = np.zeros(scan.shape, dtype=bool)
    shares = {"break-off": 0.06, "no striae": 0.10, "left groove": 0.10, "firing pin drag": 0.05}
    info = scan.meta["simulation"]
    hole = np.array(info["hole_center_um"]) / scan.spacing_um[0]
    r_hole = info["hole_radius_um"] / scan.spacing_um[0]
    yy, xx = np.mgrid[: scan.shape[0], : scan.shape[1]]
    for name, mask in masks.items():
        assert mask.dtype == bool and mask.shape == scan.shape
        assert 0.01 * n_valid - 1 <= mask.sum() <= shares[name] * n_valid + 1, name
        assert not np.any(mask & ~scan.mask) and not np.any(mask & taken)
        taken |= mask
        dist = np.hypot(yy[mask] - hole[0], xx[mask] - hole[1])
        if name in ("break-off", "firing pin drag"):
            assert dist.min() <= r_hole + 3  # starts at the firing-pin hole
        if name == "left groove":  # a long thin band on the left
            ev = np.linalg.eigvalsh(np.cov(np.c_[yy[mask], xx[mask]].T))
            assert ev[1] > 9 * ev[0]
            assert xx[mask].mean() < np.nonzero(scan.mask)[1].mean()
        if name in ("break-off", "no striae"):  # compact blobs
            _, pieces = ndi.label(mask)
            assert pieces <= 3
    again = sim.annotations(scan, seed=7, n=4)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)
    other = sim.annotations(scan, seed=8, n=2)
    assert len(other) == 2 and set(other) <= set(sim.ANNOTATION_NAMES)
    assert not all(np.array_equal(masks[k], other[k]) for k in other)


def test_annotations_on_a_crop_and_round_trip(fine_scan, tmp_path):
    part = sim.crop(fine_scan, 120, seed=0)
    masks = sim.annotations(part, seed=1, n=3)
    assert len(masks) == 3 and all(m.shape == (120, 120) for m in masks.values())
    path = tmp_path / "annotated.x3p"
    bl.write_scan(part, path, annotations=masks)
    back = bl.read_scan(path)
    assert np.array_equal(back.heights, part.heights, equal_nan=True)
    assert back.meta["handedness"] == "viewed"
    stored = back.meta["annotations"]
    assert list(stored) == list(masks)
    assert all(np.array_equal(stored[k], masks[k]) for k in masks)


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sim.casings(1, 1, seed=0, geometry="odd"), "geometry"),
        (lambda: sim.casings(1, 1, seed=0, raw=True, geometry="varied"), "raw=False"),
        (lambda: sim.casings(1, 1, seed=0, mirrored=1.5), "mirrored"),
        (lambda: sim.iter_casings(1, 1, seed=0, mirrored=True), "mirrored"),
        (lambda: sim.cut_geometries(0, seed=0), "n must"),
        (lambda: sim.cut_geometries(2, seed=0, kinds=["donut"]), "kinds"),
        (lambda: sim.annotations(bl.Scan(np.zeros((40, 40)), 1.0), seed=0, n=5), "n must"),
        (lambda: sim.annotations(bl.Scan(np.zeros((40, 40)), 1.0), seed=-1), "seed"),
        (lambda: sim.crop(bl.Scan(np.zeros((40, 40)), 1.0), 8), "size_px"),
        (lambda: sim.crop(bl.Scan(np.zeros((40, 40)), 1.0), 20, seed=-2), "seed"),
        (lambda: sim.mirror(bl.Scan(np.zeros((4, 4)), 1.0, meta={"handedness": "up"})), "handed"),
    ],
)
def test_bad_arguments_say_what_to_do(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_geometry_docstring_examples_run():
    attempted = 0
    for module in (_annotations, _crop, _cuts, _mirror):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 6
    for name in ("mirror", "crop", "annotations", "cut_geometries"):
        assert name in sim.__all__ and "Examples" in getattr(sim, name).__doc__
