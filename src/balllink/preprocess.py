"""Preprocessing: from a raw scan to a comparable breech-face surface.

Each step takes a `Scan` and returns a new one (`find_breech_face` returns a `BreechFace`),
so the steps chain and every intermediate can be inspected. `preprocess` runs the default
chain::

    find_breech_face -> crop -> remove_spikes -> level -> bandpass(low-pass)
        -> resample -> bandpass(high-pass) -> trim_edges

and records every step with its parameters in ``meta["history"]`` and a summary in
``meta["prepared"]``.

Conventions
-----------
- Positions are in micrometres with pixel ``(i, j)`` centred at ``(i * dy, j * dx)``.
- NaN (or ``scan.mask == False``) means *not measured*; every filter is NaN-aware by
  normalised convolution, ``G(z * w) / G(w)``, never by replacing NaN with zero.
- The Gaussian filters follow ISO 16610-61 by default: a cutoff wavelength ``λ`` gives
  ``σ = λ * sqrt(ln 2 / 2) / π`` (50 % transmission at ``λ``). ``convention="cmcr"``
  uses cmcR's ``σ = λ / (2π)`` instead.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from skimage import measure, morphology

from ._scan import Scan, data_fingerprint
from .errors import PreprocessError

__all__ = [
    "BreechFace",
    "SurfaceState",
    "bandpass",
    "find_breech_face",
    "flags_of",
    "level",
    "prepare_if_needed",
    "preprocess",
    "remove_spikes",
    "resample",
    "surface_state",
    "trim_edges",
]

log = logging.getLogger(__name__)

#: Default options of `preprocess` (DESIGN.md reference parameters, ISO Gaussian).
DEFAULTS: dict[str, Any] = {
    "roi": "auto",
    "spacing_um": 6.25,
    "short_um": 16.0,
    "long_um": 500.0,
    "convention": "iso",
    "level_method": "median",
    "level_order": 1,
    "despike": True,
    "spike_threshold": 8.0,
    "trim_um": 12.5,
    "margin_um": 0.0,
    "min_quality": 0.5,
    "crop": True,
    "refilter": "auto",
}

_ISO_FACTOR = math.sqrt(math.log(2.0) / 2.0) / math.pi  # σ / λ for ISO 16610-61
_CMCR_FACTOR = 1.0 / (2.0 * math.pi)  # σ / λ in cmcR


# --------------------------------------------------------------------------- helpers


def _who(scan: Scan) -> str:
    return scan.source or scan.name


def _check_scan(scan: Any, step: str) -> Scan:
    if not isinstance(scan, Scan):
        raise TypeError(f"{step}: expected a balllink.Scan, got {type(scan).__name__}")
    if scan.n_valid == 0:
        raise PreprocessError(f"{step}: scan {_who(scan)} has no measured (finite) points")
    return scan


def _sigma_um(cutoff_um: float, convention: str) -> float:
    if convention == "iso":
        return cutoff_um * _ISO_FACTOR
    if convention == "cmcr":
        return cutoff_um * _CMCR_FACTOR
    raise ValueError(f"convention must be 'iso' or 'cmcr', got {convention!r}")


def _positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _gaussian_stack(stack: np.ndarray, sigma_px: tuple[float, float], truncate: float) -> None:
    """Gaussian-filter each layer of ``stack`` in place, zero outside the array.

    Small kernels run as separable convolutions (scipy.ndimage); wide ones by FFT on a
    zero-padded grid (scipy.fft), with the Gaussian's exact transfer function: the same
    filter to float precision, several times faster for σ of tens of pixels.
    """
    sy, sx = sigma_px
    if max(sy, sx) <= 6.0:
        ndi.gaussian_filter(
            stack, sigma=(0.0, sy, sx), mode="constant", cval=0.0, truncate=truncate, output=stack
        )
        return
    ny, nx = stack.shape[1:]
    py, px = math.ceil(truncate * sy), math.ceil(truncate * sx)
    fy, fx = sfft.next_fast_len(ny + 2 * py, real=True), sfft.next_fast_len(nx + 2 * px, real=True)
    spec = sfft.rfft2(stack, s=(fy, fx), workers=-1)
    ky = sfft.fftfreq(fy)[:, None]
    kx = sfft.rfftfreq(fx)[None, :]
    spec *= np.exp(-2.0 * np.pi**2 * ((sy * ky) ** 2 + (sx * kx) ** 2)).astype(np.float32)
    out = sfft.irfft2(spec, s=(fy, fx), workers=-1)
    # the zero padding (>= truncate σ on each side in total) keeps the circular wrap-around
    # as small as ndimage's truncation
    stack[:] = out[:, :ny, :nx]


def _nan_gaussian(
    z: np.ndarray, w: np.ndarray, sigma_px: tuple[float, float], truncate: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: returns ``(G(z w) / G(w), G(w))`` (float32).

    ``z`` may hold NaN where ``w`` is False. Points whose smoothed weight is zero get NaN.
    """
    wf = w.astype(np.float32)
    zw = np.where(w, z, np.float32(0)).astype(np.float32, copy=False)
    stack = np.stack([zw, wf])
    _gaussian_stack(stack, sigma_px, truncate)
    num, den = stack[0], stack[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den <= 1e-6] = np.nan
    return out, den


def _grid_um(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, ...]:
    yy = np.arange(shape[0], dtype=np.float64)[:, None] * spacing[0]
    xx = np.arange(shape[1], dtype=np.float64)[None, :] * spacing[1]
    return yy, xx


def _disk_mask(shape, spacing, center_um, radius_um) -> np.ndarray:
    yy, xx = _grid_um(shape, spacing)
    return (yy - center_um[0]) ** 2 + (xx - center_um[1]) ** 2 <= radius_um**2


