"""Geometry of simulated exports: varied breech-face cuts, mirroring, crops, annotations.

Everything here acts on the *cut* of a scan (which pixels are kept, which way up the rows
are stored, which window is exported); the marks a casing carries are made in
`balllink.simulate` and never change here. The public functions are re-exported from
`balllink.simulate`, whose module docstring states the pose and handedness conventions.

Angles of cut outlines (ellipse axis, missing sectors) are degrees counter-clockwise as
displayed (rows down) from the +x (column) direction, about the outline centre, in the
stored (file) frame. Every frame-dependent truth entry (centres, angles, masks, crop
offsets) describes the stored array; only ``rotation_deg`` and ``shift_um`` describe the
casing as viewed (see `mirror`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._scan import Scan

__all__ = [
    "ANNOTATION_NAMES",
    "CUT_KINDS",
    "Cut",
    "annotations",
    "annulus_cut",
    "crop",
    "draw_cut",
    "mirror",
]

#: Kinds of varied breech-face cuts (``meta["simulation"]["cut"]``), with their weights
#: when drawn at random: a hole near the centre, clearly off-centre, touching the outline,
#: opening to the outside (C-shaped face), a missing wedge, an outline clipped by the border.
CUT_KINDS: dict[str, float] = {
    "centred": 0.10,
    "offcentre": 0.20,
    "touching": 0.15,
    "open": 0.20,
    "sector": 0.20,
    "clipped": 0.15,
}

#: Annotation names as written by FiX3P / x3ptools (``annotations``), with the range of
#: the share of the usable breech face that each covers.
ANNOTATION_NAMES = ("break-off", "no striae", "left groove", "firing pin drag")
_ANNOTATION_SHARES = {
    "break-off": (0.01, 0.06),
    "no striae": (0.02, 0.10),
    "left groove": (0.02, 0.10),
    "firing pin drag": (0.01, 0.05),
}

#: Random streams of this module: ``np.random.default_rng([seed, a, b, STREAM_TAG, kind])``
#: with a non-zero last entry, so they never repeat a stream of `balllink.simulate` (its
#: streams have at most four entries, and SeedSequence pads with zeros).
STREAM_TAG = 104729
STREAM_CUT, STREAM_MIRROR, STREAM_CUTS, STREAM_ANNOTATE, STREAM_CROP = 1, 2, 3, 4, 5

_NOMINAL_RADIUS = 0.40  # varied outline: mean radius / field side, before the ±15 %
_BOUNDARY_POINTS = 1024


def stream(seed: int, a: int, b: int, kind: int) -> np.random.Generator:
    """A random stream of this module (see `STREAM_TAG`)."""
    return np.random.default_rng([int(seed), int(a), int(b), STREAM_TAG, int(kind)])


# ------------------------------------------------------------------------------- cuts


@dataclass(frozen=True)
class Cut:
    """One breech-face cut: an elliptical outline minus a circular hole and a sector.

    All lengths in µm, positions ``(y, x)`` from pixel ``(0, 0)``, angles in degrees
    counter-clockwise as displayed from +x.

    Attributes
    ----------
    kind : str
        One of `CUT_KINDS`, or ``"annulus"`` for the default simulator geometry.
    centre_um, axes_um, angle_deg
        The outline: an ellipse with semi-axes ``(a, b)``, ``a`` along ``angle_deg``.
    hole_centre_um, hole_radius_um
        The firing-pin hole (NaN inside).
    sector_deg : (start, width) or None
        A missing wedge about the outline centre, from ``start`` over ``width`` degrees.
    """

    kind: str
    centre_um: tuple[float, float]
    axes_um: tuple[float, float]
    angle_deg: float
    hole_centre_um: tuple[float, float]
    hole_radius_um: float
    sector_deg: tuple[float, float] | None = None

    @property
    def radius_um(self) -> float:
        """Mean outline radius ``sqrt(a * b)`` (``a`` itself for a circle)."""
        a, b = self.axes_um
        return a if a == b else math.sqrt(a * b)

    def outline(self, n: int = _BOUNDARY_POINTS) -> np.ndarray:
        """``(n, 2)`` points ``(y, x)`` µm on the outline."""
        t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        return self.centre_um + _ellipse(self.axes_um, self.angle_deg, t)

    def rim_gap_um(self) -> float:
        """Distance from the hole's edge to the outline (negative: the hole opens)."""
        a, b = self.axes_um
        if a == b:  # a circle: exact
            return float(a - math.dist(self.hole_centre_um, self.centre_um) - self.hole_radius_um)
        d = np.hypot(*(self.outline() - self.hole_centre_um).T).min()
        inside = _inside(self, *self.hole_centre_um)
        return float((d if inside else -d) - self.hole_radius_um)

    def overhang_um(self, shape: tuple[int, int], spacing: float) -> float:
        """How far the outline reaches past the image border (negative: it fits)."""
        a, b = self.axes_um
        if a == b:  # a circle: exact
            (cy, cx), top = self.centre_um, ((shape[0] - 1) * spacing, (shape[1] - 1) * spacing)
            return float(a - min(cy, cx, top[0] - cy, top[1] - cx))
        return _overhang(self.outline(), shape, spacing)

    def mask(self, shape: tuple[int, int], spacing: float) -> np.ndarray:
        """Bool ``shape`` array: inside the outline, outside the hole and the sector."""
        ny, nx = shape
        dy = self.centre_um[0] - np.arange(ny)[:, None] * spacing  # up, as displayed
        dx = np.arange(nx)[None, :] * spacing - self.centre_um[1]
        a, b = self.axes_um
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        # (u / a)^2 + (v / b)^2 <= 1 with u, v along the axes, as a quadratic form
        qa, qc = c * c / a**2 + s * s / b**2, s * s / a**2 + c * c / b**2
        qb = 2.0 * c * s * (1.0 / a**2 - 1.0 / b**2)
        keep = (qb * dy) * dx + (qa * dx * dx) + (qc * dy * dy) <= 1.0
        hy = np.arange(ny)[:, None] * spacing - self.hole_centre_um[0]
        hx = np.arange(nx)[None, :] * spacing - self.hole_centre_um[1]
        keep &= (hy * hy) + (hx * hx) >= self.hole_radius_um**2
        if self.sector_deg is not None:
            start, width = self.sector_deg
            keep &= (np.degrees(np.arctan2(dy, dx)) - start) % 360.0 >= width
        return keep

    def info(self, shape: tuple[int, int], spacing: float) -> dict[str, Any]:
        """The truth entries of this cut (see `balllink.simulate.casings`)."""
        return {
            "cut": self.kind,
            "primer_center_um": _pair(self.centre_um),
            "primer_radius_um": float(self.radius_um),
            "primer_axes_um": _pair(self.axes_um),
            "primer_angle_deg": float(self.angle_deg),
            "hole_center_um": _pair(self.hole_centre_um),
            "hole_radius_um": float(self.hole_radius_um),
            "sector_deg": None if self.sector_deg is None else _pair(self.sector_deg),
            "rim_gap_um": self.rim_gap_um(),
            "clipped": bool(self.overhang_um(shape, spacing) > 0.0),
        }


