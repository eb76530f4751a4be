"""Breech-face cuts of simulated exports: which pixels of a firing's surface are kept.

A `Cut` is an elliptical outline minus a circular firing-pin hole and, optionally, a missing
sector. `annulus_cut` is the default geometry of `casings`; `draw_cut` draws a varied cut
like real exports (``geometry="varied"``, `cut_geometries`). The marks a casing carries are
made in `balllink.simulate._generator` and never change here.

Angles of cut outlines (ellipse axis, missing sectors) are degrees counter-clockwise as
displayed (rows down) from the +x (column) direction, about the outline centre, in the
stored (file) frame. Every frame-dependent truth entry (centres, angles, masks, crop
offsets) describes the stored array; only ``rotation_deg`` and ``shift_um`` describe the
casing as viewed (see `mirror`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CUT_KINDS", "Cut", "annulus_cut", "draw_cut"]

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

_NOMINAL_RADIUS = 0.40  # varied outline: mean radius / field side, before the ±15 %
_BOUNDARY_POINTS = 1024


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
