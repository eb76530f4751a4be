"""bl.compare / bl.compare_many: planted poses, cmcR faithfulness, real Fadul pairs, bad input."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

import balllink as bl
from balllink.comparison import CELL_DTYPE, _cmcr, _coarse, _prepare


@pytest.fixture(scope="module")
def fadul(fadul_dir):
    names = ["Fadul 1-1.x3p", "Fadul 1-2.x3p", "Fadul 2-1.x3p", "Fadul 10-1.x3p",
             "Fadul 10-2.x3p", "Fadul 3-2.x3p", "Fadul 9-2.x3p"]  # fmt: skip
    return {n: bl.read_scan(fadul_dir / n) for n in names}


def planted_copy(scan: bl.Scan, theta: float, dy_px: float, dx_px: float) -> bl.Scan:
    """A copy ``b`` of ``scan`` such that b rotated by theta (counter-clockwise as displayed)
    about its centre and moved by (dy, dx) px lands on ``scan`` (the documented pose)."""
    a = scan.masked_heights().astype(np.float64)
    t = math.radians(theta)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    c = (np.array(a.shape) - 1) / 2
    # b(p) = a(c + R(theta) (p - c) + d), written with scipy (independent of our kernels)
    b = ndi.affine_transform(a, rot, offset=c - rot @ c + np.array([dy_px, dx_px]), order=1,
                             cval=np.nan)  # fmt: skip
    return bl.Scan(b, spacing_um=scan.spacing_um, source="planted-copy")


def angle_err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("theta,dy,dx", [(37.0, 12.0, -20.0), (163.5, -7.0, 9.0),
                                         (291.0, 15.0, 4.0)])  # fmt: skip
def test_planted_pose_full_circle(fadul, theta, dy, dx):
    a = fadul["Fadul 1-1.x3p"]
    b = planted_copy(a, theta, dy, dx)
    cmp = bl.compare(a, b)
    sp = a.spacing_um[0]
    assert angle_err(cmp.rotation_deg, theta) <= 1.5, cmp.rotation_deg
    assert abs(cmp.translation_um[0] / sp - dy) <= 2, cmp.translation_um
    assert abs(cmp.translation_um[1] / sp - dx) <= 2, cmp.translation_um
    n_cells = sum(d.n_cells for d in cmp.directions)
    assert cmp.cmc_count >= 0.9 * n_cells > 0
    assert cmp.lead and cmp.reason == ""


def test_planted_pose_is_inverted_when_swapped(fadul):
    a = fadul["Fadul 2-1.x3p"]
    b = planted_copy(a, 250.0, -10.0, 6.0)
    fwd = bl.compare(a, b)
    back = bl.compare(b, a)
    assert angle_err(fwd.rotation_deg, 250.0) <= 1.5
    assert angle_err(back.rotation_deg, 110.0) <= 1.5
    # inverse translation: -R(-theta) d
    t = math.radians(250.0)
    inv = (-(math.cos(t) * -10.0 + math.sin(t) * 6.0), -(-math.sin(t) * -10.0 + math.cos(t) * 6.0))
    sp = a.spacing_um[0]
    assert abs(back.translation_um[0] / sp - inv[0]) <= 2
    assert abs(back.translation_um[1] / sp - inv[1]) <= 2


def test_real_pairs_default(fadul):
    km = [("Fadul 1-1.x3p", "Fadul 1-2.x3p"), ("Fadul 10-1.x3p", "Fadul 10-2.x3p")]
    knm = [("Fadul 1-1.x3p", "Fadul 2-1.x3p"), ("Fadul 3-2.x3p", "Fadul 9-2.x3p"),
           ("Fadul 1-2.x3p", "Fadul 10-1.x3p")]  # fmt: skip
    s_km = [bl.compare(fadul[a], fadul[b]) for a, b in km]
    s_knm = [bl.compare(fadul[a], fadul[b]) for a, b in knm]
    assert min(c.score for c in s_km) > max(c.score for c in s_knm)
    assert all(c.lead for c in s_km) and not any(c.lead for c in s_knm)
    # Fadul's scans come roughly pre-oriented: same-gun rotations are within 30 degrees
    assert all(angle_err(c.rotation_deg, 0.0) < 30 for c in s_km)
    cells = s_km[0].cells
    assert cells.dtype == CELL_DTYPE and cells.size > 0
    assert set(np.unique(cells["direction"])) == {0, 1}
    assert np.all((cells["valid_fraction"] > 0) & (cells["valid_fraction"] <= 1))
    assert np.count_nonzero(cells["congruent"]) == s_km[0].cmc_count


def test_compare_many_matches_compare(fadul):
    q = fadul["Fadul 10-1.x3p"]
    cands = [fadul["Fadul 10-2.x3p"], fadul["Fadul 3-2.x3p"]]
    seen = []
    many = bl.compare_many(q, cands, progress=lambda d, t: seen.append((d, t)))
    single = [bl.compare(q, c) for c in cands]
    assert [m.cmc_count for m in many] == [s.cmc_count for s in single]
    assert [m.score for m in many] == pytest.approx([s.score for s in single])
    assert seen == [(1, 2), (2, 2)]


def _reference_rows(reference_dir):
    with open(reference_dir / "cmcr_fadul_pairs.csv", newline="") as fh:
        return {(r["reference"], r["target"]): r for r in csv.DictReader(fh)}


@pytest.mark.parametrize("pair", [("Fadul 10-1.x3p", "Fadul 10-2.x3p"),
                                  ("Fadul 3-2.x3p", "Fadul 9-2.x3p")])  # fmt: skip
def test_cmcr_mode_agrees_with_cmcr(fadul, reference_dir, pair):
    row = _reference_rows(reference_dir)[pair]
    cmp = bl.compare(fadul[pair[0]], fadul[pair[1]], method="cmcr")
    assert abs(cmp.cmc_count - int(row["cmc_final"])) <= 2
    assert (cmp.cmc_count >= 6) == (int(row["cmc_final"]) >= 6)
    d1, d2 = cmp.directions
    assert abs(d1.cmc_original - int(row["cmc_original_ref_target"])) <= 2
    assert abs(d2.cmc_original - int(row["cmc_original_target_ref"])) <= 2
    if row["modal_theta_deg"] != "NA" and cmp.cmc_count >= 6:
        # cmcR's modal theta rotates the target: our pose has the opposite sign
        assert angle_err(cmp.rotation_deg, -float(row["modal_theta_deg"])) <= 3


def test_cmcr_config_values():
    c = bl.CMCConfig.cmcr()
    assert c.grid == (8, 8) and c.region_multiplier == 3
    np.testing.assert_allclose(c.thetas(), np.arange(-30, 31, 3))
    assert (c.translation_threshold_px, c.rotation_threshold_deg) == (20, 6)
    assert (c.correlation_threshold, c.max_missing, c.tau) == (0.5, 0.85, 1)
    assert (c.method, c.combine, c.search) == ("high", "cmcr", "window")
    with pytest.raises(ValueError, match="method"):
        bl.CMCConfig(method="bogus")
    with pytest.raises(ValueError, match="rotation_range"):
        bl.CMCConfig(rotation_range=(5.0, -5.0))


def test_split_bounds_like_cimg():
    # CImg splits 545 px into 8 blocks of 68 or 69, covering every pixel once
    b = _cmcr.split_bounds(545, 8)
    assert len(b) == 8 and b[0][0] == 0 and b[-1][1] == 544
    assert all(b[i + 1][0] == b[i][1] + 1 for i in range(7))
    assert {hi - lo + 1 for lo, hi in b} == {68, 69}


def test_different_spacing_is_resampled(fadul):
    a = fadul["Fadul 1-1.x3p"]
    fine = bl.Scan(
        ndi.zoom(a.masked_heights(), 2.0, order=1, mode="nearest", grid_mode=False),
        spacing_um=a.spacing_um[0] / 2,
        source="fine-copy.x3p",
    )
    cmp = bl.compare(a, fine)
    assert cmp.lead and angle_err(cmp.rotation_deg, 0.0) <= 1.5
    assert max(abs(t) for t in cmp.translation_um) <= 2 * a.spacing_um[0]


def test_bad_input_is_refused_naming_the_scan():
    z = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    a = bl.Scan(z, spacing_um=6.25, source="/x/alpha.x3p")
    oblong = bl.Scan(z, spacing_um=(6.25, 3.0), source="/x/beta.x3p")
    with pytest.raises(bl.PreprocessError, match=r"beta\.x3p.*non-square"):
        bl.compare(oblong, oblong.replace(source="/x/gamma.x3p"), prepare=False)
    # prepared by default: anisotropic pixels are resampled to the square 6.25 µm grid
    cmp = bl.compare(oblong, oblong.replace(source="/x/gamma.x3p"))
    assert cmp.auto_prepared == (True, True) and not cmp.lead
    with pytest.raises(TypeError, match="Scan"):
        bl.compare(a, z)


@pytest.mark.parametrize("config", [None, bl.CMCConfig.cmcr()])
def test_too_few_valid_cells_gives_reason_not_exception(config):
    z = np.full((80, 80), np.nan, np.float32)
    z[40:44, 40:44] = np.arange(16, dtype=np.float32).reshape(4, 4)
    a = bl.Scan(z, spacing_um=6.25, source="tiny.x3p")
    cmp = bl.compare(a, a, config=config)
    assert cmp.cmc_count == 0 and not cmp.lead and cmp.score == 0
    assert "too few valid cells" in cmp.reason or "too little evidence" in cmp.reason


def test_to_pandas_or_clear_import_error():
    z = np.random.default_rng(3).standard_normal((96, 96)).astype(np.float32)
    a = bl.Scan(z, spacing_um=6.25)
    cmp = bl.compare(a, a, config=bl.CMCConfig(downsample=1, search="window"))
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            cmp.to_pandas()
    else:
        df = cmp.to_pandas()
        assert len(df) == len(cmp.cells) and "congruent" in df.columns


def test_builtin_coarse_search_when_align_finds_nothing(fadul, monkeypatch):
    # the brute-force two-stage search compare falls back on must find planted poses too
    monkeypatch.setattr(_coarse, "coarse_align", lambda *a, **k: [])
    monkeypatch.setattr(_coarse, "coarse_align_either", lambda *a, **k: ([], False))
    a = fadul["Fadul 2-1.x3p"]
    b = planted_copy(a, 291.0, 15.0, 4.0)
    cmp = bl.compare(a, b)
    sp = a.spacing_um[0]
    assert angle_err(cmp.rotation_deg, 291.0) <= 1.5
    assert abs(cmp.translation_um[0] / sp - 15.0) <= 2
    assert abs(cmp.translation_um[1] / sp - 4.0) <= 2
    assert cmp.lead


def test_cell_highpass_removes_long_waves_only():
    # the default high-passes the cell-search grid at cell_highpass_um (ISO Gaussian): a
    # 2 mm wave is removed, a 50 µm texture is kept; cmcr() and cell_highpass_um=0 keep both
    y, x = np.mgrid[0:192, 0:192] * 6.25
    long_wave = 5.0 * np.sin(2 * np.pi * x / 2000.0)
    fine = np.sin(2 * np.pi * (x + y) / 50.0)
    scan = bl.Scan((long_wave + fine).astype(np.float32), spacing_um=6.25)
    cfg = bl.CMCConfig(downsample=1)
    kept = _prepare.prepare(scan, cfg).z
    off = _prepare.prepare(scan, replace(cfg, cell_highpass_um=0.0)).z
    inner = (slice(40, -40), slice(40, -40))  # away from the normalised-convolution border
    resid_long = kept[inner] - fine[inner]
    assert np.nanstd(resid_long) < 0.1 * np.nanstd(long_wave[inner])
    assert np.corrcoef(kept[inner].ravel(), fine[inner].ravel())[0, 1] > 0.99
    np.testing.assert_allclose(off, long_wave + fine, atol=1e-4)
    assert bl.CMCConfig.cmcr().cell_highpass_um == 0
    with pytest.raises(ValueError, match="cell_highpass_um"):
        bl.CMCConfig(cell_highpass_um=-1.0)