def _pair(v: Any) -> tuple[float, float]:
    return (float(v[0]), float(v[1]))


def _ellipse(axes: tuple[float, float], angle_deg: float, t: np.ndarray) -> np.ndarray:
    """Points ``(y, x)`` of an ellipse centred at 0 (angles counter-clockwise as displayed)."""
    a, b = axes
    al = math.radians(angle_deg)
    u, v = a * np.cos(t), b * np.sin(t)  # along the a axis and the b axis
    x = u * math.cos(al) - v * math.sin(al)
    y = -(u * math.sin(al) + v * math.cos(al))
    return np.stack([y, x], axis=-1)


def _inside(cut: Cut, y: Any, x: Any) -> Any:
    a, b = cut.axes_um
    al = math.radians(cut.angle_deg)
    dy, dx = -(y - cut.centre_um[0]), x - cut.centre_um[1]  # y up, as displayed
    u = dx * math.cos(al) + dy * math.sin(al)
    v = -dx * math.sin(al) + dy * math.cos(al)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _overhang(points: np.ndarray, shape: tuple[int, int], spacing: float) -> float:
    ymax, xmax = (shape[0] - 1) * spacing, (shape[1] - 1) * spacing
    y, x = points[:, 0], points[:, 1]
    return float(max((-y).max(), (y - ymax).max(), (-x).max(), (x - xmax).max()))


