"""Find the breech-face annulus of a scan: flat areas, two circles, the ring between them.

On a raw scan the flat primer ring is found on a coarse grid and its outer edge and
firing-pin outline are fitted by robust circles (`find_breech_face`, ``method="fit"``). A
scan already cut to its breech face keeps its region; circles are fitted to its outline
for the record only (``method="existing"``, or ``"file"`` for the ROI stored in the file).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, morphology

from .._grid import block_mean, nan_gaussian
from .._scan import Scan
from ..errors import PreprocessError
from ._checks import check_scan, positive, scan_name
from ._state import surface_state


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


def _grid_um(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, ...]:
    yy = np.arange(shape[0], dtype=np.float64)[:, None] * spacing[0]
    xx = np.arange(shape[1], dtype=np.float64)[None, :] * spacing[1]
    return yy, xx


def _disk_mask(shape, spacing, center_um, radius_um) -> np.ndarray:
    yy, xx = _grid_um(shape, spacing)
    return (yy - center_um[0]) ** 2 + (xx - center_um[1]) ** 2 <= radius_um**2


class _Circle(NamedTuple):
    """A fitted circle (µm) and the share of the points that lie on it."""

    center_um: tuple[float, float]  # (y, x)
    radius_um: float
    inliers: float


def _fit_circle(
    points_um: np.ndarray, threshold_um: float, seed: int = 0, max_points: int = 1000
) -> _Circle | None:
    """Robust circle (RANSAC then least squares on the inliers) through ``(y, x)`` points."""
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
    return _Circle((cy, cx), float(model.radius), float(inliers.mean()))


def _boundary_points(region: np.ndarray, spacing, exclude_border: bool = True) -> np.ndarray:
    edge = region & ~ndi.binary_erosion(region, border_value=1)
    if exclude_border:
        edge[[0, -1], :] = False
        edge[:, [0, -1]] = False
    idx = np.argwhere(edge).astype(np.float64)
    return idx * np.asarray(spacing, dtype=np.float64)


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
        c1, r1 = first.center_um, first.radius_um
        d = np.abs(np.hypot(pts[:, 0] - c1[0], pts[:, 1] - c1[1]) - r1)
        rest = pts[d > 2.0 * step_um]
        second = _fit_circle(rest, 2.0 * step_um, seed=1)
        circles = [first] + ([second] if second is not None else [])
        circles.sort(key=lambda c: -c.radius_um)
        c_out, r_out = circles[0].center_um, circles[0].radius_um
        if len(circles) > 1:
            c_in, r_in = circles[1].center_um, circles[1].radius_um
        else:
            c_in, r_in = c_out, 0.0
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


@dataclass
class _AnnulusFit:
    """Two circles fitted to one flat area (µm on the coarse grid) and how well they fit."""

    c_out: tuple[float, float]
    r_out: float
    c_in: tuple[float, float]
    r_in: float
    inliers_outer: float
    inliers_inner: float
    quality: float  # IoU of the annulus with the area
    score: float  # which candidate area is the breech face (highest wins)


def _fit_annulus(comp: np.ndarray, cvalid: np.ndarray, cspacing) -> _AnnulusFit | str:
    """Fit the outer and inner circles to one flat area; the fit, or the reason it failed."""
    filled = ndi.binary_fill_holes(comp)
    outer = _fit_circle(_boundary_points(filled, cspacing), 1.5 * max(cspacing))
    if outer is None:
        return "no circular outline around the flat area"
    c_out, r_out, inl_out = outer.center_um, outer.radius_um, outer.inliers
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
        c_in, r_in, inl_in = inner.center_um, inner.radius_um, inner.inliers
    if not (r_in < 0.95 * r_out):
        return f"inner circle ({r_in:.0f} µm) not inside outer ({r_out:.0f} µm)"
    ann = _annulus(comp.shape, cspacing, c_out, r_out, c_in, r_in)
    quality = _iou(ann & cvalid, comp)
    area = math.pi * (r_out**2 - r_in**2)
    # A breech face is a ring around the firing-pin impression: a disc without a hole (a
    # crater floor, a plateau) or a thin ring (a groove floor) is unlikely to be it.
    ratio = r_in / r_out
    shape_ok = 0.2 <= ratio <= 0.9
    return _AnnulusFit(
        c_out=c_out,
        r_out=r_out,
        c_in=c_in,
        r_in=r_in,
        inliers_outer=round(inl_out, 3),
        inliers_inner=round(inl_in, 3),
        quality=quality,
        score=quality * inl_in * area * (1.0 if shape_ok else 0.2),
    )


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
    coarse, share = block_mean(scan.heights, scan.mask, ky, kx)
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
    smooth, _ = nan_gaussian(coarse, cvalid, (smooth_um / cspacing[0], smooth_um / cspacing[1]))
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
        ann = _annulus(labels.shape, cspacing, fit.c_out, fit.r_out, fit.c_in, fit.r_in)
        share = np.bincount(labels[ann], minlength=n + 1) / np.maximum(sizes, 1)
        pieces = np.flatnonzero((share >= 0.7) & (sizes >= 20))
        pieces = pieces[pieces > 0]
        if len(pieces) > 1:
            merged = _fit_annulus(_grown(np.isin(labels, pieces)), cvalid, cspacing)
            if not isinstance(merged, str) and merged.score > fit.score:
                fit = merged
        if k in border:  # the casing head usually reaches the image border
            fit.score *= 0.5
        if best is None or fit.score > best.score:
            best = fit
    if best is None:
        return failed(reasons[0] if reasons else "no big flat area")
    # coarse pixel (i, j) averages fine pixels i*ky .. i*ky + ky - 1: its centre lies
    # (ky - 1) / 2 fine pixels further than i * ky
    off = np.array([(ky - 1) / 2 * dy, (kx - 1) / 2 * dx])
    c_out = tuple(float(c) for c in np.add(best.c_out, off))
    c_in = tuple(float(c) for c in np.add(best.c_in, off))
    r_out, r_in = best.r_out, best.r_in
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
        quality=best.quality,
        method="fit",
        details={
            "inliers_outer": best.inliers_outer,
            "inliers_inner": best.inliers_inner,
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
    check_scan(scan, "find_breech_face")
    if method not in ("auto", "fit", "existing", "file"):
        raise ValueError(f"method must be 'auto', 'fit', 'existing' or 'file', got {method!r}")
    slope_max = positive("slope_max", slope_max)
    smooth_um = positive("smooth_um", smooth_um)
    work_spacing_um = positive("work_spacing_um", work_spacing_um)
    if method == "file":
        fm = scan.meta.get("file_mask")
        if fm is None or np.shape(fm) != scan.shape:
            raise PreprocessError(
                f"find_breech_face: scan {scan_name(scan)} carries no file mask of its shape "
                f"(meta['file_mask']); use method='fit'"
            )
        masked = scan.replace(mask=np.asarray(fm, bool) & scan.mask)
        face = _existing_face(masked, 0)
        return dataclasses.replace(face, method="file")
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