def _fit_circle(points_um: np.ndarray, threshold_um: float, seed: int = 0, max_points: int = 1000):
    """Robust circle (RANSAC then least squares on the inliers): ((cy, cx), r, inlier share)."""
    if len(points_um) < 10:
        return None
    if len(points_um) > max_points:  # an evenly spread sample keeps RANSAC cheap
        points_um = points_um[np.linspace(0, len(points_um) - 1, max_points).astype(int)]
    pts = points_um[:, ::-1]  # CircleModel works in (x, y)
    try:
        model, inliers = measure.ransac(
            pts,
            measure.CircleModel,
            min_samples=3,
            residual_threshold=threshold_um,
            max_trials=100,
            stop_probability=0.999,
            rng=seed,
        )
    except ValueError:
        return None
    if model is None or inliers is None or inliers.sum() < 10:
        return None
    refined = measure.CircleModel.from_estimate(pts[inliers])
    if refined:
        model = refined
    cx, cy = (float(c) for c in model.center)
    return (cy, cx), float(model.radius), float(inliers.mean())


def _boundary_points(region: np.ndarray, spacing, exclude_border: bool = True) -> np.ndarray:
    edge = region & ~ndi.binary_erosion(region, border_value=1)
    if exclude_border:
        edge[[0, -1], :] = False
        edge[:, [0, -1]] = False
    idx = np.argwhere(edge).astype(np.float64)
    return idx * np.asarray(spacing, dtype=np.float64)