def _bisect(f, lo: float, hi: float, target: float, increasing: bool) -> float:
    """``x`` in [lo, hi] with ``f(x) ≈ target`` for a monotone ``f`` (clamped to the ends)."""
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def annulus_cut(
    centre_um: Any, radius_um: float, hole_centre_um: Any, hole_radius_um: float
) -> Cut:
    """The default simulator geometry (a circle minus a circle) as a `Cut`."""
    return Cut(
        kind="annulus",
        centre_um=_pair(centre_um),
        axes_um=(float(radius_um), float(radius_um)),
        angle_deg=0.0,
        hole_centre_um=_pair(hole_centre_um),
        hole_radius_um=float(hole_radius_um),
    )


def draw_cut(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    kinds: Sequence[str] | None = None,
) -> Cut:
    """A random varied cut (see `balllink.simulate.casings`, ``geometry="varied"``).

    Outline: mean radius 0.40 of the field side times U(0.85, 1.15), axis ratio
    U(0.9, 1), any orientation, centred (within what keeps it inside the image) unless
    ``clipped``. Hole radius / mean outline radius in [0.2, 0.6]. Always draws the same
    number of values from ``rng``, whatever the kind.
    """
    kinds = tuple(CUT_KINDS) if kinds is None else tuple(kinds)
    weights = np.array([CUT_KINDS[k] for k in kinds])
    k = int(rng.choice(len(kinds), p=weights / weights.sum()))
    u = rng.random(12)
    kind = kinds[k]
    ny, nx = shape
    sp = float(spacing)
    radius = _NOMINAL_RADIUS * min(shape) * sp * (0.85 + 0.30 * u[0])
    q = 0.9 + 0.1 * u[1]
    axes = (radius / math.sqrt(q), radius * math.sqrt(q))
    angle = 180.0 * u[2]
    ratio_lo, ratio_hi = {"offcentre": (0.2, 0.5), "open": (0.25, 0.6)}.get(kind, (0.2, 0.6))
    r_hole = radius * (ratio_lo + (ratio_hi - ratio_lo) * u[3])
    psi = 2.0 * math.pi * u[4]
    direction = np.array([-math.sin(psi), math.cos(psi)])  # (y, x), counter-clockwise
    rel = _ellipse(axes, angle, np.linspace(0.0, 2.0 * math.pi, _BOUNDARY_POINTS, False))

    def gap(d: float) -> float:  # hole edge to outline, hole centre at d along direction
        return float(np.hypot(*(rel - d * direction).T).min()) - r_hole

    margin = max(3.0 * sp, 0.04 * radius)
    d_clear = _bisect(gap, 0.0, axes[0], margin, increasing=False)  # farthest clear offset
    if kind == "centred":
        d = min(0.08 * radius, d_clear) * u[5]
    elif kind == "offcentre":
        hi = min(0.40 * radius, d_clear)
        lo = min(0.12 * radius, hi)
        d = lo + (hi - lo) * u[5]
    elif kind == "touching":
        d = _bisect(gap, 0.0, axes[0], sp * (-0.5 + 1.5 * u[5]), increasing=False)
    elif kind == "open":
        d = _bisect(gap, 0.0, axes[0], -r_hole * (0.2 + 0.4 * u[5]), increasing=False)
    else:  # sector, clipped
        d = min(0.25 * radius, d_clear) * u[5]
    sector = (360.0 * u[6], 20.0 + 100.0 * u[7]) if kind == "sector" else None

    centre0 = np.array([(ny - 1) / 2.0, (nx - 1) / 2.0]) * sp
    if kind == "clipped":
        phi = 2.0 * math.pi * u[8]
        way = np.array([-math.sin(phi), math.cos(phi)])
        target = radius * (0.04 + 0.11 * u[9])
        s = _bisect(
            lambda s: _overhang(centre0 + s * way + rel, shape, sp),
            0.0,
            float(max(shape)) * sp,
            target,
            increasing=True,
        )
        centre = centre0 + s * way
    else:
        room = max(0.0, -_overhang(centre0 + rel, shape, sp) - sp)
        centre = centre0 + 0.8 * room * (2.0 * u[10:12] - 1.0)
    return Cut(
        kind=kind,
        centre_um=_pair(centre),
        axes_um=_pair(axes),
        angle_deg=float(angle),
        hole_centre_um=_pair(centre + d * direction),
        hole_radius_um=float(r_hole),
        sector_deg=None if sector is None else _pair(sector),
    )


