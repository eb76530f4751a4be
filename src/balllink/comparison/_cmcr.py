"""The cmcR-faithful method (``CMCConfig.cmcr()``): a re-implementation of the R package
cmcR 0.1.11, ``comparison_allTogether`` over a fixed rotation window, down to its cell
division (CImg ``imsplit``), its nearest-neighbour CImg rotation, its zero-filled FFT
cross-correlation and its pairwise-complete correlation at the chosen offset; then
``decision_CMC`` and ``decision_combineDirections`` (`._consensus`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft

from .. import _kernels as K
from .._scan import Scan
from .._threads import threads_allowed
from ._config import CMCConfig
from ._consensus import Decision, combine_cmcr, combined_count, decide
from ._result import CellSearch, Comparison, DirectionResult, cells_table

__all__ = ["compare_cmcr", "split_bounds"]

_WORKERS = 2  # scipy.fft threads, at most (see `balllink._threads`)


def split_bounds(size: int, nb: int) -> list[tuple[int, int]]:
    """CImg ``get_split(axis, nb)`` (imager ``imsplit``): inclusive 0-based bounds.

    Examples
    --------
    >>> split_bounds(10, 3)
    [(0, 3), (4, 6), (7, 9)]
    """
    if nb >= size:
        return [(p, p) for p in range(size)]
    bounds = []
    err = size
    start = 0
    for p in range(size):
        err -= nb
        if err <= 0:
            bounds.append((start, p))
            err += size
            start = p + 1
    return bounds


def _round2(x: float) -> int:
    """MATLAB-style rounding (half away from zero), cmcR's ``round2(x, 0)``."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _pad_region_cmcr(sub, lo_c, hi_c, lo_r, hi_r, ny, nx):
    # cmcR extractCellbyCornerLocs, written in R orientation (R rows = our columns): pad
    # R rows (our columns) first, then R columns (our rows), with NA, to a square.
    nr, nc = sub.shape
    if nc < max(nr, nc):  # R: nrow < max(dim) -> pad R rows (our columns)
        k = nr - nc
        pad = np.full((nr, k), np.nan, np.float32)
        if lo_c == 0:
            sub = np.concatenate([pad, sub], axis=1)
        if hi_c == nx - 1:
            sub = np.concatenate([sub, pad], axis=1)
    nr, nc = sub.shape
    if nr < max(nr, nc):
        k = nc - nr
        pad = np.full((k, nc), np.nan, np.float32)
        if lo_r == 0:
            sub = np.concatenate([pad, sub], axis=0)
        if hi_r == ny - 1:
            sub = np.concatenate([sub, pad], axis=0)
    return sub