def _block_mean(z: np.ndarray, w: np.ndarray, ky: int, kx: int):
    """NaN-aware block average by integer factors; returns (mean, share of valid points)."""
    ny, nx = (z.shape[0] // ky) * ky, (z.shape[1] // kx) * kx
    zw = np.where(w, z, 0).astype(np.float32)[:ny, :nx]
    wf = w[:ny, :nx].astype(np.float32)
    s = zw.reshape(ny // ky, ky, nx // kx, kx).sum(axis=(1, 3))
    n = wf.reshape(ny // ky, ky, nx // kx, kx).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    return mean, n / (ky * kx)


def _nan_block_mean(z: np.ndarray, f: int) -> np.ndarray:
    """NaN-aware f×f block mean of a float array (NaN where fewer than half of a block is
    valid); ``f <= 1`` returns the array itself as C-contiguous float32."""
    if f <= 1:
        return np.ascontiguousarray(z, dtype=np.float32)
    ny, nx = (z.shape[0] // f) * f, (z.shape[1] // f) * f
    blocks = z[:ny, :nx].reshape(ny // f, f, nx // f, f)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
    out = np.full(count.shape, np.nan, np.float32)
    good = count * 2 >= f * f
    out[good] = total[good] / count[good]
    return out


# --------------------------------------------------------------------------- breech face


@dataclass(frozen=True, eq=False)
class BreechFace:
    """The usable breech-face annulus of a scan.

    Attributes
    ----------
    mask : ndarray of bool, shape of the scan
        True on the breech face (always within the measured points).
    center_um : tuple of float
        ``(y, x)`` centre of the outer circle (the primer's flat contact area), µm.
    outer_radius_um : float
        Radius of the outer circle, µm (NaN when no circle could be fitted).
    inner_center_um : tuple of float
        ``(y, x)`` centre of the inner circle (firing-pin impression and its margin), µm.
    inner_radius_um : float
        Radius of the inner circle, µm (0 when there is no hole, NaN when not fitted).
    quality : float
        0…1: how well the found region matches an annulus (IoU of the fitted annulus with
        the region it was fitted to). Below ``min_quality`` the search counts as failed.
    method : str
        ``"fit"`` (found from the heights), ``"existing"`` (the scan was already masked to
        an annulus, e.g. a processed scan) or ``"file"`` (the ROI stored in the file).
    """

    mask: np.ndarray
    center_um: tuple[float, float]
    outer_radius_um: float
    inner_center_um: tuple[float, float]
    inner_radius_um: float
    quality: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the mask, as plain Python numbers (for ``meta``)."""
        return {
            "method": self.method,
            "center_um": tuple(round(float(c), 3) for c in self.center_um),
            "outer_radius_um": round(float(self.outer_radius_um), 3),
            "inner_center_um": tuple(round(float(c), 3) for c in self.inner_center_um),
            "inner_radius_um": round(float(self.inner_radius_um), 3),
            "quality": round(float(self.quality), 4),
            "area_px": int(np.count_nonzero(self.mask)),
            **self.details,
        }


def _annulus(shape, spacing, c_out, r_out, c_in, r_in) -> np.ndarray:
    ann = _disk_mask(shape, spacing, c_out, r_out)
    if r_in > 0:
        ann &= ~_disk_mask(shape, spacing, c_in, r_in)
    return ann


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


#: A scan whose heights, once a robust plane is removed, span less than this (1st to 99th
#: percentile, µm) holds no crater, casing head or primer roll-off: it is already cut to its
#: breech face. Measured: Fadul 5-14 µm, raw DFSC exports inside their own ROI 28-33 µm,
#: simulated raw casings over the whole field 63-107 µm.
CUT_MAX_RELIEF_UM = 30.0
#: An already cut scan is taken as already band-passed (and not filtered again) when its
#: relief is below this and the quadratic form left after the plane (root mean square of
#: the order-2 part of a least-squares fit, µm) is below `FILTERED_MAX_FORM_UM`. Measured:
#: Fadul relief <= 14 µm and form <= 0.77 µm; raw DFSC exports cut to their ROI: relief
#: >= 28 µm, form >= 1.75 µm; simulated prepared scans: relief <= 6.5 µm, form <= 0.11 µm.
FILTERED_MAX_RELIEF_UM = 20.0
FILTERED_MAX_FORM_UM = 1.0
#: Scans with less usable breech face than this (mm²) after preparation are flagged
#: ``small_area``; a comparison of such a scan cannot yield a lead (see
#: `balllink.CMCConfig.min_area_mm2`). A 9 mm breech face holds about 5-7 mm².
MIN_AREA_MM2 = 2.0


@dataclass(frozen=True)
class SurfaceState:
    """What the heights say about how far a scan was already processed.

    Attributes
    ----------
    relief_um : float
        1st-99th percentile range of the heights after a plane fit (µm).
    form_um : float
        Root mean square of the quadratic part of an order-2 fit (µm): curvature left.
    valid_mm2 : float
        Usable area (mm²).
    cut : bool
        Already cut to its breech face (``relief_um < CUT_MAX_RELIEF_UM``).
    filtered : bool
        Already cut and free of form (band-passed): ``relief_um < FILTERED_MAX_RELIEF_UM``
        and ``form_um < FILTERED_MAX_FORM_UM``.
    """

    relief_um: float
    form_um: float
    valid_mm2: float
    cut: bool
    filtered: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "relief_um": round(self.relief_um, 3),
            "form_um": round(self.form_um, 3),
            "valid_mm2": round(self.valid_mm2, 4),
            "cut": self.cut,
            "filtered": self.filtered,
        }


def surface_state(scan: Scan, *, work_um: float = 25.0) -> SurfaceState:
    """Decide from the data whether a scan is already cut and band-passed.

    Never from metadata: a file's claim to be prepared is checked against this. The heights
    are averaged onto a ``work_um`` grid; a plane and an order-2 surface are fitted by least
    squares. A scan is *cut* when the plane residual spans less than `CUT_MAX_RELIEF_UM`
    (no crater, casing head or roll-off left), and *filtered* when it is cut, spans less
    than `FILTERED_MAX_RELIEF_UM` and the curvature left is below `FILTERED_MAX_FORM_UM`.

    Parameters
    ----------
    scan : Scan
    work_um : float
        Grid of the test (µm); about 10 ms for a 560 x 560 scan.

    Returns
    -------
    SurfaceState

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocess import surface_state
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:200, :200] * 12.5
    >>> texture = rng.normal(0, 1.0, (200, 200))
    >>> surface_state(bl.Scan(texture, spacing_um=12.5)).filtered
    True
    >>> bowl = texture + 4e-6 * ((yy - 1250) ** 2 + (xx - 1250) ** 2)
    >>> state = surface_state(bl.Scan(bowl, spacing_um=12.5))
    >>> state.cut, state.filtered
    (True, False)
    """
    _check_scan(scan, "surface_state")
    dy, dx = scan.spacing_um
    ky, kx = max(1, round(work_um / dy)), max(1, round(work_um / dx))
    z, share = _block_mean(scan.heights, scan.mask, ky, kx)
    ok = share >= 0.5
    if np.count_nonzero(ok) < 12:  # too small for a block grid: use every point
        z, ok, ky, kx = scan.heights, scan.mask, 1, 1
    iy, ix = np.nonzero(ok)
    y = iy * (dy * ky / 1000.0)
    x = ix * (dx * kx / 1000.0)
    y, x = y - y.mean(), x - x.mean()
    v = z[iy, ix].astype(np.float64)
    plane = np.stack([np.ones_like(y), y, x], axis=1)
    quad = np.concatenate([plane, np.stack([y * y, x * x, x * y], axis=1)], axis=1)
    r1 = v - plane @ np.linalg.lstsq(plane, v, rcond=None)[0]
    if len(v) >= 12:
        r2 = v - quad @ np.linalg.lstsq(quad, v, rcond=None)[0]
        form = math.sqrt(max(0.0, float(np.mean(r1 * r1) - np.mean(r2 * r2))))
    else:
        form = 0.0
    lo, hi = np.percentile(r1, [1.0, 99.0]) if len(r1) else (0.0, 0.0)
    relief = float(hi - lo)
    cut = relief < CUT_MAX_RELIEF_UM
    filtered = cut and relief < FILTERED_MAX_RELIEF_UM and form < FILTERED_MAX_FORM_UM
    return SurfaceState(relief, form, scan.area_mm2, bool(cut), bool(filtered))


def _existing_face(scan: Scan, min_area_px: int) -> BreechFace:
    """The valid region of an already cut scan, kept as it is; circles fitted for the record.

    The circles are geometry to report, never a reason to drop the scan: a firing-pin hole
    that is off-centre, touches or opens to the outer edge, or missing sectors, make the
    region far from an annulus. ``quality`` (IoU of the fitted annulus with the region) says
    how ring-like it is; ``details["note"]`` says what could not be fitted.
    """
    valid = scan.mask
    if min_area_px > 0:
        # 8-connected: scattered dropouts leave diagonal neighbours, still one region
        kept = morphology.remove_small_objects(valid, max_size=min_area_px, connectivity=2)
        valid = kept if kept.any() else valid  # a small scan keeps its one island
    spacing = scan.spacing_um
    pts = _boundary_points(valid, spacing)
    step_um = max(spacing)
    nan = np.nan
    c_out, r_out, c_in, r_in, quality = (nan, nan), nan, (nan, nan), nan, 0.0
    note = ""
    first = _fit_circle(pts, 2.0 * step_um)
    if first is None:
        note = "no circular outline"
    else:
        c1, r1, _ = first
        d = np.abs(np.hypot(pts[:, 0] - c1[0], pts[:, 1] - c1[1]) - r1)
        rest = pts[d > 2.0 * step_um]
        second = _fit_circle(rest, 2.0 * step_um, seed=1)
        circles = [(c1, r1)] + ([second[:2]] if second is not None else [])
        circles.sort(key=lambda c: -c[1])
        c_out, r_out = circles[0]
        c_in, r_in = circles[1] if len(circles) > 1 else (c_out, 0.0)
        gap = math.hypot(c_in[0] - c_out[0], c_in[1] - c_out[1])
        if r_in > 0 and (r_in >= 0.9 * r_out or gap > r_out):
            # the inner fit collapsed onto the outer outline, or lies outside it
            note = f"inner circle not found (fit gave {r_in:.0f} µm in an outer {r_out:.0f} µm)"
            c_in, r_in = (nan, nan), nan
        elif r_in > 0 and gap + r_in > 0.98 * r_out:
            note = "the firing-pin hole touches or opens to the outer edge"
        ann = _annulus(scan.shape, spacing, c_out, r_out, c_in, 0.0 if np.isnan(r_in) else r_in)
        quality = _iou(ann & scan.mask, valid)
    return BreechFace(
        mask=valid,
        center_um=c_out,
        outer_radius_um=r_out,
        inner_center_um=c_in,
        inner_radius_um=r_in,
        quality=quality if valid.any() else 0.0,
        method="existing",
        details={"note": note} if note else {},
    )


def _fit_annulus(comp: np.ndarray, cvalid: np.ndarray, cspacing) -> dict[str, Any] | str:
    """Fit the outer and inner circles to one flat area; a dict, or the reason it failed."""
    filled = ndi.binary_fill_holes(comp)
    outer = _fit_circle(_boundary_points(filled, cspacing), 1.5 * max(cspacing))
    if outer is None:
        return "no circular outline around the flat area"
    c_out, r_out, inl_out = outer
    # outline pixels lie half a pixel inside the edge on average
    r_out += 0.5 * float(np.mean(cspacing))
    # Inner outline: walk inwards along rays from the outer outline until the flat area ends.
    step = min(cspacing)
    radii = np.arange(0.95 * r_out, 0.0, -step)
    if len(radii) < 4:
        return "flat area too small"
    angles = np.linspace(0.0, 2.0 * np.pi, 720, endpoint=False)
    ry = (c_out[0] + radii[None, :] * np.sin(angles)[:, None]) / cspacing[0]
    rx = (c_out[1] + radii[None, :] * np.cos(angles)[:, None]) / cspacing[1]
    on = ndi.map_coordinates(comp.astype(np.uint8), [ry, rx], order=0, mode="constant", cval=0)
    off = on == 0
    first = np.argmax(off, axis=1)
    first[~off.any(axis=1)] = len(radii) - 1
    r_edge = radii[first] + 0.5 * step  # the edge lies between the last on and first off
    pts = np.c_[c_out[0] + r_edge * np.sin(angles), c_out[1] + r_edge * np.cos(angles)]
    # rays that start off the area (a gap in a broken ring) say nothing about the hole
    pts = pts[first > 0]
    if len(pts) < 0.25 * len(angles):
        return "the flat area is not a ring"
    if np.median(r_edge[first > 0]) < 0.1 * r_out:
        c_in, r_in, inl_in = c_out, 0.0, 1.0
    else:
        inner = _fit_circle(pts, 2.0 * max(cspacing), seed=1)
        if inner is None:
            return "no circular firing-pin outline inside the flat area"
        c_in, r_in, inl_in = inner
    if not (r_in < 0.95 * r_out):
        return f"inner circle ({r_in:.0f} µm) not inside outer ({r_out:.0f} µm)"
    ann = _annulus(comp.shape, cspacing, c_out, r_out, c_in, r_in)
    quality = _iou(ann & cvalid, comp)
    area = math.pi * (r_out**2 - r_in**2)
    # A breech face is a ring around the firing-pin impression: a disc without a hole (a
    # crater floor, a plateau) or a thin ring (a groove floor) is unlikely to be it.
    ratio = r_in / r_out
    shape_ok = 0.2 <= ratio <= 0.9
    return {
        "c_out": c_out,
        "r_out": r_out,
        "c_in": c_in,
        "r_in": r_in,
        "inliers_outer": round(inl_out, 3),
        "inliers_inner": round(inl_in, 3),
        "quality": quality,
        "score": quality * inl_in * area * (1.0 if shape_ok else 0.2),
    }


def _fitted_face(
    scan: Scan,
    *,
    slope_max: float,
    smooth_um: float,
    work_spacing_um: float,
    margin_um: float,
    max_candidates: int = 6,
    grow: bool = True,
) -> BreechFace:
    """Find the flat primer ring around the firing-pin impression and fit two circles."""
    dy, dx = scan.spacing_um
    ky, kx = max(1, round(work_spacing_um / dy)), max(1, round(work_spacing_um / dx))
    coarse, share = _block_mean(scan.heights, scan.mask, ky, kx)
    cvalid = share >= 0.5
    cspacing = (dy * ky, dx * kx)

    def failed(reason: str) -> BreechFace:
        nan = float("nan")
        return BreechFace(
            mask=np.zeros(scan.shape, bool),
            center_um=(nan, nan),
            outer_radius_um=nan,
            inner_center_um=(nan, nan),
            inner_radius_um=nan,
            quality=0.0,
            method="fit",
            details={"reason": reason},
        )

    if min(coarse.shape) < 16:
        return failed(f"scan too small ({scan.shape}) to find a breech face")
    smooth, _ = _nan_gaussian(coarse, cvalid, (smooth_um / cspacing[0], smooth_um / cspacing[1]))
    gy, gx = np.gradient(smooth, *cspacing)
    slope = np.hypot(gy, gx)
    flat = cvalid & (slope < slope_max)  # NaN slope compares False
    flat = ndi.binary_opening(flat)
    hole_px = int((60.0 / cspacing[0]) * (60.0 / cspacing[1]))
    flat = morphology.remove_small_holes(flat, max_size=max(1, hole_px))
    labels, n = ndi.label(flat)
    if n == 0:
        return failed("no flat area at all")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][:max_candidates]
    order = [int(k) for k in order if sizes[k] >= max(50, 0.1 * sizes.max())]
    border = set(np.unique(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    best, reasons = None, []

    def _grown(comp: np.ndarray) -> np.ndarray:
        # central differences flag the last flat pixel before a step as steep: give the
        # area back that pixel before fitting
        return ndi.binary_dilation(comp) & cvalid if grow else comp

    for k in order:
        fit = _fit_annulus(_grown(labels == k), cvalid, cspacing)
        if isinstance(fit, str):
            reasons.append(fit)
            continue
        # a ring broken by dropouts or scratches: merge the pieces inside the annulus
        ann = _annulus(labels.shape, cspacing, fit["c_out"], fit["r_out"], fit["c_in"], fit["r_in"])
        share = np.bincount(labels[ann], minlength=n + 1) / np.maximum(sizes, 1)
        pieces = np.flatnonzero((share >= 0.7) & (sizes >= 20))
        pieces = pieces[pieces > 0]
        if len(pieces) > 1:
            merged = _fit_annulus(_grown(np.isin(labels, pieces)), cvalid, cspacing)
            if not isinstance(merged, str) and merged["score"] > fit["score"]:
                fit = merged
        if k in border:  # the casing head usually reaches the image border
            fit["score"] *= 0.5
        if best is None or fit["score"] > best["score"]:
            best = fit
    if best is None:
        return failed(reasons[0] if reasons else "no big flat area")
    # coarse pixel (i, j) averages fine pixels i*ky .. i*ky + ky - 1: its centre lies
    # (ky - 1) / 2 fine pixels further than i * ky
    off = np.array([(ky - 1) / 2 * dy, (kx - 1) / 2 * dx])
    c_out = tuple(float(c) for c in np.add(best["c_out"], off))
    c_in = tuple(float(c) for c in np.add(best["c_in"], off))
    r_out, r_in = best["r_out"], best["r_in"]
    r_out_m = max(r_out - margin_um, 0.0)
    r_in_m = r_in + margin_um if r_in > 0 else 0.0
    mask = _annulus(scan.shape, scan.spacing_um, c_out, r_out_m, c_in, r_in_m) & scan.mask
    if not mask.any():
        return failed("the fitted annulus holds no measured point")
    return BreechFace(
        mask=mask,
        center_um=c_out,
        outer_radius_um=r_out_m,
        inner_center_um=c_in,
        inner_radius_um=r_in_m,
        quality=best["quality"],
        method="fit",
        details={
            "inliers_outer": best["inliers_outer"],
            "inliers_inner": best["inliers_inner"],
            "candidates": len(order),
        },
    )


def find_breech_face(
    scan: Scan,
    *,
    method: str = "auto",
    slope_max: float = 0.2,
    smooth_um: float = 12.0,
    work_spacing_um: float = 12.0,
    margin_um: float = 0.0,
    min_area_um2: float = 2500.0,
) -> BreechFace:
    """Find the usable breech-face annulus of a scan.

    On a raw scan (``method="fit"``) the heights are averaged to a coarse grid
    (``work_spacing_um``), smoothed (``smooth_um``) and the flat areas (surface slope below
    ``slope_max``, dimensionless; NaN counts as not flat) are labelled: the primer's
    roll-off, the walls of the firing-pin crater and its lip, the gap around the primer
    are steep and separate them. For each of the biggest flat areas a circle fitted
    robustly (RANSAC, scikit-image) to its outline gives the outer edge, and rays cast
    inwards from that circle until the area ends give points on the firing-pin outline,
    fitted by a second circle. The breech face is the area that best fills such an
    annulus (IoU × inlier share of the inner circle × annulus area, discounting discs
    without a hole, thin rings and areas touching the image border: crater floors,
    groove floors and the casing head). The mask is the annulus between the two circles
    (shrunk by ``margin_um`` on both sides), restricted to measured points.

    A scan already cut to its breech face (NaN outside an annulus, little relief, or
    ``meta["prepared"]``) keeps its valid region as is (``method="existing"``); circles
    are still fitted to its outline for the record.

    Parameters
    ----------
    scan : Scan
        The scan.
    method : {"auto", "fit", "existing", "file"}
        ``"auto"``: ``"existing"`` when the scan looks already cut, else ``"fit"``.
        ``"file"`` uses the ROI stored in the file (``meta["file_mask"]``).
    slope_max : float
        Steepest surface slope (µm per µm) still counted as the flat breech face.
    smooth_um : float
        Gaussian σ (µm) applied before measuring slopes.
    work_spacing_um : float
        Spacing of the coarse grid the search runs on.
    margin_um : float
        Extra margin removed inside the outer circle and outside the inner circle.
    min_area_um2 : float
        Islands of valid points smaller than this are dropped (``"existing"`` only).

    Returns
    -------
    BreechFace
        With ``quality`` 0 and an empty mask when nothing was found (see
        `preprocess` for the error raised then).

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> yy, xx = np.mgrid[:200, :200] * 10.0
    >>> r = np.hypot(yy - 1000, xx - 1000)
    >>> z = np.where(r < 300, -50.0, 0.0) + np.where(r > 800, -0.5 * (r - 800), 0.0)
    >>> bf = bl.find_breech_face(bl.Scan(z, spacing_um=10.0))
    >>> bf.method, round(bf.outer_radius_um, -2), round(bf.inner_radius_um, -2)
    ('fit', 800.0, 300.0)
    """
    _check_scan(scan, "find_breech_face")
    if method not in ("auto", "fit", "existing", "file"):
        raise ValueError(f"method must be 'auto', 'fit', 'existing' or 'file', got {method!r}")
    slope_max = _positive("slope_max", slope_max)
    smooth_um = _positive("smooth_um", smooth_um)
    work_spacing_um = _positive("work_spacing_um", work_spacing_um)
    if method == "file":
        fm = scan.meta.get("file_mask")
        if fm is None or np.shape(fm) != scan.shape:
            raise PreprocessError(
                f"find_breech_face: scan {_who(scan)} carries no file mask of its shape "
                f"(meta['file_mask']); use method='fit'"
            )
        masked = scan.replace(mask=np.asarray(fm, bool) & scan.mask)
        face = _existing_face(masked, 0)
        return BreechFace(**{**face.__dict__, "method": "file"})
    if method == "existing" or (method == "auto" and surface_state(scan).cut):
        area_px = min_area_um2 / (scan.spacing_um[0] * scan.spacing_um[1])
        return _existing_face(scan, int(area_px))
    return _fitted_face(
        scan,
        slope_max=slope_max,
        smooth_um=smooth_um,
        work_spacing_um=work_spacing_um,
        margin_um=float(margin_um),
    )


# --------------------------------------------------------------------------- steps


def _fit_surface(scan: Scan, method: str, order: int, max_points: int):
    """Fit a plane / quadric to an evenly spread sample of usable points.

    Returns the coefficients and the (centre y, centre x, scale) of the pixel coordinates
    they refer to: ``u = (row - cy) / scale``, ``v = (col - cx) / scale``.
    """
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
        raise PreprocessError(f"level: scan {_who(scan)} has too few points ({len(z)})")
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
    return coef, (cy, cx, scale)


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
    _check_scan(scan, "level")
    if method not in ("median", "lstsq"):
        raise ValueError(f"method must be 'median' or 'lstsq', got {method!r}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    ny, nx = scan.shape
    coef, (cy, cx, scale) = _fit_surface(scan, method, order, max_points)
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
    _check_scan(scan, "remove_spikes")
    threshold = _positive("threshold", threshold)
    dy, dx = scan.spacing_um
    sigma = (1.5, 1.5) if size_um is None else (size_um / dy, size_um / dx)
    z = scan.masked_heights()
    mask = scan.mask
    spikes = np.zeros_like(mask)
    scale = None
    for _ in range(max(1, int(passes))):
        # reference excludes the current outliers, so a spike does not drag its neighbours
        smooth, _ = _nan_gaussian(z, mask & ~spikes, sigma)
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
    _check_scan(scan, "bandpass")
    short_um = _positive("short_um", short_um, allow_none=True)
    long_um = _positive("long_um", long_um, allow_none=True)
    if short_um is not None and long_um is not None and short_um >= long_um:
        raise ValueError(f"short_um ({short_um}) must be below long_um ({long_um})")
    dy, dx = scan.spacing_um
    z = scan.masked_heights()
    mask = scan.mask
    params: dict[str, Any] = {"short_um": short_um, "long_um": long_um, "convention": convention}
    if short_um is not None:
        s = _sigma_um(short_um, convention)
        z, _ = _nan_gaussian(z, mask, (s / dy, s / dx))
        params["sigma_short_um"] = round(s, 4)
    if long_um is not None:
        s = _sigma_um(long_um, convention)
        trend, _ = _nan_gaussian(z, mask, (s / dy, s / dx))
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
    _check_scan(scan, "resample")
    if np.isscalar(spacing_um):
        spacing_um = (spacing_um, spacing_um)  # type: ignore[assignment]
    new = tuple(_positive("spacing_um", s) for s in spacing_um)  # type: ignore[union-attr]
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
        ndi.gaussian_filter(stack, sigma=(0, *sig), mode="constant", cval=0.0, output=stack)
        z, ws = stack[0], stack[1]
    else:
        ws = w

    def warp(a):
        return ndi.affine_transform(
            a, (fy, fx), output_shape=(ny, nx), order=1, mode="constant", cval=0.0
        )

    num, den, cover = warp(z), warp(ws), warp(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    valid = (cover >= 0.5) & (den > 1e-6)
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
    _check_scan(scan, "trim_edges")
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


# --------------------------------------------------------------------------- chain


def _crop(scan: Scan, mask: np.ndarray, pad_px: int) -> tuple[Scan, tuple[int, int]]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(0, rows[0] - pad_px), min(mask.shape[0], rows[-1] + pad_px + 1)
    x0, x1 = max(0, cols[0] - pad_px), min(mask.shape[1], cols[-1] + pad_px + 1)
    z = scan.heights[y0:y1, x0:x1].copy()
    m = mask[y0:y1, x0:x1]
    z[~m] = np.nan
    meta = scan.with_history("crop", rows=(int(y0), int(y1)), cols=(int(x0), int(x1)))
    return scan.replace(heights=z, mask=m, meta=meta), (int(y0), int(x0))


def preprocess(scan: Scan, *, strict: bool = False, **options: Any) -> Scan:
    """Turn a scan (raw or already processed) into a comparable breech-face surface.

    Runs `find_breech_face`, crops to it, `remove_spikes`, `level`, the low-pass half of
    `bandpass` at the native spacing (it doubles as anti-aliasing), `resample`, the
    high-pass half of `bandpass`, and `trim_edges`. Scans already cut to their breech face
    (e.g. the processed Fadul scans) keep their region and are not filtered again
    (``refilter="auto"``): they come out nearly unchanged, so processed and raw inputs mix.

    Defaults follow cmcR's reference parameters (DESIGN.md) with the ISO 16610-61
    Gaussian: band-pass 16-500 µm, robust (median) plane, 6.25 µm output.

    Parameters
    ----------
    scan : Scan
    strict : bool, default False
        When no breech face is found in a raw scan: raise `PreprocessError` (True, the
        opt-in refusal) or return the scan processed over all its measured points,
        flagged ``breech_face_not_found`` with ``meta["prepared"]["ok"] = False`` (False).
        A scan already cut to its breech face (`surface_state`) or carrying the file's ROI
        keeps its region whatever its ring geometry: an irregular ring is flagged
        ``ring_irregular``, never refused.
    **options
        roi : {"auto", "fit", "existing", "file"}
            How to find the breech face (see `find_breech_face`; ``"auto"`` uses the
            file's ROI when ``meta["file_mask"]`` holds one).
        spacing_um : float, default 6.25
        short_um, long_um : float or None, default 16 and 500
        convention : {"iso", "cmcr"}, default "iso"
        level_method : {"median", "lstsq"}; level_order : {1, 2}
        despike : bool; spike_threshold : float, default 8
        trim_um : float, default 12.5
        margin_um : float, default 0
        min_quality : float, default 0.5
        crop : bool, default True
            Crop to the breech face's bounding box (plus the trim width).
        refilter : {"auto", True, False}, default "auto"
            Band-pass a scan already cut to its breech face again (True) or not
            (False); "auto" filters only scans whose breech face was found or read.

    Returns
    -------
    Scan
        Heights in µm, NaN outside the breech face, on the ``spacing_um`` grid.
        ``meta["prepared"]`` holds ``ok``, ``quality``, ``flags``, ``reason``, ``state``
        (the `surface_state` of the input), ``filtered``, ``area_mm2``, ``spacing_um``, ``options``,
        ``breech_face`` (circles in input µm) and ``origin_um``: the position, in the input
        scan's µm coordinates, of output pixel (0, 0).

    Raises
    ------
    PreprocessError
        Naming the scan: when nothing usable is left, or when no breech face is found in a
        raw scan and ``strict`` is True.

    Notes
    -----
    ``meta["prepared"]["flags"]`` lists what a user of the scan should know, as
    ``{"code", "message"}`` dicts: ``breech_face_not_found`` (raw scan, no ring found: all
    measured points kept), ``ring_irregular`` (already cut region kept though far from an
    annulus: a hole touching or opening to the edge, missing sectors), ``small_area`` (less
    than `MIN_AREA_MM2` of breech face: its comparisons cannot yield a lead) and, from
    `prepare_if_needed`, ``auto_prepared``.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> yy, xx = np.mgrid[:240, :240] * 12.5
    >>> r = np.hypot(yy - 1500, xx - 1500)
    >>> z = np.where(r < 400, -60.0, 0.0) + np.where(r > 1100, -0.5 * (r - 1100), 0.0)
    >>> z = z + np.random.default_rng(1).normal(0, 0.5, z.shape) + 0.02 * xx
    >>> prep = bl.preprocess(bl.Scan(z, spacing_um=12.5, source="demo.x3p"))
    >>> prep.spacing_um, prep.meta["prepared"]["ok"]
    ((6.25, 6.25), True)
    """
    _check_scan(scan, "preprocess")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(
            f"preprocess: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **options}
    _check_field(scan, opts["spacing_um"])
    scan, gross = _without_gross_outliers(scan)
    refilter = opts["refilter"]
    if refilter not in ("auto", True, False):
        raise ValueError(f"refilter must be 'auto', True or False, got {refilter!r}")
    roi = opts["roi"]
    if roi == "auto" and scan.meta.get("file_mask") is not None:
        if np.shape(scan.meta["file_mask"]) == scan.shape:
            roi = "file"
    state = surface_state(scan)
    if roi == "auto":
        roi = "existing" if state.cut else "fit"
    face = find_breech_face(scan, method=roi, margin_um=opts["margin_um"])
    flags: list[dict[str, str]] = []
    if gross:
        flags.append(
            _flag(
                "gross_outliers",
                f"{gross} point(s) more than {GROSS_OUTLIER_UM:g} µm from the scan's median "
                "height set to not measured",
            )
        )
    low = face.quality < opts["min_quality"]
    if face.method == "fit" and (low or not face.mask.any()):
        reason = face.details.get("reason") or (
            f"ring fit quality {face.quality:.2f} < min_quality {opts['min_quality']}"
        )
        msg = f"no breech face found in scan {_who(scan)}: {reason}"
        if strict:
            raise PreprocessError(msg + " (strict=True; without it the scan is kept, flagged)")
        log.warning("%s; processed over all its measured points, flagged", msg)
        flags.append(_flag("breech_face_not_found", f"{reason}; all measured points kept"))
        mask = scan.mask
    else:
        mask = face.mask if face.mask.any() else scan.mask
        if low or face.details.get("note"):
            # an already cut scan (or the file's ROI) keeps its region: the ring fit is
            # geometry, reported, never a reason to drop usable evidence
            note = face.details.get("note") or "the region is far from an annulus"
            flags.append(
                _flag(
                    "ring_irregular",
                    f"breech-face region kept as cut ({face.method}); ring fit quality "
                    f"{face.quality:.2f}: {note}",
                )
            )
    meta = scan.with_history("find_breech_face", **face.as_dict())
    work = scan.replace(meta=meta)
    origin = (0, 0)
    if opts["crop"]:
        pad = 2 + math.ceil(opts["trim_um"] / min(scan.spacing_um))
        work, origin = _crop(work, mask, pad)
    else:
        work = work.replace(heights=np.where(mask, work.heights, np.nan), mask=mask)
    if opts["despike"]:
        work = remove_spikes(work, threshold=opts["spike_threshold"])
    work = level(work, method=opts["level_method"], order=opts["level_order"])
    if refilter == "auto":
        # an input already cut to its breech face and free of form was band-passed by
        # whoever cut it: filtering it again would only eat its longest wavelengths and
        # its edges. Cut but with form left (a raw export masked to its ROI): filter.
        refilter = not (face.method == "existing" and state.filtered)
    short_um = opts["short_um"] if refilter else None
    long_um = opts["long_um"] if refilter else None
    if short_um is not None:
        work = bandpass(work, short_um=short_um, long_um=None, convention=opts["convention"])
    # The ISO low-pass at 16 µm already band-limits far below the new Nyquist (32 %
    # transmission at 12.5 µm): a second anti-aliasing Gaussian would only cost time.
    work = resample(work, spacing_um=opts["spacing_um"], anti_aliasing=short_um is None)
    if long_um is not None:
        work = bandpass(work, short_um=None, long_um=long_um, convention=opts["convention"])
    changed = (
        short_um is not None
        or long_um is not None
        or not work.meta["history"][-1].get("skipped", False)
    )
    if opts["trim_um"] and changed:
        work = trim_edges(work, width_um=opts["trim_um"])
    if work.n_valid == 0:
        raise PreprocessError(
            f"scan {_who(scan)}: nothing usable left after preprocessing "
            f"({scan.n_valid} measured points in, {face.method} breech face)"
        )
    area_mm2 = work.area_mm2
    if area_mm2 < MIN_AREA_MM2:
        flags.append(_small_area_flag(area_mm2))
    for f in flags:
        log.info("%s: flagged %s: %s", _who(scan), f["code"], f["message"])
    dy, dx = scan.spacing_um
    prepared = {
        "ok": not any(f["code"] == "breech_face_not_found" for f in flags),
        "quality": round(float(face.quality), 4),
        "reason": "; ".join(f["message"] for f in flags),
        "flags": flags,
        "state": state.as_dict(),
        "filtered": bool(refilter),
        "area_mm2": round(area_mm2, 4),
        "spacing_um": work.spacing_um,
        "origin_um": (origin[0] * dy, origin[1] * dx),
        "options": {k: opts[k] for k in DEFAULTS},
        "breech_face": face.as_dict(),
    }
    prepared["fingerprint"] = data_fingerprint(work.heights, work.mask)
    meta = dict(work.meta)
    meta["prepared"] = prepared
    return work.replace(meta=meta)


#: Field of view (mm, the longer side) a breech-face scan can have: a 9 mm primer is about
#: 4.4 mm across; a field outside this range means the spacing is in the wrong unit.
FIELD_RANGE_MM = (0.2, 60.0)
#: Largest grid `preprocess` resamples to (pixels).
MAX_OUTPUT_PIXELS = 64_000_000


#: A point this far (µm) from the scan's median height is no measurement of a casing head
#: (its whole relief, crater and tilt included, is well under a millimetre): an invalid
#: marker such as -999999, or a glitch. Such points are set to not measured before anything
#: is fitted, since a few of them would tilt every least-squares fit.
GROSS_OUTLIER_UM = 5000.0


def _without_gross_outliers(scan: Scan) -> tuple[Scan, int]:
    z = scan.heights
    median = float(np.median(z[scan.mask]))
    with np.errstate(invalid="ignore"):
        bad = scan.mask & (np.abs(z - median) > GROSS_OUTLIER_UM)
    n = int(np.count_nonzero(bad))
    if not n:
        return scan, 0
    log.info("%s: %d gross outlier(s) set to not measured", _who(scan), n)
    return scan.replace(mask=scan.mask & ~bad), n


def _check_field(scan: Scan, spacing_um: float) -> None:
    """Refuse at once a spacing that cannot be a breech-face scan's (a unit mix-up), before
    a resample to an absurd grid runs for minutes and eats the memory."""
    field_mm = max(n * s for n, s in zip(scan.shape, scan.spacing_um, strict=True)) / 1000.0
    lo, hi = FIELD_RANGE_MM
    out_px = np.prod(
        [n * s / float(spacing_um) for n, s in zip(scan.shape, scan.spacing_um, strict=True)]
    )
    if not lo <= field_mm <= hi or out_px > MAX_OUTPUT_PIXELS:
        raise PreprocessError(
            f"scan {_who(scan)}: {scan.shape[0]} x {scan.shape[1]} px at {scan.spacing_um} µm "
            f"per pixel is a field of {field_mm:.3g} mm, not a breech-face scan (expected "
            f"{lo:g}-{hi:g} mm); is the spacing in micrometres? Read it with "
            "read_scan(path, spacing_um=...)"
        )


def _flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _small_area_flag(area_mm2: float) -> dict[str, str]:
    return _flag(
        "small_area",
        f"{area_mm2:.2f} mm² of usable breech face, less than {MIN_AREA_MM2:g} mm²: "
        "its comparisons cannot yield a lead",
    )


def flags_of(scan: Scan) -> list[dict[str, str]]:
    """What a user of the scan should know: the flags `preprocess` gave it
    (``meta["prepared"]["flags"]``), and ``small_area`` whenever its usable area is below
    `MIN_AREA_MM2`, even if it was prepared elsewhere (a crop of a prepared scan, a
    simulated one). [] when none.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocess import flags_of
    >>> z = np.random.default_rng(0).normal(size=(64, 64))
    >>> [f["code"] for f in flags_of(bl.preprocess(bl.Scan(z, spacing_um=6.25)))]
    ['ring_irregular', 'small_area']
    >>> [f["code"] for f in flags_of(bl.Scan(z, spacing_um=6.25))]  # never prepared
    ['small_area']
    """
    prepared = scan.meta.get("prepared")
    flags = prepared.get("flags") if isinstance(prepared, Mapping) else None
    out = [dict(f) for f in flags] if isinstance(flags, list) else []
    if scan.area_mm2 < MIN_AREA_MM2 and not any(f.get("code") == "small_area" for f in out):
        out.append(_small_area_flag(scan.area_mm2))
    return out


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SELF = object()  # cache value: "the scan itself" (a value never refers to its key)


def _claims_prepared(scan: Scan) -> str:
    """ "made" when `preprocess` made exactly these data (its fingerprint matches), "claims"
    when the scan only says it is prepared, "" when it does not."""
    prepared = scan.meta.get("prepared")
    # a scan `preprocess` made says so whether or not it found a ring (``ok``)
    if isinstance(prepared, Mapping) and (prepared.get("ok") or "flags" in prepared):
        if prepared.get("fingerprint") == data_fingerprint(scan.heights, scan.mask):
            return "made"
        spacing = prepared.get("spacing_um")
        try:
            same = spacing is None or np.allclose(spacing, scan.spacing_um, rtol=1e-6)
        except (TypeError, ValueError):
            same = False
        return "claims" if same else ""
    sim = scan.meta.get("simulation")
    return "claims" if isinstance(sim, Mapping) and sim.get("raw") is False else ""


def prepare_if_needed(scan: Scan, **options: Any) -> Scan:
    """Return ``scan`` when it is already prepared, else ``preprocess(scan, **options)``.

    A scan counts as prepared when `preprocess` made exactly these data (the fingerprint
    it records in ``meta["prepared"]`` matches the heights), or when it says it is
    prepared (``meta["prepared"]`` at its present spacing, or a prepared-like simulated
    scan) *and* its data agree: square pixels and `surface_state` finds it cut and free of
    form. A claim alone (e.g. read back from a file and edited since) is not trusted. Anything else goes through the default
    chain (`preprocess`, non-strict), logged and flagged ``auto_prepared``. The decision is
    cached per scan object, so a scan compared many times is checked and prepared once.

    Used by `balllink.compare`, `balllink.compare_many`, `balllink.embed`,
    `balllink.CasingIndex` and the lead database, so results do not depend on whether the
    caller remembered to prepare.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocess import prepare_if_needed, flags_of
    >>> z = np.random.default_rng(0).normal(size=(320, 320))
    >>> prep = prepare_if_needed(bl.Scan(z, spacing_um=6.25))
    >>> "auto_prepared" in [f["code"] for f in flags_of(prep)]
    True
    >>> prepare_if_needed(prep) is prep
    True
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"prepare_if_needed: expected a balllink.Scan, got {type(scan).__name__}")
    key = tuple(sorted(options.items()))
    try:
        cached = _CHECKED.get(scan, {}).get(key)
    except TypeError:  # unhashable option values: no cache
        cached, key = None, None
    if cached is not None:
        return scan if cached is _SELF else cached
    dy, dx = scan.spacing_um
    square = abs(dy - dx) <= 1e-6 * max(dy, dx)
    claim = _claims_prepared(scan)
    if claim == "made" or (claim and square and scan.n_valid and surface_state(scan).filtered):
        out = scan
    else:
        why = "claims to be prepared but its data disagree" if claim else "not prepared"
        log.info(
            "%s: %s; preparing it with the default chain (balllink.preprocess)", _who(scan), why
        )
        out = preprocess(scan, **options)
        prepared = dict(out.meta["prepared"])
        prepared["flags"] = [
            *prepared["flags"],
            _flag("auto_prepared", f"{why}: prepared with the default chain on use"),
        ]
        meta = dict(out.meta)
        meta["prepared"] = prepared
        out = out.replace(meta=meta)
    if key is not None:
        _CHECKED.setdefault(scan, {})[key] = _SELF if out is scan else out
        if out is not scan:
            _CHECKED.setdefault(out, {})[key] = _SELF
    return out