# ----------------------------------------------------------------------------- truth


def _truth(scan: Scan) -> dict[str, Any] | None:
    """``meta["simulation"]`` as a plain dict (lazy arrays are loaded), or None."""
    truth = scan.meta.get("simulation")
    if not isinstance(truth, Mapping):
        return None
    return {k: truth[k] for k in truth}


def flip_truth(info: Mapping[str, Any], shape: tuple[int, int], spacing: float) -> dict[str, Any]:
    """The truth of ``np.flipud`` of a scan of ``shape`` (see `mirror`)."""
    out = dict(info)
    top = (shape[0] - 1) * spacing
    for key, value in info.items():
        if isinstance(value, np.ndarray) and value.shape == tuple(shape):
            flipped = np.ascontiguousarray(value[::-1])
            flipped.setflags(write=False)
            out[key] = flipped
        elif key.endswith("_center_um"):
            out[key] = (top - float(value[0]), float(value[1]))
    if "primer_angle_deg" in info:
        out["primer_angle_deg"] = float(-info["primer_angle_deg"] % 180.0)
    if info.get("sector_deg") is not None:
        start, width = info["sector_deg"]
        out["sector_deg"] = (float((-start - width) % 360.0), float(width))
    out["mirrored"] = not bool(info.get("mirrored", False))
    return out


# ---------------------------------------------------------------------------- mirror


