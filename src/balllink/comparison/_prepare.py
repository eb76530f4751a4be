"""Per-scan work of the default method, done once per scan object and configuration: the
cell-search grid and its cells, the coarse grid, the alignment template; and the mirror
image of a scan. Both are cached weakly per ``Scan`` object, so a scan compared many times
(a query, or a candidate of many queries) is prepared once."""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._grid import nan_block_mean
from .._scan import Scan
from ..align import AlignmentTemplate, prepare_alignment
from ..errors import PreprocessError
from ..preprocessing import bandpass
from ._config import CMCConfig

__all__ = ["CellGrid", "Prepared", "mirror_scan", "prepared"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Per-scan work of the default method, done once and reused by compare_many."""

    name: str
    spacing_um: float  # of the original scan
    z: np.ndarray  # cell-search grid (downsampled), NaN missing
    coarse: np.ndarray  # coarse grid (more downsampled), for the brute-force coarse search
    coarse_factor: int
    cells: np.ndarray  # (n, h, w) float32 cells of z (standardized), NaN missing
    boxes: np.ndarray  # (n, 4) r0, c0, row, col (grid index)
    valid_fraction: np.ndarray
    tpl: AlignmentTemplate | None = None  # None: too little surface to align at 50 µm


class CellGrid(NamedTuple):
    """The cells cut from a scan's valid bounding box, standardised, NaN where missing."""

    cells: np.ndarray  # (n, h, w) float32
    boxes: np.ndarray  # (n, 4) int64: top row, left column, grid row, grid column
    valid_fraction: np.ndarray  # (n,)


def cell_grid(z: np.ndarray, grid: tuple[int, int], max_missing: float) -> CellGrid:
    """The reference cells of the default method: the valid bounding box of ``z`` cut into
    ``grid`` cells; a cell more than ``max_missing`` missing, or flat, is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(40, 40))
    >>> z[:20, :20] = np.nan
    >>> g = cell_grid(z, (2, 2), 0.7)
    >>> g.cells.shape, g.boxes[:, 2:].tolist()
    ((3, 20, 20), [[0, 1], [1, 0], [1, 1]])
    """
    ok = np.isfinite(z)
    rows = np.flatnonzero(ok.any(axis=1))
    cols = np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return CellGrid(np.zeros((0, 1, 1), np.float32), np.zeros((0, 4), np.int64), np.zeros(0))
    r_lo, r_hi = rows[0], rows[-1] + 1
    c_lo, c_hi = cols[0], cols[-1] + 1
    h = max(2, (r_hi - r_lo) // grid[0])
    w = max(2, (c_hi - c_lo) // grid[1])
    cells, boxes, frac = [], [], []
    for i in range(grid[0]):
        for j in range(grid[1]):
            r0, c0 = r_lo + i * h, c_lo + j * w
            cell = z[r0 : r0 + h, c0 : c0 + w]
            if cell.shape != (h, w):
                continue
            f = float(np.isfinite(cell).mean())
            if 1.0 - f > max_missing:
                continue
            v = cell[np.isfinite(cell)]
            sd = v.std()
            if not sd > 0:
                continue
            cells.append(((cell - v.mean()) / sd).astype(np.float32))
            boxes.append((r0, c0, i, j))
            frac.append(f)
    if not cells:
        return CellGrid(np.zeros((0, h, w), np.float32), np.zeros((0, 4), np.int64), np.zeros(0))
    return CellGrid(np.stack(cells), np.asarray(boxes, np.int64), np.asarray(frac))


def prepare(scan: Scan, cfg: CMCConfig) -> Prepared:
    """The default method's per-scan work for ``scan`` (not cached: see `prepared`)."""
    z = scan.masked_heights()
    f = int(cfg.downsample)
    coarse_factor = 4 * f
    zc = nan_block_mean(z, coarse_factor)  # the brute-force coarse search keeps long waves
    if cfg.cell_highpass_um > 0 and scan.n_valid:
        z = bandpass(scan, short_um=None, long_um=cfg.cell_highpass_um).masked_heights()
    zd = nan_block_mean(z, f)
    grid = cell_grid(zd, cfg.grid, cfg.max_missing)
    try:
        tpl = prepare_alignment(scan)
    except PreprocessError as exc:
        log.debug("no alignment template for %s: %s", scan.name, exc)
        tpl = None
    return Prepared(
        scan.name, float(scan.spacing_um[0]), zd, zc, coarse_factor, grid.cells, grid.boxes,
        grid.valid_fraction, tpl,
    )  # fmt: skip


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def prepared(scan: Scan, config: CMCConfig | None = None) -> Prepared:
    """The default method's per-scan work (cells, coarse grid, alignment template) for
    ``scan`` under ``config`` (default `CMCConfig()`), cached per scan object (weakly:
    dropped with the scan) and configuration, so that a scan compared many times is
    prepared once. `compare` and `compare_many` call it; call it first to do the per-scan
    work apart (the benchmarks do).

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> from balllink.comparison import prepared
    >>> s = bl.Scan(np.random.default_rng(0).normal(size=(200, 200)), spacing_um=6.25)
    >>> p = prepared(s)
    >>> p.cells.shape, p is prepared(s)
    ((64, 12, 12), True)
    """
    cfg = config if config is not None else CMCConfig()
    key = (cfg.downsample, cfg.grid, cfg.max_missing, cfg.cell_highpass_um)
    with _LOCK:  # compare_many's threads share the cache; the work runs outside the lock
        hit = _PREPARED.setdefault(scan, {}).get(key)
    if hit is None:
        hit = prepare(scan, cfg)
        with _LOCK:
            hit = _PREPARED.setdefault(scan, {}).setdefault(key, hit)
    return hit


_MIRRORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mirror_scan(scan: Scan) -> Scan:
    """`Scan.mirrored` (rows reversed, grids in ``meta`` too, handedness swapped), cached
    per scan object so that a candidate compared with many queries is mirrored once.

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> from balllink.comparison import mirror_scan
    >>> s = bl.Scan(np.arange(6.0).reshape(3, 2), spacing_um=6.25, meta={"handedness": "viewed"})
    >>> m = mirror_scan(s)
    >>> m.heights[0].tolist(), m.meta["handedness"], mirror_scan(s) is m
    ([4.0, 5.0], 'mirrored', True)
    """
    with _LOCK:
        hit = _MIRRORS.get(scan)
    if hit is None:
        hit = scan.mirrored()
        with _LOCK:
            hit = _MIRRORS.setdefault(scan, hit)
    return hit
