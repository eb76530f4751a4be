"""Helpers shared by several test modules (imported as a plain module from tests/)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def rotate_scan(scan, deg, shift_px=(0.0, 0.0)):
    """``scan`` rotated by ``deg`` (grid grown to fit) and shifted, NaN-aware (order 1)."""
    z = scan.masked_heights()
    ok = np.isfinite(z)
    zr = ndimage.shift(ndimage.rotate(np.where(ok, z, 0), deg, reshape=True, order=1), shift_px)
    okr = ndimage.shift(ndimage.rotate(ok.astype(float), deg, reshape=True, order=1), shift_px)
    zr = np.where(okr > 0.99, zr / np.maximum(okr, 1e-6), np.nan)
    return scan.replace(heights=zr.astype(np.float32), mask=None)
