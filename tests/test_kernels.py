"""Each Numba kernel against its slow NumPy twin (tests/reference.py) on random, NaN-holed
and constant inputs.

A constant input makes a correlation or a standard deviation undefined: there the kernels
return NaN, and the tests assert that NaN explicitly on the kernel and on its twin, then
check a constant plus tiny noise input whose answer is known (a planted linear copy
correlates 1 or -1, a standardised region has mean 0 and sd 1). ``make coverage-kernels``
runs this module with ``NUMBA_DISABLE_JIT=1`` to measure the kernels' line coverage.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import config

import reference as R
from balllink import _kernels as K

KINDS = ("random", "holes", "constant")
#: With the JIT off (``make coverage-kernels``) the kernels run as Python, where NumPy 2
#: keeps ``0.0 + float32`` in float32 (NEP 50): their sums are then float32, not the
#: float64 that Numba infers, and agree with the float64 twins to ~1e-7 relative only.
TIGHT = 1e-5 if config.DISABLE_JIT else 1e-9


def make(kind: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return np.full(shape, 3.5, np.float32)
    z = rng.standard_normal(shape).astype(np.float32)
    if kind == "holes":
        z[rng.random(shape) < 0.3] = np.nan
        z[..., : max(1, shape[-2] // 4), :3] = np.nan  # a block of missing data
    return z


def tiny_noise(shape, seed: int = 0, amplitude: float = 1e-3) -> np.ndarray:
    """The constant input plus small noise (sd ``amplitude``): every statistic defined again."""
    rng = np.random.default_rng(seed)
    return (3.5 + amplitude * rng.standard_normal(shape)).astype(np.float32)


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
    got = K.index_corr(cells, regions, ridx, cidx)
    want = R.index_corr(cells, regions, ridx, cidx)
    same_nan(got, want, rtol=TIGHT, atol=TIGHT)
    if kind == "constant":  # a constant cell has no correlation: NaN, on both sides
        assert np.isnan(got).all() and np.isnan(want).all()
    else:
        assert np.isfinite(got).sum() >= 4


def test_index_corr_constant_plus_tiny_noise_has_the_planted_correlation():
    # cell 0 is copied (2 x + 1) into its region by variant 0 and negated (1 - x) by
    # variant 1: the best variant correlates 1; cell 1 has only the negated variant: -1.
    # Everything else in the regions is the constant 3.5, and the cells vary by 1e-3 only.
    cells = tiny_noise((2, 4, 5), seed=1)
    regions = np.full((2, 10, 10), 3.5, np.float32)
    ridx = np.full((2, 3, 4), -2, np.int64)  # third variant slot unused
    cidx = np.full((2, 3, 5), -2, np.int64)
    for k in range(2):
        regions[k, 5:9, 0:5] = 1.0 - cells[k]
        ridx[k, 1], cidx[k, 1] = np.arange(5, 9), np.arange(0, 5)
    regions[0, 2:6, 3:8] = 2.0 * cells[0] + 1.0
    ridx[0, 0], cidx[0, 0] = np.arange(2, 6), np.arange(3, 8)
    for out in (K.index_corr(cells, regions, ridx, cidx), R.index_corr(cells, regions, ridx, cidx)):
        np.testing.assert_allclose(out, [1.0, -1.0], atol=1e-4)


def test_cell_search_masked_ncc_is_not_nan_to_zero():
    # a cell and its region agree exactly where both are valid: per-offset normalisation
    # over jointly valid pixels gives 1, NaN-to-zero filling would not
    rng = np.random.default_rng(7)
    stack = rng.standard_normal((1, 20, 20)).astype(np.float32)
    cell = stack[0, 5:12, 6:13].copy() * 2.0 + 5.0
    cell[rng.random(cell.shape) < 0.4] = np.nan
    stack[rng.random(stack.shape) < 0.2] = np.nan
    r0, c0, margin = np.array([3]), np.array([4]), 3  # the cell sits 2 px further: dy=dx=-1
    dy, dx, corr = K.cell_search(cell[None], stack, r0, c0, margin, np.array([5]))
    assert abs(corr[0, 0] - 1.0) < 1e-5
    assert (dy[0, 0], dx[0, 0]) == (-1, -1)


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
    if kind == "constant":  # no offset has a defined NCC: NaN, and the offset stays 0
        assert np.isnan(got[2]).all() and np.isnan(want[2]).all()
        for out in (*got[:2], *want[:2]):
            np.testing.assert_array_equal(out, 0)
    else:
        assert ok.all()


def _planted_offset_case(amplitude):
    # image 0: a constant stack holding 2 x + 1 of a (constant + noise) cell 2 px down and
    # 3 px left of the cell's place: correlation 1 at dy = 2, dx = -3 (margin 4).
    # image 1: constant only, so no offset has a defined NCC: NaN.
    cells = tiny_noise((1, 5, 6), seed=2, amplitude=amplitude)
    stack = np.full((2, 24, 24), 3.5, np.float32)
    stack[0, 10:15, 6:12] = 2.0 * cells[0] + 1.0
    r0, c0 = np.array([4]), np.array([5])  # with margin 4 the cell sits at (8, 9)
    return cells, stack, r0, c0, 4, np.array([10])


def test_cell_search_constant_plus_small_noise_finds_the_planted_offset():
    args = _planted_offset_case(0.1)
    for dy, dx, corr in (K.cell_search(*args), R.cell_search(*args)):
        assert abs(corr[0, 0] - 1.0) < 1e-4 and (dy[0, 0], dx[0, 0]) == (2, -3)
        assert np.isnan(corr[1, 0])


def test_cell_search_ncc_is_exact_for_a_tiny_variance_on_a_large_mean():
    args = _planted_offset_case(1e-3)
    dy, dx, corr = K.cell_search(*args)
    assert (dy[0, 0], dx[0, 0]) == (2, -3)
    assert abs(corr[0, 0] - R.cell_search(*args)[2][0, 0]) < 1e-4


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
    got = K.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5)
    np.testing.assert_array_equal(got, R.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5))
    if kind == "constant":  # every present cell agrees with the median and passes 0.5
        np.testing.assert_array_equal(got, present)
    else:
        assert 0 < got.sum() < present.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_original_cmc(kind):
    theta, dx, dy, corr, present = _decision_inputs(kind, 11)
    got = K.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5)
    np.testing.assert_array_equal(got, R.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5))
    if kind == "constant":
        # all correlations tie, so each cell keeps every present angle; the median angle
        # (theta = -9, -6, ..., 9: median 0) admits |theta| <= 6 only
        want = present & (np.abs(theta) <= 6.0)[:, None]
        np.testing.assert_array_equal(got, want)
        assert want.any()


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
    if kind == "constant":  # all entries tie: the first one (row-major) wins
        np.testing.assert_array_equal(got, np.zeros((2, 4)))


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
    assert used.tolist() == [True, True, False, False]
    for i in np.flatnonzero(used):
        same_nan(got_n[i], want_n[i], rtol=1e-5, atol=1e-5)
        h, w = geom[i, 6:]
        same_nan(got_b[i, :h, :w], want_b[i, :h, :w], rtol=1e-5, atol=1e-5)
        if kind == "constant":  # sd 0: nothing to standardise, NaN (and 0 in the buffer)
            assert np.isnan(got_n[i]).all() and np.isnan(want_n[i]).all()
            assert (got_b[i, :h, :w] == 0).all() and (want_b[i, :h, :w] == 0).all()
        else:
            assert np.isfinite(got_n[i]).sum() > 100


def test_cmcr_regions_constant_plus_tiny_noise_is_standardised():
    rot = tiny_noise((30, 30), seed=3)
    geom = np.array([[2, 21, 4, 23, 0, 0, 20, 20]], np.int64)
    got_b, got_n = np.zeros((1, 20, 20), np.float32), np.zeros((1, 20, 20), np.float32)
    want_b, want_n = got_b.copy(), got_n.copy()
    assert K.cmcr_regions(rot, geom, 0.5, got_b, got_n).tolist() == [True]
    assert R.cmcr_regions(rot, geom, 0.5, want_b, want_n).tolist() == [True]
    region = rot[2:22, 4:24].astype(float)
    z = (region - region.mean()) / region.std(ddof=1)
    tol = 1e-3 if config.DISABLE_JIT else 1e-5  # see TIGHT
    for out in (got_n[0], want_n[0], got_b[0], want_b[0]):
        assert abs(out.mean()) < tol and abs(out.std(ddof=1) - 1.0) < tol
        np.testing.assert_allclose(out, z, atol=10 * tol)


def test_too_few_valid_values_give_the_defined_empty_answer():
    """Nearly empty inputs: each kernel's "nothing to compute" branch, against its twin."""
    # index_corr: one finite pixel in the cell, no correlation
    cells = np.full((1, 3, 3), np.nan, np.float32)
    cells[0, 1, 1] = 2.0
    regions = make("random", (1, 6, 6), seed=20)
    ridx, cidx = np.arange(3)[None, None], np.arange(3)[None, None]
    for out in (K.index_corr(cells, regions, ridx, cidx), R.index_corr(cells, regions, ridx, cidx)):
        assert np.isnan(out).all()
    # cmcr_regions: a region of one finite pixel is kept (max_missing 1) but not standardised
    rot = np.full((8, 8), np.nan, np.float32)
    rot[3, 3] = 1.0
    geom = np.array([[0, 7, 0, 7, 0, 0, 8, 8]], np.int64)
    for cmcr in (K.cmcr_regions, R.cmcr_regions):
        rbuf, rnan = np.full((1, 8, 8), 7.0, np.float32), np.full((1, 8, 8), 7.0, np.float32)
        assert cmcr(rot, geom, 1.0, rbuf, rnan).tolist() == [True]
        assert np.isnan(rnan).all() and (rbuf == 0).all()
    # cell_search: cell 0 has fewer valid pixels than min_n; cell 1 has enough, but the
    # stack around it is empty: both give NaN and offset 0
    cells = make("random", (2, 4, 4), seed=21)
    cells[0, 1:] = np.nan
    stack = np.full((1, 16, 16), np.nan, np.float32)
    stack[0, :2, :2] = 1.0
    r0, c0 = np.array([0, 8]), np.array([0, 8])
    for dy, dx, corr in (
        K.cell_search(cells, stack, r0, c0, 2, np.array([8, 8])),
        R.cell_search(cells, stack, r0, c0, 2, np.array([8, 8])),
    ):
        assert np.isnan(corr).all() and not dy.any() and not dx.any()
    # decision rules: a rotation, a cell, or everything absent -> no CMC
    theta, dx, dy, corr, present = _decision_inputs("random", 22)
    present[2] = False  # no cell compared at rotation 2
    present[:, 5] = False  # cell 5 compared at no rotation
    want = R.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5)
    got = K.high_cmc_candidates(dx, dy, corr, present, 20.0, 0.5)
    np.testing.assert_array_equal(got, want)
    assert not got[2].any() and not got[:, 5].any()
    got = K.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5)
    np.testing.assert_array_equal(got, R.original_cmc(dx, dy, theta, corr, present, 20.0, 6.0, 0.5))
    assert not got[:, 5].any()
    nobody = np.zeros_like(present)
    assert not K.original_cmc(dx, dy, theta, corr, nobody, 20.0, 6.0, 0.5).any()
    assert not R.original_cmc(dx, dy, theta, corr, nobody, 20.0, 6.0, 0.5).any()