def mirror(scan: Scan) -> Scan:
    """The same scan exported with the other handedness: rows reversed (``np.flipud``).

    Parameters
    ----------
    scan : Scan
        Any scan; a simulated one has its truth carried along.

    Returns
    -------
    Scan
        ``heights = np.flipud(scan.heights)`` (and the mask likewise), ``meta
        ["handedness"]`` switched between ``"viewed"`` and ``"mirrored"`` (a scan
        without one counts as ``"viewed"``), ``meta["crop"]["offset_px"]`` moved to the
        mirrored source. In ``meta["simulation"]``: ``mirrored`` switched; the arrays
        (``breech_face_mask``, ``clean_surface``), the centres ``*_center_um``
        (``y -> (ny - 1) * spacing - y``), ``primer_angle_deg`` and ``sector_deg`` follow
        the stored array; ``rotation_deg`` and ``shift_um`` still give the pose of the
        casing as viewed, so `balllink.simulate.relative_pose` stays exact. Mirroring
        twice gives the original back. Lazy truth arrays are loaded.

    Examples
    --------
    >>> from balllink import simulate
    >>> scan = simulate.casings(1, 1, seed=0, shape=(64, 64), spacing_um=25.0).scans[0]
    >>> flipped = simulate.mirror(scan)
    >>> flipped.meta["handedness"], flipped.meta["simulation"]["mirrored"]
    ('mirrored', True)
    >>> bool(np.array_equal(flipped.heights, scan.heights[::-1], equal_nan=True))
    True
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"mirror() takes a Scan, got {type(scan).__name__}")
    ny, _ = scan.shape
    hand = scan.meta.get("handedness", "viewed")
    if hand not in ("viewed", "mirrored"):
        raise ValueError(
            f"meta['handedness'] is {hand!r}; mirror() needs 'viewed' or 'mirrored' "
            "(or no entry, read as 'viewed')"
        )
    # the flip itself (heights, mask, grids in meta, handedness) is Scan.mirrored's
    flipped = scan.replace(meta={**scan.meta, "handedness": hand}).mirrored()
    meta = dict(flipped.meta)
    if isinstance(meta.get("crop"), Mapping):
        crop_info = dict(meta["crop"])
        oy, ox = crop_info["offset_px"]
        crop_info["offset_px"] = (int(crop_info["source_shape"][0] - oy - ny), int(ox))
        meta["crop"] = crop_info
    truth = _truth(scan)
    if truth is not None:
        meta["simulation"] = flip_truth(truth, scan.shape, scan.spacing_um[0])
    return flipped.replace(meta=meta)


# ------------------------------------------------------------------------------ crop


def _window_share(valid: np.ndarray, size: int) -> np.ndarray:
    """Share of valid pixels of every ``size`` x ``size`` window, by its top-left corner."""
    c = np.zeros((valid.shape[0] + 1, valid.shape[1] + 1), dtype=np.int64)
    c[1:, 1:] = np.cumsum(np.cumsum(valid, axis=0), axis=1)
    s = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    return s / float(size * size)


def crop(
    scan: Scan,
    size_px: int,
    *,
    seed: int | None = None,
    centre: tuple[int, int] | None = None,
    min_valid: float = 0.8,
) -> Scan:
    """A square ``size_px`` window of a scan, mostly valid breech face (thin evidence).

    Parameters
    ----------
    scan : Scan
    size_px : int
        Side of the window in pixels (16 up to the scan's smaller side).
    seed : int, optional
        Picks the window at random (uniformly) among those whose valid share is at least
        ``min(min_valid, best share)``, from its own stream. None (and no ``centre``): the
        best such window, the one nearest to the centroid of the valid pixels on ties.
    centre : (int, int), optional
        Pixel ``(row, col)`` of the window centre (the window starts at ``centre -
        size_px // 2``); it must fit inside the scan. Overrides ``seed``.
    min_valid : float in (0, 1]
        Wanted share of valid pixels in a window picked by the function.

    Returns
    -------
    Scan
        ``heights = scan.heights[oy:oy + size_px, ox:ox + size_px]``, and
        ``meta["crop"] = {"offset_px": (oy, ox), "size_px": size_px, "source_shape":
        scan.shape, "valid_share": ...}``. A simulated scan's truth follows: the arrays
        are cut likewise, the centres move by ``-offset * spacing``, and ``shift_um``
        becomes the pose of the crop in its own frame, ``t + (c - c' - o_viewed) *
        spacing`` (``c``, ``c'`` the image centres of the source and the crop,
        ``o_viewed`` the offset in the viewed source), so `relative_pose` relates two
        crops of equal size exactly. ``firearm_id`` and ``casing_id`` stay.

    Examples
    --------
    >>> from balllink import simulate
    >>> scan = simulate.casings(1, 1, seed=0, shape=(96, 96), spacing_um=25.0).scans[0]
    >>> small = simulate.crop(scan, 24, seed=1)
    >>> small.shape, small.meta["simulation"]["firearm_id"]
    ((24, 24), 0)
    >>> oy, ox = small.meta["crop"]["offset_px"]
    >>> bool(np.array_equal(small.heights, scan.heights[oy:oy + 24, ox:ox + 24], equal_nan=True))
    True
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"crop() takes a Scan, got {type(scan).__name__}")
    ny, nx = scan.shape
    if isinstance(size_px, bool) or not isinstance(size_px, int | np.integer):
        raise ValueError(f"size_px must be an integer number of pixels, got {size_px!r}")
    size = int(size_px)
    if not 16 <= size <= min(ny, nx):
        raise ValueError(
            f"size_px={size} does not fit: use 16 to {min(ny, nx)} for a {ny} x {nx} scan"
        )
    if not 0.0 < float(min_valid) <= 1.0:
        raise ValueError(f"min_valid must lie in (0, 1], got {min_valid!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    share = _window_share(scan.mask, size)
    if centre is not None:
        oy, ox = (int(v) - size // 2 for v in centre)
        if not (0 <= oy <= ny - size and 0 <= ox <= nx - size):
            raise ValueError(
                f"a {size}-pixel window centred at {tuple(centre)} leaves the {ny} x {nx} "
                f"scan; centre rows and columns must lie in [{size // 2}, {ny - size + size // 2}]"
            )
    else:
        best = float(share.max())
        if best <= 0.0:
            raise ValueError(f"{scan.name} has no valid pixels to crop")
        ok = share >= min(float(min_valid), best) - 1e-12
        rows, cols = np.nonzero(ok)
        if seed is None:
            top = share[rows, cols] >= share[ok].max() - 1e-12
            rows, cols = rows[top], cols[top]
            vy, vx = np.nonzero(scan.mask)
            half = (size - 1) / 2.0
            k = int(np.argmin(np.hypot(rows + half - vy.mean(), cols + half - vx.mean())))
        else:
            k = int(stream(seed, 0, 0, STREAM_CROP).integers(rows.size))
        oy, ox = int(rows[k]), int(cols[k])
    window = (slice(oy, oy + size), slice(ox, ox + size))
    meta = dict(scan.meta)
    meta["crop"] = {
        "offset_px": (oy, ox),
        "size_px": size,
        "source_shape": (ny, nx),
        "valid_share": float(share[oy, ox]),
    }
    truth = _truth(scan)
    if truth is not None:
        meta["simulation"] = _crop_truth(truth, window, scan.shape, scan.spacing_um[0])
    return scan.replace(
        heights=scan.heights[window], mask=np.ascontiguousarray(scan.mask[window]), meta=meta
    )


def _crop_truth(
    info: dict[str, Any], window: tuple[slice, slice], shape: tuple[int, int], sp: float
) -> dict[str, Any]:
    out = dict(info)
    oy, ox = window[0].start, window[1].start
    size = window[0].stop - oy
    for key, value in info.items():
        if isinstance(value, np.ndarray) and value.shape == shape:
            part = np.ascontiguousarray(value[window])
            part.setflags(write=False)
            out[key] = part
        elif key.endswith("_center_um"):
            out[key] = (float(value[0]) - oy * sp, float(value[1]) - ox * sp)
    if "shift_um" in info:
        oy_viewed = shape[0] - oy - size if info.get("mirrored", False) else oy
        c = (np.array(shape, dtype=float) - 1.0) / 2.0
        c_crop = (size - 1.0) / 2.0
        t = np.asarray(info["shift_um"], dtype=float)
        t = t + (c - c_crop - np.array([oy_viewed, ox], dtype=float)) * sp
        out["shift_um"] = (float(t[0]), float(t[1]))
    return out


# ----------------------------------------------------------------------- annotations


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Low-frequency unit-RMS noise (about 8 waves across), to roughen outlines."""
    coarse = ndi.gaussian_filter(rng.standard_normal((12, 12)), 1.5, mode="wrap")
    field = ndi.zoom(coarse, (shape[0] / 12.0, shape[1] / 12.0), order=1, mode="nearest")
    field = field[: shape[0], : shape[1]]
    field = np.pad(field, ((0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])), "edge")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def annotations(scan: Scan, *, seed: int, n: int = 3) -> dict[str, np.ndarray]:
    """Annotation masks like those analysts draw in FiX3P (for ``write_scan(annotations=)``).

    Parameters
    ----------
    scan : Scan
        The scan to annotate; the masks lie on its usable pixels (``scan.mask``).
    seed : int >= 0
        Everything (which names, sizes, places) comes from this seed.
    n : int in [1, 4]
        Number of annotations, a seeded choice among `ANNOTATION_NAMES`.

    Returns
    -------
    dict of str to ndarray of bool
        ``{name: mask}`` in the order of `ANNOTATION_NAMES`, masks of ``scan.shape``,
        pairwise disjoint (one colour per pixel in a FiX3P mask), each covering a share of
        the usable pixels drawn uniformly from its range (whole pixels):

        - ``"break-off"`` (1-6 %): a blob on the edge of the firing-pin hole (the truth's
          ``hole_center_um``, else the centroid of the usable pixels);
        - ``"no striae"`` (2-10 %): a blob anywhere on the breech face;
        - ``"left groove"`` (2-10 %): a straight band within 20° of vertical, through the
          left quarter of the breech face;
        - ``"firing pin drag"`` (1-5 %): a band running outwards from the hole in one
          direction.

    Examples
    --------
    >>> from balllink import simulate
    >>> scan = simulate.casings(1, 1, seed=0, shape=(96, 96), spacing_um=25.0).scans[0]
    >>> masks = simulate.annotations(scan, seed=3, n=2)
    >>> len(masks), all(0.01 <= m.sum() / scan.n_valid <= 0.1 for m in masks.values())
    (2, True)
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"annotations() takes a Scan, got {type(scan).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"n must be an integer in [1, {len(ANNOTATION_NAMES)}], got {n!r}")
    if not 1 <= n <= len(ANNOTATION_NAMES):
        raise ValueError(f"n must be an integer in [1, {len(ANNOTATION_NAMES)}], got {n!r}")
    valid = scan.mask
    n_valid = int(valid.sum())
    if n_valid < 100 * n:
        raise ValueError(
            f"{scan.name} has {n_valid} usable pixels; annotations need at least {100 * n}"
        )
    rng = stream(seed, 0, 0, STREAM_ANNOTATE)
    chosen = sorted(rng.choice(len(ANNOTATION_NAMES), size=n, replace=False).tolist())
    ny, nx = scan.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    vy, vx = np.nonzero(valid)
    truth = scan.meta.get("simulation")
    if isinstance(truth, Mapping) and "hole_center_um" in truth:
        hy, hx = (v / s for v, s in zip(truth["hole_center_um"], scan.spacing_um, strict=True))
    else:
        hy, hx = float(vy.mean()), float(vx.mean())
    free = valid.copy()
    out: dict[str, np.ndarray] = {}
    for k in chosen:
        name = ANNOTATION_NAMES[k]
        share = rng.uniform(*_ANNOTATION_SHARES[name])
        u = rng.random(4)
        rough = _smooth_noise(rng, scan.shape)
        phi = math.pi * u[0]
        if name == "break-off":  # the usable pixel nearest the hole centre, then a blob
            j = int(np.argmin(np.hypot(vy - hy, vx - hx)))
            score = _blob(yy - vy[j], xx - vx[j], phi, 1.0 + u[1])
        elif name == "no striae":
            j = int(u[2] * vy.size)
            score = _blob(yy - vy[j], xx - vx[j], phi, 1.0 + u[1])
        elif name == "left groove":  # a band within 20° of vertical, through the left quarter
            x0 = float(np.quantile(vx, 0.1 + 0.15 * u[2]))
            tilt = math.radians(40.0 * (u[1] - 0.5))
            score = np.abs((xx - x0) * math.cos(tilt) - (yy - vy.mean()) * math.sin(tilt))
        else:  # firing pin drag: a band from the hole outwards, through a rim pixel
            fy, fx = np.nonzero(free)
            dist = np.hypot(fy - hy, fx - hx)
            rim = np.flatnonzero(dist <= dist.min() + 3.0)
            j = int(rim[int(u[2] * rim.size)])
            phi = math.atan2(hy - fy[j], fx[j] - hx)
            along = (xx - hx) * math.cos(phi) - (yy - hy) * math.sin(phi)
            across = (xx - hx) * math.sin(phi) + (yy - hy) * math.cos(phi)
            score = np.abs(across) + np.where(along < 0, 4.0 * np.abs(along), 0.0)
        scale = float(np.sqrt(share * n_valid))
        score = score + 0.15 * scale * rough
        take = max(1, round(share * n_valid))
        idx = np.flatnonzero(free)
        if idx.size <= take:
            raise ValueError(f"{scan.name} is too small for {n} annotations")
        pick = idx[np.argpartition(score.ravel()[idx], take - 1)[:take]]
        mask = np.zeros(scan.shape, dtype=bool)
        mask.ravel()[pick] = True
        free.ravel()[pick] = False
        out[name] = mask
    return out


def _blob(dy: np.ndarray, dx: np.ndarray, phi: float, elongation: float) -> np.ndarray:
    """Elliptical distance (long axis along ``phi``, counter-clockwise as displayed)."""
    u = dx * math.cos(phi) - dy * math.sin(phi)
    v = dx * math.sin(phi) + dy * math.cos(phi)
    return np.hypot(u / elongation, v)
