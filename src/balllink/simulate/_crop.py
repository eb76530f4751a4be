"""Small windows of simulated scans (thin evidence): `crop` and the truth it carries."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._scan import Scan
from ._streams import STREAM_CROP, stream
from ._truth import scan_truth

__all__ = ["crop"]


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
    truth = scan_truth(scan)
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