@functools.lru_cache(maxsize=4096)
def _cmcr_offsets(m: int, n: int) -> np.ndarray:
    """Cell offsets p (cell top-left in the region) of cmcR's ``filterViaFFT`` output.

    cmcR pads cell (m) and region (n) to L = m + n - 1, takes ``ifft(fft(A) conj(fft(B)))``,
    ``fftshift``s it, ``circshift``s by ``round2((n - m) / 2)`` and keeps ``n`` entries
    from ``round2(m / 2)``: entry q is the zero-filled correlation at offset ``p[q]``.
    """
    L = m + n - 1
    h = -(-L // 2)
    s = _round2((n - m) / 2)
    half_m = _round2(m / 2)
    q = np.arange(n)
    k = (q + half_m - 1 - s + h) % L
    p = (-k) % L
    p = np.where(p > n - 1, p - L, p)
    p.setflags(write=False)
    return p


def _cmcr_nfft_needed(m: int, n: int) -> int:
    """Smallest circular CCF length that holds cmcR's offsets of (m, n) without aliasing."""
    p = _cmcr_offsets(m, n)
    return int(max(n - p.min(), p.max() + m, n))


@functools.lru_cache(maxsize=4096)
def _cmcr_resp_index(m: int, n: int, nfft: int) -> np.ndarray:
    """Index into our circular CCF (``ifft(F(cell) conj(F(region)))``, length ``nfft``)
    giving cmcR's ``filterViaFFT`` output: offset p sits at ``(-p) mod nfft``."""
    out = (-_cmcr_offsets(m, n)) % nfft
    out.setflags(write=False)
    return out


def _cmcr_corr_window(m: int, n: int, d: int) -> np.ndarray:
    """Region indices (0-based, -1 = outside) matched to the cell's rows at cmcR's peak ``d``.

    This is the offset at which the zero-filled CCF peaked (the inverse of
    :func:`_cmcr_resp_index`); cmcR 0.1.11's pairwise-complete correlation is taken there
    (checked against its published counts on Fadul: an older ``calcRawCorr`` cropped 2-3
    pixels off this alignment and does not reproduce them).
    """
    L = m + n - 1
    h = -(-L // 2)
    s = _round2((n - m) / 2)
    half_m = _round2(m / 2)
    k = (d + n // 2 + half_m - 1 - s + h) % L
    p = (-k) % L
    if p > n - 1:
        p -= L
    idx = np.arange(p, p + m, dtype=np.int64)
    idx[(idx < 0) | (idx >= n)] = -1
    return idx


def _standardize(x: np.ndarray) -> np.ndarray:
    """(x - mean) / sd over the finite values (R's ``sd``: n - 1), float32, NaN kept."""
    v = x[np.isfinite(x)]
    if v.size < 2:
        return np.full(x.shape, np.nan, np.float32)
    mu = v.mean(dtype=np.float64)
    sd = v.std(ddof=1, dtype=np.float64)
    if not sd > 0:
        return np.full(x.shape, np.nan, np.float32)
    return ((x - mu) / sd).astype(np.float32)


@dataclass
class _CmcrCells:
    """Cells of a reference scan as cmcR cuts them (full grid, CImg imsplit)."""

    boxes: list[tuple[int, int, int, int]]  # r0, r1, c0, c1 inclusive
    grid_rc: list[tuple[int, int]]
    missing: np.ndarray
    std: list[np.ndarray]  # standardized cells (NaN kept)


def _cmcr_cells(z: np.ndarray, grid: tuple[int, int]) -> _CmcrCells:
    ny, nx = z.shape
    rb = split_bounds(ny, grid[0])
    cb = split_bounds(nx, grid[1])
    boxes, rc, miss, std = [], [], [], []
    for i, (r0, r1) in enumerate(rb):
        for j, (c0, c1) in enumerate(cb):
            cell = z[r0 : r1 + 1, c0 : c1 + 1]
            boxes.append((r0, r1, c0, c1))
            rc.append((i, j))
            miss.append(float(np.mean(~np.isfinite(cell))))
            std.append(_standardize(cell))
    return _CmcrCells(boxes, rc, np.asarray(miss), std)


def _cmcr_region_box(box, mult: float, ny: int, nx: int):
    # cmcR getMat2SplitIndices, 1-based then converted to 0-based inclusive
    r0, r1, c0, c1 = box
    out = []
    for lo, hi, dim in ((r0, r1, ny), (c0, c1, nx)):
        center = ((lo + 1) + (hi + 1)) / 2
        side = hi - lo + 1
        a = math.floor(center - mult * side / 2)
        b = math.ceil(center + mult * side / 2)
        a = 1 if a <= 0 else a
        b = 1 if b <= 0 else b
        b = min(b, dim)
        a = min(a, dim)
        out.append((a - 1, b - 1))
    return out  # [(row lo, row hi), (col lo, col hi)]


class CmcrDirection(NamedTuple):
    """One cmcR direction: the reference's cells and their search over every rotation."""

    cells: _CmcrCells
    search: CellSearch


def _cmcr_direction(
    ref: np.ndarray, tgt: np.ndarray, cfg: CMCConfig,
    progress: Callable[[int, int], None] | None = None,
) -> CmcrDirection:  # fmt: skip
    """All rotations of one cmcR direction: per-(theta, cell) dy, dx, corr, present.

    Everything follows cmcR's ``comparison_allTogether``; ``dx`` is along columns, ``dy``
    along rows (cmcR's x/y are swapped, as it treats matrix rows as image x; the decision
    rules use one threshold for both, so the counts do not depend on it).
    """
    cells = _cmcr_cells(ref, cfg.grid)
    ny, nx = tgt.shape
    mult = math.floor(math.sqrt(cfg.region_multiplier**2))
    thetas = cfg.thetas()
    n_cells = len(cells.boxes)
    dx = np.zeros((thetas.size, n_cells))
    dy = np.zeros((thetas.size, n_cells))
    corr = np.full((thetas.size, n_cells), np.nan)
    present = np.zeros((thetas.size, n_cells), dtype=bool)
    keep_cells = [k for k in range(n_cells) if cells.missing[k] <= cfg.max_missing]
    if not keep_cells:
        return CmcrDirection(cells, CellSearch(thetas, dy=dy, dx=dx, corr=corr, present=present))
    rboxes = [_cmcr_region_box(cells.boxes[k], mult, ny, nx) for k in range(n_cells)]
    need = 2
    for k in keep_cells:
        (a, b), (c, d) = rboxes[k]
        n_sq = max(b - a + 1, d - c + 1)
        for m in cells.std[k].shape:
            need = max(need, _cmcr_nfft_needed(m, n_sq))
    nfft = sfft.next_fast_len(need, real=True)
    # cell spectra (standardized, NA -> 0), once per direction
    cstack = np.zeros((len(keep_cells), nfft, nfft), np.float32)
    for i, k in enumerate(keep_cells):
        c = np.nan_to_num(cells.std[k], nan=0.0)
        cstack[i, : c.shape[0], : c.shape[1]] = c
    cspec = sfft.rfft2(cstack, workers=threads_allowed(_WORKERS))
    del cstack
    cy, cx = ny // 2, nx // 2
    nk = len(keep_cells)
    # region geometry (fixed for the direction): where cmcR's NA padding puts the cut-out
    geom = np.zeros((nk, 8), np.int64)
    for i, k in enumerate(keep_cells):
        (a, b), (c, d) = rboxes[k]
        if not (c < d and a < b):
            continue
        ones = _pad_region_cmcr(np.ones((b - a + 1, d - c + 1), np.float32), c, d, a, b, ny, nx)
        rr, cc = np.nonzero(np.isfinite(ones))
        geom[i] = (a, b, c, d, rr.min(), cc.min(), ones.shape[0], ones.shape[1])
    m_rc = np.array([cells.std[k].shape for k in keep_cells], np.int64)
    n_rc = geom[:, 6:8]
    hmax, wmax = int(m_rc[:, 0].max()), int(m_rc[:, 1].max())
    nmax = max(1, int(n_rc.max()))
    cell_st = np.full((nk, hmax, wmax), np.nan, np.float32)
    for i, k in enumerate(keep_cells):
        cell_st[i, : m_rc[i, 0], : m_rc[i, 1]] = cells.std[k]
    ri = np.zeros((nk, nmax), np.int64)
    ci = np.zeros((nk, nmax), np.int64)
    for i in range(nk):
        if n_rc[i, 0] > 0:
            ri[i, : n_rc[i, 0]] = _cmcr_resp_index(int(m_rc[i, 0]), int(n_rc[i, 0]), nfft)
            ci[i, : n_rc[i, 1]] = _cmcr_resp_index(int(m_rc[i, 1]), int(n_rc[i, 1]), nfft)
    rbuf = np.zeros((nk, nfft, nfft), np.float32)  # zero outside each region
    rnan = np.full((nk, nmax, nmax), np.nan, np.float32)
    keep_arr = np.asarray(keep_cells)
    for t, theta in enumerate(thetas):
        rot = K.rotate_nearest(tgt, float(theta), cy, cx)
        used = np.flatnonzero(K.cmcr_regions(rot, geom, cfg.max_missing, rbuf, rnan))
        if used.size == 0:
            continue
        every = used.size == nk
        rspec = sfft.rfft2(rbuf if every else rbuf[used], workers=threads_allowed(_WORKERS))
        np.conjugate(rspec, out=rspec)
        rspec *= cspec if every else cspec[used]
        ccf = sfft.irfft2(rspec, s=(nfft, nfft), workers=threads_allowed(_WORKERS))
        del rspec
        # first maximum in row-major order = R's column-major order on its transposed view
        q_r, q_c = K.gathered_argmax(ccf, ri[used], ci[used], n_rc[used, 0], n_rc[used, 1])
        d_r = q_r - n_rc[used, 0] // 2
        d_c = q_c - n_rc[used, 1] // 2
        ks = keep_arr[used]
        dy[t, ks] = d_r
        dx[t, ks] = d_c
        present[t, ks] = True
        # cmcR's pairwise-complete correlation at the peak offset
        ridx = np.full((used.size, 1, hmax), -1, np.int64)
        cidx = np.full((used.size, 1, wmax), -1, np.int64)
        for j, i in enumerate(used):
            m_r, m_c = m_rc[i]
            ridx[j, 0, :m_r] = _cmcr_corr_window(int(m_r), int(n_rc[i, 0]), int(d_r[j]))
            cidx[j, 0, :m_c] = _cmcr_corr_window(int(m_c), int(n_rc[i, 1]), int(d_c[j]))
        corr[t, ks] = K.index_corr(cell_st[used], rnan[used], ridx, cidx)
        if progress is not None:
            progress(t + 1, thetas.size)
    return CmcrDirection(cells, CellSearch(thetas, dy=dy, dx=dx, corr=corr, present=present))


class _Direction(NamedTuple):
    """One direction of the cmcR comparison, searched and decided."""

    cells: _CmcrCells
    search: CellSearch
    decision: Decision
    reference: Scan
    target: Scan


def compare_cmcr(a: Scan, b: Scan, cfg: CMCConfig, mirrored: bool = False) -> Comparison:
    """Both directions of the cmcR method, decided and combined into a `Comparison`."""
    za, zb = a.masked_heights(), b.masked_heights()
    sp = a.spacing_um[0]
    found: list[_Direction] = []
    pairs = ((za, zb), (zb, za))
    if threads_allowed(2) > 1:
        # the two directions are independent: the FFTs and the nogil kernels of one run
        # while the other direction's Python glue holds the GIL
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = [r.result() for r in [pool.submit(_cmcr_direction, *p, cfg) for p in pairs]]
    else:  # under a thread limit of one (a Dask worker's task): here, one after the other
        results = [_cmcr_direction(*p, cfg) for p in pairs]
    for (cells, search), (rs, ts) in zip(results, ((a, b), (b, a))):
        found.append(_Direction(cells, search, decide(search, cfg), rs, ts))
    first, second = found
    d1, d2 = first.decision, second.decision
    if cfg.method == "high" and cfg.combine == "cmcr":
        combined = combine_cmcr(
            d1, d2, first.search.thetas, first.search.corr, second.search.corr,
            cfg.rotation_threshold_deg,
        )  # fmt: skip
        count, s1, s2, theta = combined
    else:
        s1, s2 = (d.high if cfg.method == "high" else d.original for d in (d1, d2))
        count = combined_count(int(s1.sum()), int(s2.sum()), cfg.combine)
        theta = d1.theta_max
    tables, dirs = [], []
    for k, (direction, cong) in enumerate(zip(found, (s1, s2))):
        cells, search, dec = direction.cells, direction.search, direction.decision
        centers = np.array(
            [((r0 + r1) / 2 * sp, (c0 + c1) / 2 * sp) for r0, r1, c0, c1 in cells.boxes]
        )
        rc = np.array(cells.grid_rc)
        tables.append(
            cells_table(k, rc[:, 0], rc[:, 1], centers, search, cong, 1.0 - cells.missing)
        )
        dirs.append(
            DirectionResult(
                direction.reference.name,
                direction.target.name,
                int(dec.original.sum()),
                int(dec.high.sum()),
                bool(dec.high_passed),
                float(dec.theta_max),
                int(search.present.any(axis=0).sum()),
                tables[-1],
            )
        )
    cells_all = np.concatenate(tables)
    reason = ""
    if dirs[0].n_cells == 0 or dirs[1].n_cells == 0:
        reason = "too few valid cells: a scan has no cell with enough valid pixels"
    rot, trans = math.nan, (math.nan, math.nan)
    if not math.isnan(theta):
        rot = (-theta) % 360.0
        if s1.any():
            ny_a, nx_a = za.shape
            ny_b, nx_b = zb.shape
            dyv = np.median(first.search.dy[s1]) + ny_b // 2 - (ny_a - 1) / 2
            dxv = np.median(first.search.dx[s1]) + nx_b // 2 - (nx_a - 1) / 2
            trans = (float(dyv * sp), float(dxv * sp))
    score = float(count)
    return Comparison(
        int(count),
        score,
        rot,
        trans,
        score >= cfg.lead_threshold,
        tuple(dirs),
        cells_all,
        reason,
        cfg,
        raw_score=float(count),
        mirrored=mirrored,
    )
