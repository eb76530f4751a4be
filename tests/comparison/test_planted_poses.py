"""Planted poses on synthetic surfaces (no real data): the cmcR mode, the default cell search
with its handedness search, and the brute-force fallback each find the pose a copy was
made with, and an unrelated surface gives (almost) nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

import balllink as bl
from balllink.align import angle_diff
from balllink.comparison import _coarse, prepared

SPACING = 6.25


def _surface(seed: int, n: int = 256) -> bl.Scan:
    """A rough random surface (texture of about one pixel) on a disc, NaN outside."""
    rng = np.random.default_rng(seed)
    z = ndi.gaussian_filter(rng.standard_normal((n, n)), 0.7)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    z[np.hypot(yy, xx) > 0.48 * n] = np.nan
    return bl.Scan((z / np.nanstd(z)).astype(np.float32), spacing_um=SPACING, source=f"s{seed}")


def _planted(scan: bl.Scan, theta: float, dy_px: float, dx_px: float) -> bl.Scan:
    """b such that b turned by theta about its centre and moved by (dy, dx) px lands on
    ``scan`` (the documented pose), resampled NaN-aware with scipy (not our kernels)."""
    a = scan.masked_heights().astype(np.float64)
    t = math.radians(theta)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    c = (np.array(a.shape) - 1) / 2
    off = c - rot @ c + np.array([dy_px, dx_px])
    ok = np.isfinite(a)
    v = ndi.affine_transform(np.where(ok, a, 0.0), rot, offset=off, order=1)
    w = ndi.affine_transform(ok.astype(float), rot, offset=off, order=1)
    b = np.where(w > 0.99, v / np.maximum(w, 1e-9), np.nan).astype(np.float32)
    return bl.Scan(b, spacing_um=SPACING, source=f"planted-{theta}")


def _mirror_export(scan: bl.Scan) -> bl.Scan:
    """The scan as a tool that stores rows the other way round writes it (handedness not
    recorded)."""
    return bl.Scan(np.flipud(scan.masked_heights()), spacing_um=SPACING, source="flipped")


def _check_pose(cmp, theta: float, dy: float, dx: float, tol_deg: float, tol_px: float):
    assert angle_diff(cmp.rotation_deg, theta) <= tol_deg, cmp.rotation_deg
    err = np.subtract(np.array(cmp.translation_um) / SPACING, (dy, dx))
    assert np.all(np.abs(err) <= tol_px), cmp.translation_um


@pytest.fixture(scope="module")
def surface() -> bl.Scan:
    return _surface(0)


# ---- the cmcR mode -------------------------------------------------------------------------


@pytest.mark.parametrize(("theta", "dy", "dx"), [(9.0, 6.0, -4.0), (-15.0, -5.0, 8.0)])
def test_cmcr_mode_finds_planted_pose(surface, theta, dy, dx):
    # cmcR searches -30..30 degrees by 3 and offsets by whole pixels: the planted angles are
    # on its grid, the translation comes back within a pixel
    cmp = bl.compare(surface, _planted(surface, theta, dy, dx), method="cmcr")
    _check_pose(cmp, theta % 360.0, dy, dx, tol_deg=1e-6, tol_px=1.0)
    d1, d2 = cmp.directions
    assert d1.high_passed and d2.high_passed
    assert cmp.cmc_count >= 0.9 * min(d1.n_cells, d2.n_cells) > 40
    assert cmp.lead and cmp.reason == ""


def test_cmcr_mode_unrelated_surface_gives_few(surface):
    cmp = bl.compare(surface, _surface(1), method="cmcr")
    assert cmp.cmc_count <= 2 and not cmp.lead
    assert all(d.cmc_original <= 3 for d in cmp.directions)


# ---- the default cell search -----------------------------------------------------------------

# the surfaces are 1.5 mm² (below the default minimum evidence): scored all the same
CFG = bl.CMCConfig(min_area_mm2=0.0)


@pytest.mark.parametrize(("theta", "dy", "dx"), [(127.0, 6.0, -4.0), (250.0, -3.0, 5.0)])
def test_default_finds_planted_pose_and_its_mirror_image(surface, theta, dy, dx):
    b = _planted(surface, theta, dy, dx)
    cmp = bl.compare(surface, b, config=CFG, prepare=False)
    _check_pose(cmp, theta, dy, dx, tol_deg=0.5, tol_px=1.0)
    n_cells = sum(d.n_cells for d in cmp.directions)
    assert cmp.cmc_count >= 0.9 * n_cells > 80
    assert cmp.lead and not cmp.mirrored and cmp.score > 0.99
    # the same copy exported mirrored: found as the mirror image, with the same pose (the
    # pose places the mirror image of what was given, i.e. b, on a)
    flipped = _mirror_export(b)
    for handedness in ("auto", "both"):
        cfg = bl.CMCConfig(min_area_mm2=0.0, handedness=handedness)
        m = bl.compare(surface, flipped, config=cfg, prepare=False)
        assert m.mirrored and m.lead, handedness
        assert m.cmc_count == cmp.cmc_count
        _check_pose(m, theta, dy, dx, tol_deg=0.5, tol_px=1.0)
    # told the handedness is the same, the mirror image is not looked at: nothing matches
    same = bl.CMCConfig(min_area_mm2=0.0, handedness="same")
    m = bl.compare(surface, flipped, config=same, prepare=False)
    assert not m.mirrored and not m.lead and m.cmc_count <= 3


def test_default_unrelated_surface_gives_few(surface):
    cmp = bl.compare(surface, _surface(1), config=CFG, prepare=False)
    assert cmp.cmc_count <= 3 and not cmp.lead and cmp.raw_score < 0.05


def test_brute_force_fallback_finds_planted_pose(surface, monkeypatch):
    # when the coarse alignment finds nothing, the brute-force search (align's masked NCC
    # over every coarse angle) must still find the pose
    monkeypatch.setattr(_coarse, "coarse_align", lambda *a, **k: [])
    monkeypatch.setattr(_coarse, "coarse_align_either", lambda *a, **k: ([], False))
    cfg = bl.CMCConfig(min_area_mm2=0.0, handedness="same")
    cmp = bl.compare(surface, _planted(surface, 203.0, -6.0, 3.0), config=cfg, prepare=False)
    _check_pose(cmp, 203.0, -6.0, 3.0, tol_deg=0.5, tol_px=1.0)
    assert cmp.lead
    poses = _coarse.brute_force_poses(
        *(prepared(s, cfg) for s in (surface, _planted(surface, 203.0, 0, 0))),
        cfg,
    )
    assert len(poses) == cfg.coarse_candidates and angle_diff(poses[0].rotation_deg, 203) <= 2.5


def test_union_is_another_name_for_sum():
    assert bl.CMCConfig(combine="union") == bl.CMCConfig(combine="sum")
    with pytest.raises(ValueError, match="combine"):
        bl.CMCConfig(combine="either")
