"""Preprocessing: planted answers on synthetic surfaces, simulated raw casings with truth,
and the real scans (Fadul processed, DFSC raw with its stored ROI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

import balllink as bl

ISO = math.sqrt(math.log(2) / 2) / math.pi  # σ / λ, ISO 16610-61


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    m = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[m], b[m])[0, 1])


def _primer(n=240, spacing=12.5, r_out=1100.0, r_in=400.0, seed=1, tilt=0.02):
    """A toy raw scan: flat textured ring, crater inside, roll-off outside, tilted."""
    yy, xx = np.mgrid[:n, :n] * spacing
    c = (n - 1) * spacing / 2
    r = np.hypot(yy - c - 37.0, xx - c + 21.0)
    z = np.where(r < r_in, -60.0, 0.0) + np.where(r > r_out, -0.5 * (r - r_out), 0.0)
    # texture as a function of position (the same surface whatever the pixel size)
    texture = np.sin(2 * np.pi * xx / 97.0) * np.cos(2 * np.pi * yy / 131.0)
    texture += 0.7 * np.sin(2 * np.pi * (xx + 0.6 * yy) / 230.0)
    z = z + texture + np.random.default_rng(seed).normal(0, 0.2, z.shape) + tilt * xx
    truth = (r <= r_out) & (r >= r_in)
    return bl.Scan(z, spacing_um=spacing, source="toy-primer.x3p"), truth


@pytest.fixture(scope="module")
def sim_raw():
    # small raw casings: 500 x 500 px at 8 µm (the default geometry, scaled down)
    return bl.simulate.casings(2, 2, seed=3, raw=True, shape=(500, 500), spacing_um=8.0)


# ----------------------------------------------------------------------------- bandpass


def _sine(wavelength_um, spacing=2.0, n=600, rows=8):
    x = np.arange(n) * spacing
    return bl.Scan(np.tile(np.sin(2 * np.pi * x / wavelength_um), (rows, 1)), spacing_um=spacing)


@pytest.mark.parametrize(
    ("convention", "expected"),
    [("iso", 0.5), ("cmcr", math.exp(-0.5))],  # transmission at the cutoff wavelength
)
def test_lowpass_transmission_at_cutoff(convention, expected):
    scan = _sine(80.0)
    out = bl.bandpass(scan, short_um=80.0, long_um=None, convention=convention)
    amp = np.nanmax(np.abs(out.heights[:, 200:400]))
    assert amp == pytest.approx(expected, abs=0.02)


def test_highpass_transmission_at_cutoff_is_complementary():
    scan = _sine(400.0)
    out = bl.bandpass(scan, short_um=None, long_um=400.0)
    amp = np.nanmax(np.abs(out.heights[:, 200:400]))
    assert amp == pytest.approx(0.5, abs=0.02)  # ISO: 1 - 0.5


def test_bandpass_is_nan_aware_not_nan_to_zero():
    rng = np.random.default_rng(0)
    z = np.full((120, 140), 7.0)
    holes = rng.random(z.shape) < 0.2
    z[holes] = np.nan
    z[40:80, 50:90] = np.nan  # a big hole: zero-filling would pull its rim down
    scan = bl.Scan(z, spacing_um=6.25)
    low = bl.bandpass(scan, short_um=50.0, long_um=None)
    assert np.nanmax(np.abs(low.heights - 7.0)) < 1e-4
    band = bl.bandpass(scan, short_um=16.0, long_um=500.0)
    assert np.nanmax(np.abs(band.heights)) < 1e-4
    assert np.array_equal(band.mask, scan.mask)  # defined exactly on the measured points


def test_wide_gaussian_matches_ndimage_reference():
    # the high-pass runs by FFT for wide kernels: compare with the obvious ndimage route
    rng = np.random.default_rng(1)
    z = ndi.gaussian_filter(rng.normal(size=(300, 260)), 2)
    z[rng.random(z.shape) < 0.1] = np.nan
    scan = bl.Scan(z, spacing_um=6.25)
    out = bl.bandpass(scan, short_um=None, long_um=500.0)
    sigma = 500.0 * ISO / 6.25
    w = np.isfinite(z)
    num = ndi.gaussian_filter(np.where(w, z, 0.0), sigma, mode="constant")
    den = ndi.gaussian_filter(w.astype(float), sigma, mode="constant")
    ref = np.where(w, z - num / den, np.nan)
    assert np.nanmax(np.abs(out.heights - ref)) < 1e-3 * np.nanstd(ref)


def test_bandpass_rejects_bad_cutoffs():
    scan = _sine(80.0)
    with pytest.raises(ValueError, match="short_um"):
        bl.bandpass(scan, short_um=500, long_um=16)
    with pytest.raises(ValueError, match="long_um"):
        bl.bandpass(scan, short_um=16, long_um=-5)
    with pytest.raises(ValueError, match="convention"):
        bl.bandpass(scan, convention="gauss")


# ----------------------------------------------------------------------------- level


def test_level_recovers_plane_despite_outliers():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:200, :180].astype(float)
    z = 0.05 * xx - 0.12 * yy + 3.0 + rng.normal(0, 0.1, yy.shape)
    z[rng.random(z.shape) < 0.15] += 80.0  # 15 % of one-sided outliers (a crater rim)
    scan = bl.Scan(z, spacing_um=5.0)
    robust = bl.level(scan)
    good = z < 40
    # a median plane sits at the 50 % quantile of all points: 0.2 σ above the good ones
    assert abs(np.median(robust.heights[good])) < 0.05
    assert np.std(robust.heights[good]) < 0.11
    # least squares is pulled by the outliers: the robust fit is what the default buys
    plain = bl.level(scan, method="lstsq")
    assert abs(np.median(plain.heights[good])) > 5.0


def test_level_second_order_removes_curvature():
    yy, xx = np.mgrid[:100, :100].astype(float)
    z = 1e-3 * ((yy - 50) ** 2 + (xx - 40) ** 2) + 0.3 * xx
    scan = bl.Scan(z, spacing_um=6.25)
    assert np.nanmax(np.abs(bl.level(scan, order=2).heights)) < 1e-4
    assert np.nanmax(np.abs(bl.level(scan, order=1).heights)) > 1.0
    with pytest.raises(ValueError, match="order"):
        bl.level(scan, order=3)


# ----------------------------------------------------------------------------- spikes


def test_remove_spikes_finds_planted_spikes_only():
    rng = np.random.default_rng(3)
    z = ndi.gaussian_filter(rng.normal(size=(200, 200)), 2) * 10
    z[rng.random(z.shape) < 0.05] = np.nan
    spikes = (rng.integers(2, 198, 60), rng.integers(2, 198, 60))
    z[spikes] = rng.choice([-1, 1], 60) * rng.uniform(20, 200, 60)
    out = bl.remove_spikes(bl.Scan(z, spacing_um=3.125))
    assert np.isnan(out.heights[spikes]).all()
    extra = np.isfinite(z) & ~np.isfinite(out.heights)
    extra[spikes] = False
    assert extra.sum() <= 5  # texture and spike neighbours stay


def test_remove_spikes_leaves_constant_and_smooth_surfaces():
    flat = bl.Scan(np.full((50, 50), 3.0), spacing_um=1.0)
    assert bl.remove_spikes(flat).n_valid == 2500
    yy, xx = np.mgrid[:80, :80]
    smooth = bl.Scan(np.sin(xx / 9.0) + np.cos(yy / 7.0), spacing_um=1.0)
    assert bl.remove_spikes(smooth).n_valid == 6400


# ----------------------------------------------------------------------------- resample


def test_resample_keeps_positions_and_linear_surfaces():
    yy, xx = np.mgrid[:101, :81] * 3.125
    z = 0.2 * xx - 0.1 * yy + 5
    out = bl.resample(bl.Scan(z, spacing_um=3.125), spacing_um=6.25, anti_aliasing=False)
    assert out.shape == (51, 41) and out.spacing_um == (6.25, 6.25)
    oy, ox = np.mgrid[:51, :41] * 6.25
    np.testing.assert_allclose(out.heights, 0.2 * ox - 0.1 * oy + 5, atol=1e-4)
    up = bl.resample(bl.Scan(z, spacing_um=3.125), spacing_um=2.5)
    uy, ux = np.mgrid[: up.shape[0], : up.shape[1]] * 2.5
    np.testing.assert_allclose(up.heights, 0.2 * ux - 0.1 * uy + 5, atol=1e-3)


def test_resample_is_nan_aware():
    z = np.full((120, 120), -2.5)
    z[30:60, 30:60] = np.nan
    out = bl.resample(bl.Scan(z, spacing_um=2.0), spacing_um=6.0)
    assert np.nanmax(np.abs(out.heights + 2.5)) < 1e-5
    assert not out.mask[15, 15] and out.mask[2, 2]  # the hole stays a hole


def test_resample_same_spacing_is_identity():
    scan = _sine(80.0, spacing=6.25)
    out = bl.resample(scan, spacing_um=6.25)
    assert np.array_equal(out.heights, scan.heights)


# ----------------------------------------------------------------------------- trim


def test_trim_edges_erodes_by_width():
    yy, xx = np.mgrid[:101, :101]
    z = np.where(np.hypot(yy - 50, xx - 50) <= 40, 1.0, np.nan)
    out = bl.trim_edges(bl.Scan(z, spacing_um=2.0), width_um=10.0, min_area_um2=0)
    r_left = math.sqrt(out.n_valid / math.pi)
    assert r_left == pytest.approx(35, abs=1.0)  # 40 px - 10 µm / 2 µm


# ----------------------------------------------------------------------------- breech face


def test_find_breech_face_recovers_planted_circles():
    scan, truth = _primer()
    face = bl.find_breech_face(scan)
    assert face.method == "fit"
    c = (239 * 12.5) / 2
    assert face.center_um == pytest.approx((c + 37.0, c - 21.0), abs=6.0)
    assert face.outer_radius_um == pytest.approx(1100.0, abs=12.5)
    # a 60 µm step blurs the slope over ~2 px: the hole comes out at most 2 px too wide
    assert face.inner_radius_um == pytest.approx(400.0, abs=25.0)
    assert _iou(face.mask, truth) > 0.95
    assert face.quality > 0.8


def test_simulated_raw_breech_face_iou(sim_raw):
    ious = []
    for scan in sim_raw.scans:
        truth = np.asarray(scan.meta["simulation"]["breech_face_mask"])
        ious.append(_iou(bl.find_breech_face(scan).mask, truth))
    assert min(ious) >= 0.95, ious


def test_simulated_raw_prepared_surface_matches_clean_signature(sim_raw):
    """Compare on the prepared grid: the clean surface, cropped like the scan and brought
    to 6.25 µm by the same NaN-aware resampling; Pearson r over points valid in both."""
    for scan in sim_raw.scans[:2]:
        prep = bl.preprocess(scan)
        assert prep.spacing_um == (6.25, 6.25)
        crop = next(h for h in prep.meta["history"] if h["step"] == "crop")
        clean = np.asarray(scan.meta["simulation"]["clean_surface"])
        clean = clean[slice(*crop["rows"]), slice(*crop["cols"])]
        ref = bl.resample(bl.Scan(clean, spacing_um=scan.spacing_um), spacing_um=6.25)
        assert ref.shape == prep.shape
        assert _corr(prep.heights, ref.heights) >= 0.9
        assert prep.meta["prepared"]["ok"]


def test_raw_spikes_are_gone_after_preprocess(sim_raw):
    scan = sim_raw.scans[0]
    prep = bl.preprocess(scan)
    assert np.nanmax(np.abs(prep.heights)) < 15 * np.nanstd(prep.heights)


def test_different_spacings_meet_on_the_common_grid():
    fine, _ = _primer(n=480, spacing=6.25, seed=4)
    coarse, _ = _primer(n=240, spacing=12.5, seed=4)
    a, b = bl.preprocess(fine), bl.preprocess(coarse)
    assert a.spacing_um == b.spacing_um == (6.25, 6.25)
    # same surface, same µm positions: align by the recorded origins and compare
    dy, dx = (
        round((oa - ob) / 6.25)
        for oa, ob in zip(a.meta["prepared"]["origin_um"], b.meta["prepared"]["origin_um"])
    )
    assert dy >= 0 and dx >= 0
    bb = b.heights[dy:, dx:]
    ny, nx = min(a.shape[0], bb.shape[0]), min(a.shape[1], bb.shape[1])
    assert _corr(a.heights[:ny, :nx], bb[:ny, :nx]) > 0.9


# ----------------------------------------------------------------------------- chain, meta


def test_preprocess_records_every_step():
    scan, _ = _primer()
    prep = bl.preprocess(scan, level_order=2, convention="cmcr")
    steps = [h["step"] for h in prep.meta["history"]]
    assert steps == [
        "find_breech_face",
        "crop",
        "remove_spikes",
        "level",
        "bandpass",
        "resample",
        "bandpass",
        "trim_edges",
    ]
    info = prep.meta["prepared"]
    assert info["ok"] and info["spacing_um"] == (6.25, 6.25)
    assert info["options"]["level_order"] == 2 and info["options"]["convention"] == "cmcr"
    assert info["breech_face"]["outer_radius_um"] == pytest.approx(1100, abs=15)
    level_step = prep.meta["history"][3]
    assert level_step["order"] == 2 and len(level_step["coefficients"]) == 6
    assert np.isnan(prep.heights[~prep.mask]).all()


def test_preprocess_is_idempotent(sim_raw):
    once = bl.preprocess(sim_raw.scans[1])
    twice = bl.preprocess(once)
    assert twice.meta["prepared"]["breech_face"]["method"] == "existing"
    assert twice.shape == once.shape or twice.n_valid >= 0.99 * once.n_valid
    oy, ox = (round(o / 6.25) for o in twice.meta["prepared"]["origin_um"])
    same = once.heights[oy : oy + twice.shape[0], ox : ox + twice.shape[1]]
    assert _corr(same, twice.heights) > 0.99


def test_file_roi_needs_a_file_mask():
    scan, _ = _primer()
    with pytest.raises(bl.PreprocessError, match=r"toy-primer\.x3p.*file mask"):
        bl.find_breech_face(scan, method="file")
    _, truth = _primer()
    with_roi = scan.replace(meta={"file_mask": truth})
    face = bl.find_breech_face(with_roi, method="auto")  # auto still fits the heights
    assert face.method == "fit"
    prep = bl.preprocess(with_roi)  # ...but preprocess prefers the stored ROI
    assert prep.meta["prepared"]["breech_face"]["method"] == "file"
    assert prep.meta["prepared"]["breech_face"]["outer_radius_um"] == pytest.approx(1100, abs=15)


def test_no_breech_face_under_strict_raises_naming_the_scan():
    rng = np.random.default_rng(5)
    noise = bl.Scan(rng.normal(0, 50, (200, 200)), spacing_um=6.25, source="/cases/noise.x3p")
    with pytest.raises(bl.PreprocessError, match=r"noise\.x3p.*strict"):
        bl.preprocess(noise, strict=True)
    flagged = bl.preprocess(noise)  # the default keeps it, flagged
    assert flagged.meta["prepared"]["flags"][0]["code"] == "breech_face_not_found"


def test_no_breech_face_non_strict_is_flagged():
    rng = np.random.default_rng(6)
    noise = bl.Scan(rng.normal(0, 50, (200, 200)), spacing_um=6.25, source="noise.x3p")
    out = bl.preprocess(noise, strict=False)
    info = out.meta["prepared"]
    assert info["ok"] is False
    assert 0.0 <= info["quality"] < 0.5 and "no big flat area" in info["reason"]
    assert out.n_valid > 0.9 * noise.n_valid


def test_bad_input_errors():
    empty = bl.Scan(np.full((20, 20), np.nan), spacing_um=1.0, source="empty.x3p")
    with pytest.raises(bl.PreprocessError, match=r"empty\.x3p"):
        bl.preprocess(empty)
    with pytest.raises(TypeError, match="unknown option"):
        bl.preprocess(_primer()[0], lowpass=3)
    with pytest.raises(TypeError, match="Scan"):
        bl.level(np.zeros((4, 4)))


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_fadul_processed_scans_pass_through(fadul_dir):
    for name in ["Fadul 1-1.x3p", "Fadul 10-2.x3p", "Fadul L.x3p"]:
        scan = bl.read_scan(fadul_dir / name)
        prep = bl.preprocess(scan)
        assert prep.meta["prepared"]["breech_face"]["method"] == "existing"
        oy, ox = (round(o / 6.25) for o in prep.meta["prepared"]["origin_um"])
        same = scan.heights[oy : oy + prep.shape[0], ox : ox + prep.shape[1]]
        assert _corr(same, prep.heights) >= 0.95
        assert prep.n_valid >= 0.95 * scan.n_valid


@pytest.mark.realdata
def test_dfsc_found_mask_agrees_with_file_mask(raw_dfsc_dir):
    for path in sorted(raw_dfsc_dir.glob("*.x3p")):
        scan = bl.read_scan(path, apply_mask=False)
        file_mask = np.asarray(scan.meta["file_mask"], bool)
        face = bl.find_breech_face(scan)
        assert face.method == "fit"
        assert _iou(face.mask, file_mask) >= 0.9
        # by default preprocess uses the stored ROI when there is one
        prep = bl.preprocess(scan)
        assert prep.meta["prepared"]["breech_face"]["method"] == "file"
