"""Operations on masked height grids, written once for every stage.

A height grid travels with a validity mask (or NaN where nothing was measured). Every
stage that averages, smooths or coarsens such a grid uses these functions, so that the
same masked data give the same numbers in preprocessing, alignment, features and the
comparison:

- `block_mean` / `nan_block_mean`: NaN-aware averaging over integer blocks;
- `nan_gaussian`: normalised convolution, the NaN-aware Gaussian filter (Knutsson and
  Westin 1993): ``G(z w) / G(w)``;
- `gaussian_stack`: the Gaussian itself, in place, separable for narrow kernels and by FFT
  for wide ones;
- `warp_weighted`: an affine resampling (rigid pose, rotation, change of spacing) of a
  masked grid, normalised by the resampled weights so that unmeasured points neither
  contribute nor pull the result towards zero.

The Numba kernels in `balllink._kernels` (``warp_stack``) are the batched, NaN-propagating
form of the rigid warp for the cell search's hot loop; everything else warps through here.

>>> import numpy as np
>>> z = np.array([[1.0, 3.0, np.nan, np.nan], [5.0, 7.0, np.nan, 2.0]], np.float32)
>>> nan_block_mean(z, 2).tolist()
[[4.0, nan]]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi

from ._threads import threads_allowed

__all__ = [
    "BlockMean",
    "Smoothed",
    "Warped",
    "block_mean",
    "gaussian_stack",
    "nan_block_mean",
    "nan_gaussian",
    "warp_weighted",
]

# Above this σ (pixels) the FFT route is faster than scipy's separable convolution.
_FFT_SIGMA_PX = 6.0


class BlockMean(NamedTuple):
    """`block_mean`'s result: the mean of the valid points of each block, and their share."""

    mean: np.ndarray
    share: np.ndarray


class Smoothed(NamedTuple):
    """`nan_gaussian`'s result: the smoothed heights and the smoothed validity ``G(w)``."""

    values: np.ndarray
    weight: np.ndarray


