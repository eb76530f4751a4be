"""Argument checks of the simulator: each error names the argument and what to pass."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "GEOMETRIES",
    "check_counts",
    "check_geometry",
    "check_seed",
    "check_shape",
    "check_share",
    "check_spacing",
]

#: Breech-face geometries of `casings`: ``"annulus"`` (default: a circle minus a nearly
#: centred circle) and ``"varied"`` (a new cut per casing, kinds `CUT_KINDS`).
GEOMETRIES = ("annulus", "varied")


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_spacing(spacing: Any, default: float) -> float:
    if spacing is None:
        return float(default)
    try:
        values = np.atleast_1d(np.asarray(spacing, dtype=float)).ravel()
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing_um must be a positive number (µm per pixel), got {spacing!r}")
    if values.size == 2 and values[0] != values[1]:
        raise ValueError(
            f"spacing_um={spacing!r}: the simulator makes square pixels; give one number"
        )
    return float(values[0])


def check_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
        ok = ny >= 16 and nx >= 16 and (ny, nx) == tuple(shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be two integers >= 16 (rows, columns), got {shape!r}")
    return ny, nx


def check_geometry(geometry: Any, raw: bool) -> str:
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if raw and geometry != "annulus":
        raise ValueError(
            f"geometry={geometry!r} makes already-cut (prepared) scans; use raw=False, or "
            "geometry='annulus' for raw scans"
        )
    return str(geometry)


def check_share(mirrored: Any) -> float:
    try:
        share = float(mirrored)
    except (TypeError, ValueError):
        share = math.nan
    if isinstance(mirrored, bool) or not 0.0 <= share <= 1.0:
        raise ValueError(
            f"mirrored must be the share of casings exported mirrored, in [0, 1], got {mirrored!r}"
        )
    return share


def check_counts(n_firearms: Any, per_firearm: Any) -> tuple[int, int]:
    for name, v in (("n_firearms", n_firearms), ("per_firearm", per_firearm)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(n_firearms), int(per_firearm)
