"""The filtering steps: each takes a `Scan` and returns a new one, recorded in its history.

`level` (robust plane or quadric), `remove_spikes`, `bandpass` (NaN-aware Gaussian by
normalised convolution, ISO 16610-61 or cmcR's σ), `resample` (NaN-aware, anti-aliased)
and `trim_edges`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology

from .._grid import gaussian_stack, nan_gaussian, warp_weighted
from .._scan import Scan
from ..errors import PreprocessError
from ._checks import check_scan, positive, scan_name

_ISO_FACTOR = math.sqrt(math.log(2.0) / 2.0) / math.pi  # σ / λ for ISO 16610-61
_CMCR_FACTOR = 1.0 / (2.0 * math.pi)  # σ / λ in cmcR


def _sigma_um(cutoff_um: float, convention: str) -> float:
    """Gaussian σ (µm) of a cutoff wavelength under ``convention``."""
    if convention == "iso":
        return cutoff_um * _ISO_FACTOR
    if convention == "cmcr":
        return cutoff_um * _CMCR_FACTOR
    raise ValueError(f"convention must be 'iso' or 'cmcr', got {convention!r}")


class _SurfaceFit(NamedTuple):
    """Coefficients of a plane / quadric in centred, scaled pixel coordinates
    ``u = (row - cy) / scale``, ``v = (col - cx) / scale``."""

    coef: np.ndarray  # 1, u, v (, u², u v, v²)
    cy: float
    cx: float
    scale: float


def _fit_surface(scan: Scan, method: str, order: int, max_points: int) -> _SurfaceFit:
    """Fit a plane / quadric to an evenly spread sample of usable points."""
    ny, nx = scan.shape
    # a regular sub-grid of the usable points (no full-size index arrays)
    k = max(1, math.isqrt(max(1, scan.n_valid // int(max_points))))
    iy, ix = np.nonzero(scan.mask[::k, ::k])
    sy, sx = iy.astype(np.float64) * k, ix.astype(np.float64) * k
    z = scan.heights[::k, ::k][iy, ix].astype(np.float64)
    # centred, scaled coordinates for a well-conditioned design matrix
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    scale = max(ny, nx) / 2.0
    u, v = (sy - cy) / scale, (sx - cx) / scale
    cols = [np.ones_like(u), u, v]
    if order == 2:
        cols += [u * u, u * v, v * v]
    a = np.stack(cols, axis=-1)
    if len(z) < 2 * a.shape[1]:
        raise PreprocessError(f"level: scan {scan_name(scan)} has too few points ({len(z)})")
    coef = np.linalg.lstsq(a, z, rcond=None)[0]
    if method == "median":
        # least absolute deviations by iteratively reweighted least squares
        spread = np.median(np.abs(z - a @ coef)) + 1e-12
        for _ in range(30):
            r = np.abs(z - a @ coef)
            w = 1.0 / np.maximum(r, 1e-4 * spread)
            aw = a * w[:, None]
            try:  # weighted normal equations: small (3x3 or 6x6) and fast
                new = np.linalg.solve(aw.T @ a, aw.T @ z)
            except np.linalg.LinAlgError:
                break
            done = np.max(np.abs(new - coef)) < 1e-7 * (1.0 + np.max(np.abs(coef)))
            coef = new
            if done:
                break
    return _SurfaceFit(coef, cy, cx, scale)


def level(scan: Scan, *, method: str = "median", order: int = 1, max_points: int = 20_000) -> Scan:
    """Remove a robust plane (or second-order surface) from the heights.

    Parameters
    ----------
    scan : Scan
        Input; the fit uses the usable points (``scan.mask``) and is subtracted from them.
    method : {"median", "lstsq"}
        ``"median"``: least-absolute-deviations (median) regression by iteratively
        reweighted least squares, robust to pits, spikes and leftover crater walls, as
        cmcR's quantile fit. ``"lstsq"``: ordinary least squares.
    order : {1, 2}
        1: plane; 2: adds the quadratic terms (curved primers).
    max_points : int
        The fit uses an evenly spread sample of at most this many points.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> yy, xx = np.mgrid[:50, :60]
    >>> z = 0.3 * xx - 0.1 * yy + 4.0
    >>> z[10, 10] = 1000.0  # a spike does not tilt a median fit
    >>> out = bl.level(bl.Scan(z, spacing_um=1.0))
    >>> float(np.median(np.abs(out.heights))) < 1e-3
    True
    """
    check_scan(scan, "level")
    if method not in ("median", "lstsq"):
        raise ValueError(f"method must be 'median' or 'lstsq', got {method!r}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    ny, nx = scan.shape
    fit = _fit_surface(scan, method, order, max_points)
    coef, cy, cx, scale = fit.coef, fit.cy, fit.cx, fit.scale
    # evaluate on the full grid (broadcasting, no per-pixel Python)
    u = ((np.arange(ny) - cy) / scale)[:, None]
    v = ((np.arange(nx) - cx) / scale)[None, :]
    surface = coef[0] + coef[1] * u + coef[2] * v
    if order == 2:
        surface = surface + coef[3] * u * u + coef[4] * u * v + coef[5] * v * v
    out = scan.masked_heights() - surface.astype(np.float32)
    meta = scan.with_history(
        "level", method=method, order=order, coefficients=[round(float(c), 6) for c in coef]
    )
    return scan.replace(heights=out, mask=scan.mask, meta=meta)


def remove_spikes(
    scan: Scan, *, threshold: float = 8.0, size_um: float | None = None, passes: int = 2
) -> Scan:
    """Mark spikes and pits (isolated outliers) as not measured.

    Each point is compared with a NaN-aware Gaussian average of its neighbourhood; a point
    whose residual exceeds ``threshold`` robust standard deviations (1.4826 × the median
    absolute residual over the scan) is set to NaN. Later passes recompute the average
    without the outliers found so far, so a spike neither hides nor condemns its
    neighbours.

    Parameters
    ----------
    scan : Scan
    threshold : float
        Outlier threshold in robust standard deviations.
    size_um : float, optional
        σ of the neighbourhood average; default 1.5 pixels.
    passes : int
        Maximum number of passes (stops early when nothing changes).

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> z = np.random.default_rng(0).normal(size=(64, 64))
    >>> z[20, 30] = 200.0
    >>> out = bl.remove_spikes(bl.Scan(z, spacing_um=6.25))
    >>> bool(np.isnan(out.heights[20, 30])), out.n_valid >= 64 * 64 - 5
    (True, True)
    """
    check_scan(scan, "remove_spikes")
    threshold = positive("threshold", threshold)
    dy, dx = scan.spacing_um
    sigma = (1.5, 1.5) if size_um is None else (size_um / dy, size_um / dx)
    z = scan.masked_heights()
    mask = scan.mask
    spikes = np.zeros_like(mask)
    scale = None
    for _ in range(max(1, int(passes))):
        # reference excludes the current outliers, so a spike does not drag its neighbours
        smooth, _ = nan_gaussian(z, mask & ~spikes, sigma)
        resid = np.abs(z - smooth)
        if scale is None:
            r = resid[mask & np.isfinite(resid)]
            if r.size == 0:
                break
            scale = 1.4826 * float(np.median(r[:: max(1, r.size // 500_000)]))
            if scale <= 0:
                break
        new = mask & (resid > threshold * scale)  # NaN reference (isolated point) -> kept
        if np.array_equal(new, spikes):
            break
        spikes = new
    removed = int(spikes.sum())
    mask = mask & ~spikes
    z[spikes] = np.nan
    meta = scan.with_history(
        "remove_spikes", threshold=threshold, size_um=size_um, passes=passes, removed=removed
    )
    return scan.replace(heights=z, mask=mask, meta=meta)


def bandpass(
    scan: Scan,
    *,
    short_um: float | None = 16.0,
    long_um: float | None = 500.0,
    convention: str = "iso",
) -> Scan:
    """Gaussian band-pass filter that treats NaN correctly (normalised convolution).

    The low-pass keeps wavelengths longer than ``short_um`` (removes noise); the
    high-pass removes wavelengths longer than ``long_um`` (form, waviness). Each is a
    Gaussian computed as ``G(z w) / G(w)`` over the usable points ``w``, so holes and the
    annulus edges neither pull the surface towards zero nor leak into it. The result is
    defined on the input's usable points only.

    Parameters
    ----------
    scan : Scan
    short_um : float or None
        Low-pass cutoff wavelength in µm; None skips the low-pass.
    long_um : float or None
        High-pass cutoff wavelength in µm; None skips the high-pass.
    convention : {"iso", "cmcr"}
        ``"iso"``: ISO 16610-61, ``σ = λ·sqrt(ln2/2)/π`` (50 % transmission at the
        cutoff). ``"cmcr"``: cmcR's ``σ = λ/(2π)``.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> x = np.arange(400) * 6.25
    >>> z = np.sin(2 * np.pi * x / 100.0) + 0.01 * x  # 100 µm texture on a slope
    >>> z = np.tile(z, (40, 1))
    >>> z[:, 150:160] = np.nan
    >>> out = bl.bandpass(bl.Scan(z, spacing_um=6.25), short_um=16, long_um=500)
    >>> bool(np.nanmax(np.abs(out.heights[:, 60:140])) < 1.2)  # slope removed
    True
    """
    check_scan(scan, "bandpass")
    short_um = positive("short_um", short_um, allow_none=True)
    long_um = positive("long_um", long_um, allow_none=True)
    if short_um is not None and long_um is not None and short_um >= long_um:
        raise ValueError(f"short_um ({short_um}) must be below long_um ({long_um})")
    dy, dx = scan.spacing_um
    z = scan.masked_heights()
    mask = scan.mask
    params: dict[str, Any] = {"short_um": short_um, "long_um": long_um, "convention": convention}
    if short_um is not None:
        s = _sigma_um(short_um, convention)
        z, _ = nan_gaussian(z, mask, (s / dy, s / dx))
        params["sigma_short_um"] = round(s, 4)
    if long_um is not None:
        s = _sigma_um(long_um, convention)
        trend, _ = nan_gaussian(z, mask, (s / dy, s / dx))
        z = z - trend
        params["sigma_long_um"] = round(s, 4)
    else:
        _sigma_um(1.0, convention)  # validates the convention
    z[~mask] = np.nan
    return scan.replace(heights=z, mask=mask, meta=scan.with_history("bandpass", **params))


def resample(
    scan: Scan, *, spacing_um: float | tuple[float, float] = 6.25, anti_aliasing: bool = True
) -> Scan:
    """Resample to another lateral spacing, NaN-aware, with anti-aliasing.

    Output pixel ``(i, j)`` lies at ``(i * new_dy, j * new_dx)`` µm, i.e. the first pixel
    stays in place. When the grid gets coarser, a NaN-aware Gaussian (σ = (factor − 1)/2
    pixels, as scikit-image's ``resize``) is applied first; values are then interpolated
    bilinearly from ``G(z w)`` and ``G(w)``. An output point is usable when at least half
    of its interpolation weight falls on usable input points.

    Parameters
    ----------
    scan : Scan
    spacing_um : float or (float, float)
        New ``(dy, dx)`` in µm.
    anti_aliasing : bool
        Low-pass before downsampling.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> scan = bl.Scan(np.ones((200, 100)), spacing_um=3.125)
    >>> out = bl.resample(scan, spacing_um=6.25)
    >>> out.shape, out.spacing_um
    ((100, 50), (6.25, 6.25))
    """
    check_scan(scan, "resample")
    if np.isscalar(spacing_um):
        spacing_um = (spacing_um, spacing_um)  # type: ignore[assignment]
    new = tuple(positive("spacing_um", s) for s in spacing_um)  # type: ignore[union-attr]
    old = scan.spacing_um
    fy, fx = new[0] / old[0], new[1] / old[1]
    if abs(fy - 1) < 1e-9 and abs(fx - 1) < 1e-9:
        meta = scan.with_history("resample", spacing_um=new, skipped=True)
        return scan.replace(meta=meta)
    ny = math.floor((scan.shape[0] - 1) / fy + 1e-9) + 1
    nx = math.floor((scan.shape[1] - 1) / fx + 1e-9) + 1
    z = np.where(scan.mask, scan.heights, np.float32(0)).astype(np.float32)
    w = scan.mask.astype(np.float32)
    if anti_aliasing and (fy > 1 or fx > 1):
        sig = (max(0.0, (fy - 1) / 2), max(0.0, (fx - 1) / 2))
        stack = np.stack([z, w])
        gaussian_stack(stack, sig)
        z, ws = stack[0], stack[1]
    else:
        ws = w

    warped = warp_weighted(z, ws, (fy, fx), output_shape=(ny, nx))
    # measured where at least half of the (unsmoothed) mask arrives
    cover = warped.weight if ws is w else warp_weighted(w, w, (fy, fx), output_shape=(ny, nx))[1]
    out = warped.values
    valid = (cover >= 0.5) & np.isfinite(out)
    out[~valid] = np.nan
    meta = scan.with_history(
        "resample", spacing_um=new, from_spacing_um=old, anti_aliasing=anti_aliasing
    )
    return scan.replace(heights=out, spacing_um=new, mask=valid, meta=meta)


def trim_edges(scan: Scan, *, width_um: float = 12.5, min_area_um2: float = 10_000.0) -> Scan:
    """Erode the usable region so filter artefacts at its edges do not enter matching.

    Parameters
    ----------
    scan : Scan
    width_um : float
        Erosion depth in µm (rounded to whole pixels; 0 keeps the outline).
    min_area_um2 : float
        Islands of usable points smaller than this are dropped afterwards.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> out = bl.trim_edges(bl.Scan(np.zeros((20, 20)), spacing_um=1.0), width_um=2,
    ...                     min_area_um2=1)
    >>> out.n_valid
    256
    """
    check_scan(scan, "trim_edges")
    if width_um is None or width_um < 0:
        raise ValueError(f"width_um must be >= 0, got {width_um!r}")
    dy, dx = scan.spacing_um
    ry, rx = round(width_um / dy), round(width_um / dx)
    mask = scan.mask
    if ry > 0 or rx > 0:
        yy, xx = np.ogrid[-ry : ry + 1, -rx : rx + 1]
        fp = (yy / max(ry, 0.5)) ** 2 + (xx / max(rx, 0.5)) ** 2 <= 1.0
        mask = ndi.binary_erosion(mask, structure=fp, border_value=0)
    min_px = int(min_area_um2 / (dy * dx))
    if min_px > 1:
        mask = morphology.remove_small_objects(mask, max_size=min_px)
    z = scan.masked_heights()
    z[~mask] = np.nan
    meta = scan.with_history("trim_edges", width_um=width_um, min_area_um2=min_area_um2)
    return scan.replace(heights=z, mask=mask, meta=meta)
