"""The shared masked-grid operations (``balllink._grid``) against slow, obvious twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from balllink._grid import (
    block_mean,
    gaussian_stack,
    nan_block_mean,
    nan_gaussian,
    warp_weighted,
)

# --------------------------------------------------------------------------- reference twins


def _block_mean_loops(z, valid, ky, kx):
    """Block by block, point by point: the mean of the valid points and their share."""
    ny, nx = z.shape[0] // ky, z.shape[1] // kx
    mean = np.full((ny, nx), np.nan)
    share = np.zeros((ny, nx))
    for i in range(ny):
        for j in range(nx):
            values = [
                float(z[i * ky + a, j * kx + b])
                for a in range(ky)
                for b in range(kx)
                if valid[i * ky + a, j * kx + b]
            ]
            if values:
                mean[i, j] = sum(values) / len(values)
            share[i, j] = len(values) / (ky * kx)
    return mean, share


def _nan_block_mean_loops(z, f, min_share):
    mean, share = _block_mean_loops(z, np.isfinite(z), f, f)
    mean[share < min_share] = np.nan
    return mean


def _grids():
    """Random, NaN-holed, constant and all-NaN grids of awkward shapes."""
    rng = np.random.default_rng(7)
    random = rng.normal(size=(23, 31)).astype(np.float32)
    holed = random.copy()
    holed[rng.random(holed.shape) < 0.4] = np.nan
    holed[:6, :9] = np.nan  # whole blocks without a point
    constant = np.full((17, 12), 3.25, np.float32)
    constant[5, 5] = np.nan
    return {
        "random": random,
        "holed": holed,
        "constant": constant,
        "all_nan": np.full((8, 8), np.nan, np.float32),
    }


@pytest.mark.parametrize("name", ["random", "holed", "constant", "all_nan"])
@pytest.mark.parametrize(("ky", "kx"), [(1, 1), (2, 2), (3, 2), (4, 5)])
def test_block_mean_matches_its_loop_twin(name, ky, kx):
    z = _grids()[name]
    valid = np.isfinite(z)
    mean, share = block_mean(z, valid, ky, kx)
    ref_mean, ref_share = _block_mean_loops(z, valid, ky, kx)
    assert mean.dtype == share.dtype == np.float32
    assert mean.shape == ref_mean.shape == (z.shape[0] // ky, z.shape[1] // kx)
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_mean))
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(share, ref_share, rtol=1e-7)


def test_block_mean_ignores_what_is_not_valid_even_when_finite():
    z = np.array([[1.0, 1000.0], [3.0, 5.0]], np.float32)
    valid = np.array([[True, False], [True, True]])
    result = block_mean(z, valid, 2)
    assert result.mean[0, 0] == pytest.approx(3.0)  # (1 + 3 + 5) / 3, the 1000 ignored
    assert result.share[0, 0] == pytest.approx(0.75)


@pytest.mark.parametrize("name", ["random", "holed", "constant", "all_nan"])
@pytest.mark.parametrize("f", [2, 3, 4])
@pytest.mark.parametrize("min_share", [0.25, 0.5, 0.9])
def test_nan_block_mean_matches_its_loop_twin(name, f, min_share):
    z = _grids()[name]
    out = nan_block_mean(z, f, min_share=min_share)
    ref = _nan_block_mean_loops(z, f, min_share)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_nan_block_mean_needs_half_a_block_by_default():
    z = np.full((2, 4), np.nan, np.float32)
    z[0, 0], z[1, 0] = 2.0, 4.0  # half of the first block
    z[0, 2] = 9.0  # a quarter of the second
    out = nan_block_mean(z, 2)
    assert out[0, 0] == 3.0 and np.isnan(out[0, 1])


def test_nan_block_mean_of_factor_one_is_the_grid_as_float32():
    z = np.arange(6.0).reshape(2, 3)
    out = nan_block_mean(z, 1)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, z)


# --------------------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("sigma", [1.0, 2.5, (1.5, 4.0)])
def test_nan_gaussian_on_a_valid_grid_is_the_plain_gaussian_inside(sigma):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(90, 110)).astype(np.float32)
    out, weight = nan_gaussian(z, np.ones(z.shape, bool), sigma)
    ref = ndi.gaussian_filter(z.astype(np.float64), sigma, mode="constant")
    # farther than the kernel's reach (4 σ) from the edge, the weight is 1 and the
    # normalised convolution is the plain Gaussian
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    m = (math.ceil(4 * sy) + 1, math.ceil(4 * sx) + 1)
    inner = (slice(m[0], -m[0]), slice(m[1], -m[1]))
    np.testing.assert_allclose(weight[inner], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[inner], ref[inner], atol=1e-5)
    # and it renormalises at the edge, where the plain Gaussian pulls towards zero
    assert np.all(weight[0, :] < 0.8)


def test_a_nan_hole_does_not_pull_a_constant_surface():
    # planted: a constant 5 µm surface with an unmeasured hole stays 5 right next to it,
    # where replacing NaN with zero (a plain Gaussian) pulls it down by far more
    z = np.full((64, 64), 5.0, np.float32)
    z[20:40, 25:45] = np.nan
    valid = np.isfinite(z)
    out, weight = nan_gaussian(z, valid, 2.0)
    ring = ndi.binary_dilation(~valid, iterations=2) & valid  # the two pixels next to it
    assert ring.sum() > 100
    np.testing.assert_allclose(out[ring], 5.0, atol=1e-5)
    assert np.all(weight[ring] < 0.9)
    plain = ndi.gaussian_filter(np.where(valid, z, 0.0), 2.0, mode="constant")
    assert np.max(np.abs(plain[ring] - 5.0)) > 1.0
    # deep inside the hole the weight vanishes and nothing is invented
    assert np.isnan(out[30, 35])


def test_nan_gaussian_keeps_float32_unless_asked():
    z = np.ones((12, 12), np.float64)
    assert nan_gaussian(z, np.isfinite(z), 1.0).values.dtype == np.float32
    assert nan_gaussian(z, np.isfinite(z), 1.0, dtype=np.float64).weight.dtype == np.float64


@pytest.mark.parametrize("sigma", [6.5, 9.0, (7.0, 12.0), (0.0, 10.0)])
def test_fft_branch_equals_the_separable_gaussian(sigma):
    # σ above six pixels runs by FFT: the same filter as ndimage's separable one
    rng = np.random.default_rng(5)
    stack = rng.normal(size=(2, 150, 170)).astype(np.float32)
    stack[1] = stack[1] > 0  # a validity layer, as nan_gaussian stacks them
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    assert max(sy, sx) > 6.0  # the FFT route
    fast = stack.copy()
    gaussian_stack(fast, sigma)
    separable = ndi.gaussian_filter(
        stack.astype(np.float64), (0.0, sy, sx), mode="constant", truncate=4.0
    )
    scale = np.abs(separable).max()
    np.testing.assert_allclose(fast, separable, atol=2e-6 * scale)
    assert fast.dtype == np.float32


def test_fft_and_separable_normalised_convolutions_agree_on_a_holed_grid():
    # the same σ just below and just above the switch: both routes give one answer
    rng = np.random.default_rng(8)
    z = ndi.gaussian_filter(rng.normal(size=(120, 120)), 3).astype(np.float32)
    z[rng.random(z.shape) < 0.2] = np.nan
    z[40:70, 50:90] = np.nan
    valid = np.isfinite(z)
    fft, _ = nan_gaussian(z, valid, 6.0001)
    ref = ndi.gaussian_filter(np.where(valid, z, 0.0), 6.0001, mode="constant")
    ref /= ndi.gaussian_filter(valid.astype(float), 6.0001, mode="constant")
    np.testing.assert_allclose(fft, ref, rtol=0, atol=2e-5 * np.nanstd(ref))


# --------------------------------------------------------------------------- warp_weighted


def _surface(yy, xx):
    return np.sin(xx / 7.0) + np.cos(yy / 5.0) + 0.01 * xx


@pytest.mark.parametrize("theta", [0.0, 17.0, 90.0, 233.0])
def test_warp_weighted_recovers_a_planted_rotation(theta):
    # input: an analytic surface; output point o samples the input at R (o - c) + c
    n = 81
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    z = _surface(yy, xx)
    t = np.deg2rad(theta)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.array([(n - 1) / 2, (n - 1) / 2])
    out = warp_weighted(z, np.ones_like(z), r, c - r @ c, output_shape=(n, n))
    sy = r[0, 0] * (yy - c[0]) + r[0, 1] * (xx - c[1]) + c[0]
    sx = r[1, 0] * (yy - c[0]) + r[1, 1] * (xx - c[1]) + c[1]
    inside = (sy >= 1) & (sy <= n - 2) & (sx >= 1) & (sx <= n - 2)
    expected = _surface(sy, sx)
    # bilinear interpolation of a surface with curvature < 1/25: error below 0.02
    assert np.nanmax(np.abs(out.values - expected)[inside]) < 0.02
    assert np.all(out.weight[inside] > 0.999)


def test_warp_weighted_ignores_unmeasured_points():
    # a constant surface with a hole of garbage: the normalised warp stays constant beside
    # the hole (a plain warp of the zero-filled grid would be pulled towards zero)
    z = np.full((40, 40), 3.0, np.float32)
    valid = np.ones_like(z)
    z[15:25, 15:25], valid[15:25, 15:25] = 0.0, 0.0
    shift = (0.0, 0.5)
    out = warp_weighted(z * valid, valid, np.eye(2), shift, output_shape=z.shape)
    ok = out.weight > 0.25
    assert np.allclose(out.values[ok], 3.0, atol=1e-6)
    assert np.isnan(out.values[18, 18]) and out.weight[18, 18] == 0.0
    plain = warp_weighted(z * valid, np.ones_like(z), np.eye(2), shift, output_shape=z.shape)
    assert abs(float(plain.values[18, 14]) - 3.0) > 1.0  # what the weights prevent


def test_warp_weighted_keeps_float32():
    z = np.ones((8, 8), np.float32)
    out = warp_weighted(z, z, (0.5, 0.5), output_shape=(16, 16))
    assert out.values.dtype == np.float32 and out.weight.dtype == np.float32
