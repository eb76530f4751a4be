"""Annotation masks like those analysts draw in FiX3P, for simulated scans."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

from .._scan import Scan
from ._streams import STREAM_ANNOTATE, stream

__all__ = ["ANNOTATION_NAMES", "annotations"]

#: Annotation names as written by FiX3P / x3ptools (``annotations``), with the range of
#: the share of the usable breech face that each covers.
ANNOTATION_NAMES = ("break-off", "no striae", "left groove", "firing pin drag")
_ANNOTATION_SHARES = {
    "break-off": (0.01, 0.06),
    "no striae": (0.02, 0.10),
    "left groove": (0.02, 0.10),
    "firing pin drag": (0.01, 0.05),
}


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
