"""Each Numba kernel against its slow NumPy twin (tests/reference.py) on random, NaN-holed
and constant inputs."""

from __future__ import annotations

import numpy as np
import pytest

import reference as R
from balllink import _kernels as K

KINDS = ("random", "holes", "constant")


def make(kind: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return np.full(shape, 3.5, np.float32)
    z = rng.standard_normal(shape).astype(np.float32)
    if kind == "holes":
        z[rng.random(shape) < 0.3] = np.nan
        z[..., : max(1, shape[-2] // 4), :3] = np.nan  # a block of missing data
    return z


def same_nan(a, b, **tol):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], **tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("angle", [0.0, 3.0, -27.0, 90.0, 181.5])
def test_rotate_nearest(kind, angle):
    img = make(kind, (23, 31), seed=1)
    ny, nx = img.shape
    got = K.rotate_nearest(img, angle, ny // 2, nx // 2)
    same_nan(got, R.rotate_nearest(img, angle, ny // 2, nx // 2), rtol=0, atol=0)


def test_rotate_nearest_identity_and_quarter_turn():
    img = make("random", (21, 21), seed=2)
    np.testing.assert_array_equal(K.rotate_nearest(img, 0.0, 10, 10), img)
    # CImg's positive angle is clockwise as displayed: out(r, c) = in(10 + (c-10), 10 - (r-10))
    q = K.rotate_nearest(img, 90.0, 10, 10)
    np.testing.assert_array_equal(q, np.rot90(img, k=-1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("angle,dy,dx", [(0.0, 0.0, 0.0), (7.0, 1.5, -2.25), (200.0, -3.0, 0.5)])
def test_warp_rigid_and_stack(kind, angle, dy, dx):
    img = make(kind, (19, 24), seed=3)
    args = (17, 26, angle, 9.0, 11.5, 8.0, 12.5, dy, dx)
    want = R.warp_rigid(img, *args)
    same_nan(K.warp_rigid(img, *args), want, rtol=1e-5, atol=1e-5)
    angles = np.array([angle, angle + 1.0])
    stack = K.warp_stack(img, 17, 26, angles, 9.0, 11.5, 8.0, 12.5, dy, dx)
    same_nan(stack, R.warp_stack(img, 17, 26, angles, 9.0, 11.5, 8.0, 12.5, dy, dx),
             rtol=1e-5, atol=1e-5)  # fmt: skip


def test_warp_rigid_matches_skimage_rotation_sense():
    # a bright dot 8 px right of the centre, rotated +90 (counter-clockwise as displayed),
    # ends 8 px above the centre: the convention shared with balllink.align
    img = np.zeros((33, 33), np.float32)
    img[16, 24] = 1.0
    out = K.warp_rigid(img, 33, 33, 90.0, 16.0, 16.0, 16.0, 16.0, 0.0, 0.0)
    assert np.unravel_index(np.nanargmax(out), out.shape) == (8, 16)


def _index_inputs(kind, seed):
    rng = np.random.default_rng(seed)
    cells = make(kind, (5, 9, 8), seed=seed)
    regions = make(kind, (5, 20, 21), seed=seed + 1)
    ridx = np.full((5, 2, 9), -2, np.int64)
    cidx = np.full((5, 2, 8), -2, np.int64)
    for k in range(5):
        for v in range(1 + k % 2):
            r0, c0 = rng.integers(-4, 15), rng.integers(-4, 16)
            ridx[k, v] = np.arange(r0, r0 + 9)
            cidx[k, v] = np.arange(c0, c0 + 8)
            ridx[k, v][ridx[k, v] >= 20] = -1
            ridx[k, v][ridx[k, v] < 0] = -1
            cidx[k, v][cidx[k, v] < 0] = -1
    return cells, regions, ridx, cidx


@pytest.mark.parametrize("kind", KINDS)
def test_index_corr(kind):
    cells, regions, ridx, cidx = _index_inputs(kind, 4)
    same_nan(K.index_corr(cells, regions, ridx, cidx), R.index_corr(cells, regions, ridx, cidx),
             rtol=1e-9, atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_masked_ncc_search(kind):
    cells = make(kind, (3, 7, 6), seed=5)
    regions = make(kind, (3, 12, 13), seed=6)
    min_n = np.array([5, 20, 30], np.int64)
    same_nan(K.masked_ncc_search(cells, regions, min_n),
             R.masked_ncc_search(cells, regions, min_n), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_masked_ncc_is_not_nan_to_zero():
    # a cell and its region agree exactly where both are valid: per-offset normalisation
    # over jointly valid pixels gives 1, NaN-to-zero filling would not
    rng = np.random.default_rng(7)
    region = rng.standard_normal((14, 14)).astype(np.float32)
    cell = region[3:10, 4:11].copy() * 2.0 + 5.0
    cell[rng.random(cell.shape) < 0.4] = np.nan
    region[rng.random(region.shape) < 0.2] = np.nan
    ncc = K.masked_ncc_search(cell[None], region[None], np.array([5]))
    assert abs(ncc[0, 3, 4] - 1.0) < 1e-5
    assert np.nanargmax(ncc[0]) == 3 * ncc.shape[2] + 4


@pytest.mark.parametrize("kind", KINDS)
def test_cell_search(kind):
    cells = make(kind, (4, 6, 7), seed=8)
    stack = make(kind, (2, 30, 32), seed=9)
    r0 = np.array([0, 5, 10, 14], np.int64)
    c0 = np.array([3, 0, 12, 17], np.int64)
    min_n = np.full(4, 10, np.int64)
    got = K.cell_search(cells, stack, r0, c0, 3, min_n)
    want = R.cell_search(cells, stack, r0, c0, 3, min_n)
    same_nan(got[2], want[2], rtol=1e-5, atol=1e-5)
    ok = np.isfinite(want[2])
    np.testing.assert_array_equal(got[0][ok], want[0][ok])
    np.testing.assert_array_equal(got[1][ok], want[1][ok])


def _decision_inputs(kind, seed):
    rng = np.random.default_rng(seed)
    nt, nc = 7, 30
    dx = rng.integers(-40, 40, (nt, nc)).astype(float)
    dy = rng.integers(-40, 40, (nt, nc)).astype(float)
    corr = rng.uniform(-0.2, 1.0, (nt, nc))
    present = rng.random((nt, nc)) < 0.85
    if kind == "holes":
        corr[rng.random((nt, nc)) < 0.2] = np.nan
    if kind == "constant":
        dx[:] = 3.0
        dy[:] = -2.0
        corr[:] = 0.6
    return np.arange(nt) * 3.0 - 9.0, dx, dy, corr, present


@pytest.mark.parametrize("kind", KINDS)
def test_high_cmc_candidates(kind):
    _, dx, dy, corr, present = _decision_inputs(kind, 10)
    np.testing.assert_array_equal(
        K.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5),
        R.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_original_cmc(kind):
    theta, dx, dy, corr, present = _decision_inputs(kind, 11)
    np.testing.assert_array_equal(
        K.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5),
        R.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_gathered_argmax(kind):
    rng = np.random.default_rng(12)
    maps = make(kind, (4, 16, 16), seed=12)
    ridx = rng.integers(0, 16, (4, 10))
    cidx = rng.integers(0, 16, (4, 12))
    nr = np.array([10, 3, 7, 1])
    nc = np.array([12, 5, 1, 9])
    got = K.gathered_argmax(maps, ridx, cidx, nr, nc)
    want = R.gathered_argmax(maps, ridx, cidx, nr, nc)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", KINDS)
def test_cmcr_regions(kind):
    rot = make(kind, (40, 44), seed=13)
    rot[:6] = np.nan  # a mostly missing band
    geom = np.array(
        [
            [0, 19, 0, 24, 5, 0, 25, 25],  # NA rows on top (touches the top edge)
            [10, 29, 12, 31, 0, 0, 20, 20],
            [0, 5, 3, 20, 12, 0, 18, 18],  # from the missing band: dropped
            [0, 0, 0, 0, 0, 0, 0, 0],  # no region
        ],
        dtype=np.int64,
    )
    shape = (4, 32, 32)
    got_b, got_n = np.full(shape, 7.0, np.float32), np.full((4, 25, 25), 7.0, np.float32)
    want_b, want_n = got_b.copy(), got_n.copy()
    used = K.cmcr_regions(rot, geom, 0.85, got_b, got_n)
    np.testing.assert_array_equal(used, R.cmcr_regions(rot, geom, 0.85, want_b, want_n))
    for i in np.flatnonzero(used):
        same_nan(got_n[i], want_n[i], rtol=1e-5, atol=1e-5)
        h, w = geom[i, 6:]
        same_nan(got_b[i, :h, :w], want_b[i, :h, :w], rtol=1e-5, atol=1e-5)