def block_mean(z: np.ndarray, valid: np.ndarray, ky: int, kx: int | None = None) -> BlockMean:
    """Average ``z`` over ``ky`` × ``kx`` blocks, counting only ``valid`` points.

    Parameters
    ----------
    z : (ny, nx) array
        Heights; values where ``valid`` is False are ignored (they may be NaN).
    valid : (ny, nx) bool array
        Which points were measured.
    ky, kx : int
        Block size in rows and columns (``kx`` defaults to ``ky``). Rows and columns that
        do not fill a whole block are dropped.

    Returns
    -------
    BlockMean
        ``mean``, (ny // ky, nx // kx) float32: mean of the valid points of each block (NaN
        where a block has none); ``share``, same shape: share of each block's points that
        are valid, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> z = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> mean, share = block_mean(z, z != 7, 2)
    >>> mean.tolist(), share.tolist()
    ([[2.5, 3.6666667461395264]], [[1.0, 0.75]])
    """
    kx = ky if kx is None else kx
    ky, kx = max(1, int(ky)), max(1, int(kx))
    ny, nx = (z.shape[0] // ky) * ky, (z.shape[1] // kx) * kx
    valid = np.asarray(valid, dtype=bool)[:ny, :nx]
    zw = np.where(valid, z[:ny, :nx], 0).astype(np.float64)
    total = zw.reshape(ny // ky, ky, nx // kx, kx).sum(axis=(1, 3))
    count = valid.reshape(ny // ky, ky, nx // kx, kx).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total / count).astype(np.float32)
    return BlockMean(mean, (count / (ky * kx)).astype(np.float32))


def nan_block_mean(z: np.ndarray, f: int, *, min_share: float = 0.5) -> np.ndarray:
    """NaN-aware ``f`` × ``f`` block mean of a float grid with NaN where not measured.

    A block whose share of finite points is below ``min_share`` is NaN. ``f <= 1`` returns
    the grid itself as C-contiguous float32.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, np.nan], [np.nan, np.nan]])
    >>> nan_block_mean(z, 2).tolist(), nan_block_mean(z, 2, min_share=0.25).tolist()
    ([[nan]], [[1.0]])
    """
    if f <= 1:
        return np.ascontiguousarray(z, dtype=np.float32)
    mean, share = block_mean(z, np.isfinite(z), f)
    mean[~(share >= min_share)] = np.nan
    return mean


def gaussian_stack(
    stack: np.ndarray, sigma_px: float | tuple[float, float], truncate: float = 4.0
) -> None:
    """Gaussian-filter each layer of a (k, ny, nx) float ``stack`` in place, zero outside.

    The filter is scipy.ndimage's: the sampled Gaussian cut at ``truncate`` σ and
    normalised to sum 1, zero outside the array. Small kernels run as that separable
    convolution; wide ones (σ above six pixels) multiply the spectrum of the zero-padded
    layers (scipy.fft) by the spectrum of the same cut kernel: the same filter to float
    precision, several times faster for σ of tens of pixels.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((1, 81, 81), np.float32); s[0, 40, 40] = 1
    >>> gaussian_stack(s, 8.0); round(float(s.sum()), 3)
    1.0
    """
    sy, sx = (sigma_px, sigma_px) if np.isscalar(sigma_px) else sigma_px
    if max(sy, sx) <= _FFT_SIGMA_PX:
        ndi.gaussian_filter(
            stack, sigma=(0.0, sy, sx), mode="constant", cval=0.0, truncate=truncate, output=stack
        )
        return
    ny, nx = stack.shape[1:]
    ry, rx = _radius(sy, truncate), _radius(sx, truncate)
    # zero padding by at least the kernel radius: no circular wrap-around at all
    fy, fx = sfft.next_fast_len(ny + 2 * ry, real=True), sfft.next_fast_len(nx + 2 * rx, real=True)
    spec = sfft.rfft2(stack, s=(fy, fx), workers=threads_allowed(-1))
    gy = sfft.fft(_wrapped_kernel(sy, ry, fy)).real  # a symmetric kernel: a real spectrum
    gx = sfft.rfft(_wrapped_kernel(sx, rx, fx)).real
    spec *= (gy[:, None] * gx[None, :]).astype(spec.real.dtype)
    out = sfft.irfft2(spec, s=(fy, fx), workers=threads_allowed(-1))
    stack[:] = out[:, :ny, :nx]


def _radius(sigma: float, truncate: float) -> int:
    """Half-width of scipy.ndimage's Gaussian kernel (pixels)."""
    return int(truncate * float(sigma) + 0.5)


def _wrapped_kernel(sigma: float, radius: int, n: int) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernel, centred on index 0 of a length-``n`` circle."""
    out = np.zeros(n)
    if sigma <= 0 or radius == 0:
        out[0] = 1.0
        return out
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 / (sigma * sigma) * x.astype(np.float64) ** 2)
    k /= k.sum()
    out[: radius + 1] = k[radius:]
    out[n - radius :] = k[:radius]
    return out


def nan_gaussian(
    z: np.ndarray,
    valid: np.ndarray,
    sigma_px: float | tuple[float, float],
    truncate: float = 4.0,
    *,
    dtype: type = np.float32,
) -> Smoothed:
    """Normalised convolution: ``(G(z w) / G(w), G(w))`` with ``w`` the validity mask.

    The NaN-aware Gaussian filter: points that were not measured neither contribute nor
    pull the result towards zero. Where the smoothed weight ``G(w)`` is (almost) zero the
    result is NaN.

    Parameters
    ----------
    z : (ny, nx) array
        Heights; may hold NaN where ``valid`` is False.
    valid : (ny, nx) bool array
    sigma_px : float or (float, float)
        Standard deviation of the Gaussian in pixels (rows, columns).
    truncate : float
        Kernel half-width in σ.
    dtype : numpy dtype
        Working precision (float32 by default).

    Returns
    -------
    Smoothed
        ``values`` (the smoothed heights, NaN where the weight is below 1e-6) and
        ``weight`` (``G(w)``), (ny, nx) arrays of ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.full((9, 9), 2.0); z[:, :4] = np.nan
    >>> sm, w = nan_gaussian(z, np.isfinite(z), 1.5)
    >>> float(np.nanmax(np.abs(sm[:, 4:] - 2.0))) < 1e-5, bool(np.isnan(sm[0, 0]))
    (True, False)
    """
    valid = np.asarray(valid, dtype=bool)
    wf = valid.astype(dtype)
    zw = np.where(valid, z, 0).astype(dtype, copy=False)
    stack = np.stack([zw, wf])
    gaussian_stack(stack, sigma_px, truncate)
    num, den = stack[0], stack[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den <= 1e-6] = np.nan
    return Smoothed(out, den)


class Warped(NamedTuple):
    """`warp_weighted`'s result: normalised values (NaN where no weight arrived) and the
    resampled weight (for a 0/1 mask: the share of measured input under each point)."""

    values: np.ndarray
    weight: np.ndarray


def warp_weighted(
    num: np.ndarray,
    den: np.ndarray,
    matrix: np.ndarray | tuple[float, float],
    offset: np.ndarray | tuple[float, float] | float = 0.0,
    *,
    output_shape: tuple[int, int],
    order: int = 1,
) -> Warped:
    """Affine resampling of a weighted grid: ``A(num) / A(den)`` and ``A(den)``.

    ``A`` is `scipy.ndimage.affine_transform` (zero outside the input): the output point
    ``o`` (row, column) samples the input at ``matrix @ o + offset``. ``num`` is the
    weighted heights (zero where not measured, e.g. ``np.where(valid, z, 0)``) and ``den``
    the weights (the validity mask as 0/1, or smoothed weights). Both are warped in the
    dtype of ``num``.

    Parameters
    ----------
    num, den : (ny, nx) arrays
    matrix : (2, 2) array or (2,) diagonal
        Output-to-input map in (row, column) pixel coordinates.
    offset : float or (2,) array
    output_shape : (int, int)
    order : int
        Spline order (1: bilinear).

    Returns
    -------
    Warped
        ``values`` = ``A(num) / A(den)`` with NaN where ``A(den) <= 1e-6``; ``weight`` =
        ``A(den)``. Callers choose how much weight makes a point measured.

    Examples
    --------
    A grid shifted by two columns (the output samples the input two columns to the left):

    >>> import numpy as np
    >>> z = np.tile(np.arange(6, dtype=np.float32), (3, 1))
    >>> valid = np.ones_like(z)
    >>> w = warp_weighted(z * valid, valid, np.eye(2), (0.0, -2.0), output_shape=z.shape)
    >>> w.values[1].tolist(), w.weight[1].tolist()
    ([nan, nan, 0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    """
    dtype = np.result_type(num.dtype, np.float32)
    num = np.asarray(num, dtype=dtype)
    den = np.asarray(den, dtype=dtype)

    def warp(a: np.ndarray) -> np.ndarray:
        return ndi.affine_transform(
            a, matrix, offset, output_shape=output_shape, order=order, mode="constant", cval=0.0
        )

    wn, wd = warp(num), warp(den)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = wn / wd
    values[~(wd > 1e-6)] = np.nan
    return Warped(values, wd)
