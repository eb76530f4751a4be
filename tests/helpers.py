"""Helpers shared by several test modules (imported as a plain module from tests/)."""

from __future__ import annotations

import io
import json

import numpy as np
from scipy import ndimage

from balllink._files import jsonable


def rotate_scan(scan, deg, shift_px=(0.0, 0.0)):
    """``scan`` rotated by ``deg`` (grid grown to fit) and shifted, NaN-aware (order 1)."""
    z = scan.masked_heights()
    ok = np.isfinite(z)
    zr = ndimage.shift(ndimage.rotate(np.where(ok, z, 0), deg, reshape=True, order=1), shift_px)
    okr = ndimage.shift(ndimage.rotate(ok.astype(float), deg, reshape=True, order=1), shift_px)
    zr = np.where(okr > 0.99, zr / np.maximum(okr, 1e-6), np.nan)
    return scan.replace(heights=zr.astype(np.float32), mask=None)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical: same dtype, shape and bytes (NaN included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def finite_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the points finite in both (at least 100 of them)."""
    m = np.isfinite(a) & np.isfinite(b)
    assert m.sum() > 100
    return float(np.corrcoef(a[m], b[m])[0, 1])


def legacy_store_file(path, scan, meta=None) -> None:
    """``scan`` written exactly as the first database store layout wrote it
    ("balllink-prepared-scan-1"), with ``meta`` (default: the scan's own) as its JSON."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        format=np.array("balllink-prepared-scan-1"),
        heights=scan.heights,
        mask=np.packbits(scan.mask),
        shape=np.asarray(scan.shape, dtype=np.int64),
        spacing_um=np.asarray(scan.spacing_um, dtype=np.float64),
        meta=np.array(json.dumps(jsonable(scan.meta if meta is None else meta))),
        source=np.array(scan.source or ""),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def labelled_x3p_folder(folder, sims):
    """Write simulated casings as X3P files ``g<firearm>-c<casing>.x3p`` with a
    ``truth.csv`` (``file,firearm``, firearm ``gun<id>``); returns the truth path."""
    import csv

    import balllink as bl

    with open(folder / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "firearm"])
        for scan, row in zip(sims.scans, sims.truth):
            name = f"g{row['firearm_id']}-c{row['casing_id']}.x3p"
            bl.write_scan(scan, folder / name)
            w.writerow([name, f"gun{row['firearm_id']}"])
    return folder / "truth.csv"
