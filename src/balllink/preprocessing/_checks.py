"""Input checks shared by the preprocessing steps: a scan with measured points, positive
numbers, and the name a message gives a scan."""

from __future__ import annotations

import math
from typing import Any

from .._scan import Scan
from ..errors import PreprocessError


def scan_name(scan: Scan) -> str:
    """The name a message gives ``scan``: its source file, else its name."""
    return scan.source or scan.name


def check_scan(scan: Any, step: str) -> Scan:
    """``scan`` itself when it is a `Scan` with measured points, else a `TypeError` or a
    `PreprocessError` naming ``step`` and the scan."""
    if not isinstance(scan, Scan):
        raise TypeError(f"{step}: expected a balllink.Scan, got {type(scan).__name__}")
    if scan.n_valid == 0:
        raise PreprocessError(f"{step}: scan {scan_name(scan)} has no measured (finite) points")
    return scan


def positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a finite positive float (or None when ``allow_none``), else a
    `ValueError` naming the parameter."""
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v
