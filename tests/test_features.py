"""Local keypoint descriptors: shape, invariance to a planted rotation/shift, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import balllink as bl
from balllink.features import DESCRIPTOR_DIM, POSE_COLUMNS, embed, embed_many
from helpers import rotate_scan


def _surface(seed=0, n=240, spacing=6.25, annulus=True):
    rng = np.random.default_rng(seed)
    z = ndimage.gaussian_filter(rng.normal(size=(n, n)), 2.0)
    z = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.0) + 3 * z
    if annulus:
        yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
        r = np.hypot(yy, xx)
        z[(r > 0.47 * n) | (r < 0.15 * n)] = np.nan
    return bl.Scan(z.astype(np.float32), spacing_um=spacing)


def test_embed_rows_are_poses_plus_unit_descriptors():
    rows = embed(_surface())
    assert rows.dtype == np.float32
    assert rows.shape[1] == POSE_COLUMNS + DESCRIPTOR_DIM
    assert 20 < len(rows) <= 256
    np.testing.assert_allclose(np.linalg.norm(rows[:, POSE_COLUMNS:], axis=1), 1.0, atol=1e-5)
    assert np.all(np.abs(rows[:, 2]) <= np.pi + 1e-6)
    np.testing.assert_array_equal(rows, embed(_surface()))  # deterministic


@pytest.mark.parametrize("deg", [0.0, 73.0, 181.0, 300.0])
def test_planted_rotation_is_recovered_by_matched_keypoints(deg):
    scan = _surface(1)
    a = embed(scan)
    b = embed(rotate_scan(scan, deg, (3.0, -5.0)))
    sim = b[:, POSE_COLUMNS:] @ a[:, POSE_COLUMNS:].T
    j = sim.argmax(axis=1)
    good = sim.max(axis=1) > 0.9
    assert good.sum() >= 0.4 * len(b)
    dphi = np.degrees(np.angle(np.exp(1j * (b[good, 2] - a[j[good], 2]))))
    err = np.abs((dphi - deg + 180) % 360 - 180)
    assert np.median(err) < 5.0
    # positions follow the same rotation (about the canvas centre) and shift
    t = np.radians(deg)
    py, px = a[j[good], 0], a[j[good], 1]
    ry, rx = np.cos(t) * py - np.sin(t) * px, np.sin(t) * py + np.cos(t) * px
    dy = b[good, 0] - ry
    dx = b[good, 1] - rx
    assert np.median(np.abs(dy - np.median(dy))) < 15.0
    assert np.median(np.abs(dx - np.median(dx))) < 15.0


def test_unrelated_surfaces_do_not_match_like_a_rotated_copy():
    a = embed(_surface(2))
    b = embed(_surface(3))
    c = embed(rotate_scan(_surface(2), 123.0))
    s_other = (b[:, POSE_COLUMNS:] @ a[:, POSE_COLUMNS:].T).max(axis=1)
    s_same = (c[:, POSE_COLUMNS:] @ a[:, POSE_COLUMNS:].T).max(axis=1)
    assert np.median(s_same) > np.median(s_other) + 0.05


def test_spacing_is_handled_by_averaging_to_the_work_grid():
    fine = _surface(4, n=240, spacing=6.25, annulus=False)
    z = fine.heights.reshape(120, 2, 120, 2).mean(axis=(1, 3))
    coarse = bl.Scan(z, spacing_um=12.5)
    # the descriptor's own averaging (as given: preparing would resample both to 6.25 µm)
    np.testing.assert_allclose(embed(fine, prepare=False), embed(coarse, prepare=False), atol=1e-4)


def test_empty_and_constant_scans_give_no_rows():
    assert embed(bl.Scan(np.full((50, 50), np.nan), spacing_um=6.25)).shape == (
        0,
        POSE_COLUMNS + DESCRIPTOR_DIM,
    )
    assert len(embed(bl.Scan(np.ones((80, 80)), spacing_um=6.25))) == 0


def test_bad_input_is_refused_with_a_fix():
    with pytest.raises(TypeError, match=r"bl\.Scan"):
        embed(np.zeros((10, 10)))
    # as given, a grid the descriptor cannot use is refused with the fix...
    with pytest.raises(ValueError, match="spacing"):
        embed(bl.Scan(np.zeros((10, 10)), spacing_um=50.0), prepare=False)
    with pytest.raises(ValueError, match="square"):
        embed(bl.Scan(np.zeros((10, 10)), spacing_um=(6.25, 12.5)), prepare=False)
    # ...which the default applies: the scan is prepared (resampled to 6.25 µm) first
    z = np.random.default_rng(0).normal(size=(60, 30)).astype(np.float32)
    rows = embed(bl.Scan(z, spacing_um=(6.25, 12.5)))
    assert rows.shape[1] == POSE_COLUMNS + DESCRIPTOR_DIM


def test_embed_many_reports_progress():
    seen = []
    out = embed_many([_surface(5), _surface(6)], progress=lambda d, t: seen.append((d, t)))
    assert len(out) == 2 and seen == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(out[0], embed(_surface(5)))
