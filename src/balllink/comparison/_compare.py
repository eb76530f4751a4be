"""Cell-based (CMC) comparison of two prepared scans (issue 4).

Two ways to compare, chosen by :class:`CMCConfig`:

* ``CMCConfig.cmcr()``: a faithful re-implementation of the R package cmcR 0.1.11
  (``comparison_allTogether`` over -30..30 degrees by 3, ``decision_CMC`` original and High
  CMC, ``decision_combineDirections``), down to its cell division (CImg ``imsplit``), its
  nearest-neighbour CImg rotation, its zero-filled FFT cross-correlation and its
  pairwise-complete correlation at the chosen offset.
* ``CMCConfig()`` (the default): full 360 degree search. A coarse global alignment (from
  :mod:`balllink.align`; a built-in brute-force masked NCC over coarse angles when it finds
  nothing) gives the pose; both scans are block-averaged to 12.5 µm, the reference's
  valid bounding box is cut into 8x8 cells (cells more than 70 % missing are dropped), and
  each cell is searched in the target warped by that pose over +-4 pixels (50 µm) with
  masked normalised cross-correlation (per-offset normalisation over jointly valid pixels).
  Before the cells are cut, both scans are high-passed at 200 µm (``cell_highpass_um``):
  a cell of ~420 µm holds only a few of the longer waves, which gave non-matching cells
  chance correlations; the fine individual marks carry the match. Congruent cells follow
  the High CMC rule in each direction (3 px, 0.40); the count sums both directions;
  ``raw_score`` = congruent share of the compared cells x their mean correlation, and
  ``score`` is its logistic calibration (centre 0.14, width 0.02, see ``_CAL_CENTER``);
  ``lead`` = score >= 0.5.
  The final pose is a least-squares rigid fit to the congruent cells of both directions.
  Measured on Fadul (benchmarks/eval_fadul.py): searching cells at the coarse angle only
  separates better than a +-2 degree window (fewer chance maxima for non-matches) and is
  three times cheaper, so the default rotation window is 0.

Pose convention (also :mod:`balllink.align`'s): ``rotation_deg`` in [0, 360) and
``translation_um = (dy, dx)`` say that scan ``b`` rotated counter-clockwise (as displayed
with row 0 on top, the sense of ``skimage.transform.rotate``) by ``rotation_deg`` about its
array centre, then moved by ``(dy, dx)`` micrometres (down, right), with both array centres
superposed, lands on scan ``a``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.fft as sfft

from .. import _kernels as K
from .._scan import HANDEDNESS, Scan
from ..errors import PreprocessError
from ..preprocess import MIN_AREA_MM2, _nan_block_mean, prepare_if_needed

__all__ = ["CMCConfig", "Comparison", "compare", "compare_many", "mirror_scan"]

log = logging.getLogger(__name__)

_WORKERS = max(1, min(2, os.cpu_count() or 1))

CELL_DTYPE = np.dtype(
    [
        ("direction", "i1"),  # 0: a cells searched in b, 1: b cells searched in a
        ("row", "i2"),
        ("col", "i2"),
        ("center_y_um", "f4"),
        ("center_x_um", "f4"),
        ("theta_deg", "f4"),
        ("dy_px", "f4"),
        ("dx_px", "f4"),
        ("corr", "f4"),
        ("congruent", "?"),
        ("valid_fraction", "f4"),
    ]
)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CMCConfig:
    """Every parameter of a CMC comparison.

    Parameters
    ----------
    grid : (int, int)
        Cells per column and per row cut from the reference scan.
    region_multiplier : float
        Side of the searched region in the target, as a multiple of the cell side.
    rotation_range : (float, float)
        Rotations searched (degrees). With ``search="window"`` the absolute range (cmcR:
        -30..30); with ``search="global"`` the half window around each coarse pose.
    rotation_step : float
        Rotation step (degrees).
    translation_threshold_px, rotation_threshold_deg, correlation_threshold : float
        Congruence thresholds: distance to the consensus translation (pixels of the
        compared grid, at ``spacing_um``), rotation, and minimum correlation.
    max_missing : float
        Cells (and regions) with a larger share of missing pixels are dropped.
    method : {"high", "original"}
        Decision rule: High CMC (Tong 2015) or the original rule (Song 2013).
    tau : int
        High CMC: rotations whose candidate count is at least ``max - tau`` are "high".
    combine : {"cmcr", "union", "min", "sum"}
        How two directions make one count: ``"cmcr"`` follows cmcR's
        ``decision_combineDirections`` exactly; ``"union"`` counts cells congruent in either
        direction (cell indices of a and b are distinct); ``"min"``/``"sum"`` of the counts.
    search : {"window", "global"}
        ``"window"``: the fixed rotation range only (cmcR). ``"global"``: full 360 degrees,
        a coarse alignment first, then the cell search around its best poses.
    ccf : {"cmcr", "masked"}
        ``"cmcr"``: zero-filled FFT cross-correlation, then the Pearson correlation of the
        overlap at its peak (cmcR). ``"masked"``: masked NCC at every offset.
    interpolation : {"nearest", "linear"}
        Rotation of the target.
    downsample : int
        Block-average both scans by this factor before the cell search (1 = none).
    coarse_candidates : int
        ``search="global"``: number of coarse poses refined.
    coarse_step_deg : float
        Step of the built-in brute-force coarse search (used until ``align`` lands).
    cell_highpass_um : float
        Default method only (0 = off): before the cells are cut, both scans are high-passed
        with this ISO 16610-61 Gaussian cutoff wavelength (µm, NaN-aware,
        :func:`balllink.bandpass`), so that the cell correlations are carried by the fine
        individual marks rather than by the few long waves a cell holds (long waves give
        non-matching cells chance correlations). ``CMCConfig.cmcr()`` leaves scans as given.
    lead_threshold : float
        ``score`` at or above which a pair is a lead.
    handedness : {"auto", "both", "same"}
        Mirror images. X3P does not pin down whether row 0 is the top or the bottom, so
        two exports of one casing can be mirror images of each other. ``"auto"``: when
        both scans' ``meta["handedness"]`` are known, compare ``b`` as it is (they agree)
        or mirrored (they differ); otherwise consider both: the coarse search runs for
        ``b`` and for its mirror image (``np.flipud``), the reflection with the better coarse
        score is kept and the cell search runs once. ``"both"``: always consider both, ignoring
        metadata. ``"same"``: never mirror (a collection known to be consistent).
        ``Comparison.mirrored`` says which was used. The window search (``search="window"``,
        the cmcR mode) only mirrors when the metadata say the two differ.
    min_area_mm2 : float
        Minimum evidence: a scan with less valid surface than this (mm²) cannot yield a
        lead (its ``score`` is 0, ``reason`` says why); default
        `balllink.preprocess.MIN_AREA_MM2`.
    min_cells : int
        Minimum evidence: fewer compared cells than this in either direction cannot yield
        a lead (``score`` 0, ``reason`` says why).
    """

    grid: tuple[int, int] = (8, 8)
    region_multiplier: float = 1.25
    rotation_range: tuple[float, float] = (0.0, 0.0)
    rotation_step: float = 2.0
    translation_threshold_px: float = 3.0
    rotation_threshold_deg: float = 6.0
    correlation_threshold: float = 0.40
    max_missing: float = 0.7
    method: str = "high"
    tau: int = 1
    combine: str = "sum"
    search: str = "global"
    ccf: str = "masked"
    interpolation: str = "linear"
    downsample: int = 2
    coarse_candidates: int = 1
    coarse_step_deg: float = 4.0
    cell_highpass_um: float = 200.0
    lead_threshold: float = 0.5
    handedness: str = "auto"
    min_area_mm2: float = MIN_AREA_MM2
    min_cells: int = 12

    def __post_init__(self) -> None:
        problems = []
        if len(self.grid) != 2 or min(self.grid) < 1:
            problems.append(f"grid must be two positive ints, got {self.grid!r}")
        if self.region_multiplier < 1:
            problems.append(f"region_multiplier must be >= 1, got {self.region_multiplier}")
        lo, hi = self.rotation_range
        if hi < lo or self.rotation_step <= 0:
            problems.append(
                f"rotation_range {self.rotation_range} / rotation_step {self.rotation_step} "
                "must be ordered and positive"
            )
        choices = {
            "method": ("high", "original"),
            "combine": ("cmcr", "union", "min", "sum"),
            "search": ("window", "global"),
            "ccf": ("cmcr", "masked"),
            "interpolation": ("nearest", "linear"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 <= self.max_missing <= 1:
            problems.append(f"max_missing must be in [0, 1], got {self.max_missing}")
        if int(self.downsample) != self.downsample or self.downsample < 1:
            problems.append(f"downsample must be a positive int, got {self.downsample}")
        if not self.cell_highpass_um >= 0:
            problems.append(f"cell_highpass_um must be >= 0 (0: off), got {self.cell_highpass_um}")
        if self.handedness not in ("auto", "both", "same"):
            problems.append(f"handedness must be 'auto', 'both' or 'same', got {self.handedness!r}")
        if not self.min_area_mm2 >= 0:
            problems.append(f"min_area_mm2 must be >= 0, got {self.min_area_mm2}")
        if int(self.min_cells) != self.min_cells or self.min_cells < 0:
            problems.append(f"min_cells must be an int >= 0, got {self.min_cells}")
        if self.combine == "cmcr" and self.method != "high":
            problems.append('combine="cmcr" needs method="high" (cmcR combines High CMCs)')
        if problems:
            raise ValueError("invalid CMCConfig: " + "; ".join(problems))

    @classmethod
    def cmcr(cls, **changes: Any) -> CMCConfig:
        """cmcR 0.1.11 defaults (its README): 8x8 cells, regions 3x the cell side,
        -30..30 degrees by 3, 20 px / 6 degrees / 0.5, > 85 % missing dropped, High CMC with
        tau = 1, both directions combined as ``decision_combineDirections``.

        Examples
        --------
        >>> CMCConfig.cmcr().rotation_range
        (-30.0, 30.0)
        """
        base = cls(
            grid=(8, 8),
            region_multiplier=3.0,
            rotation_range=(-30.0, 30.0),
            rotation_step=3.0,
            translation_threshold_px=20.0,
            rotation_threshold_deg=6.0,
            correlation_threshold=0.5,
            max_missing=0.85,
            method="high",
            tau=1,
            combine="cmcr",
            search="window",
            ccf="cmcr",
            interpolation="nearest",
            downsample=1,
            cell_highpass_um=0.0,
            lead_threshold=6.0,
            min_area_mm2=0.0,
            min_cells=0,
        )
        return replace(base, **changes)

    def thetas(self) -> np.ndarray:
        lo, hi = self.rotation_range
        n = math.floor((hi - lo) / self.rotation_step + 1e-9) + 1
        return lo + self.rotation_step * np.arange(n)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class DirectionResult:
    """One direction of a comparison: the cells of ``reference`` searched in ``target``."""

    reference: str
    target: str
    cmc_original: int
    cmc_high: int
    high_passed: bool
    theta_max: float  # High CMC modal rotation (NaN when failed), degrees
    n_cells: int  # cells compared (after the missing-data filter)
    cells: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`.

    Attributes
    ----------
    cmc_count : int
        Congruent matching cells, both directions combined (``config.combine``).
    score : float
        Continuous similarity, higher = more similar (cmcR mode: the count).
    rotation_deg : float
        Rotation of ``b`` relative to ``a`` in [0, 360) (see the module docstring), NaN
        when undetermined.
    translation_um : (float, float)
        ``(dy, dx)`` of ``b`` relative to ``a`` in micrometres (NaN when undetermined).
    lead : bool
        ``score >= config.lead_threshold``.
    directions : tuple of DirectionResult
        a-in-b and b-in-a.
    cells : ndarray
        Structured array (``CELL_DTYPE``), one row per compared cell and direction: grid
        row/col, cell centre in µm, best rotation, dy/dx (pixels), correlation, congruent,
        valid-pixel fraction.
    reason : str
        Empty, or why the count is 0 (too few valid cells, ...).
    config : CMCConfig
    raw_score : float
        The uncalibrated score: congruent share of the compared cells times their mean
        correlation (default method), or the count (cmcR mode).
    mirrored : bool
        True when ``b`` was compared as its mirror image (``np.flipud`` of its heights):
        the pose then places the mirrored ``b`` on ``a``. See `CMCConfig.handedness`.
    auto_prepared : (bool, bool)
        Whether ``a`` / ``b`` were not prepared and went through `balllink.preprocess`
        (the default chain) inside the comparison.
    """

    cmc_count: int
    score: float
    rotation_deg: float
    translation_um: tuple[float, float]
    lead: bool
    directions: tuple[DirectionResult, ...]
    cells: np.ndarray = field(repr=False)
    reason: str = ""
    config: CMCConfig = field(default_factory=CMCConfig, repr=False)
    raw_score: float = math.nan
    mirrored: bool = False
    auto_prepared: tuple[bool, bool] = (False, False)

    def to_pandas(self):
        """The ``cells`` table as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame.from_records(self.cells)


# --------------------------------------------------------------------------- helpers


def _split_bounds(size: int, nb: int) -> list[tuple[int, int]]:
    """CImg ``get_split(axis, nb)`` (imager ``imsplit``): inclusive 0-based bounds."""
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
    rb = _split_bounds(ny, grid[0])
    cb = _split_bounds(nx, grid[1])
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


def _cmcr_direction(ref: np.ndarray, tgt: np.ndarray, cfg: CMCConfig, progress=None):
    """All rotations of one cmcR direction: returns per-(theta, cell) dx, dy, corr, present.

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
        return thetas, cells, dx, dy, corr, present
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
    cspec = sfft.rfft2(cstack, workers=_WORKERS)
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
        rspec = sfft.rfft2(rbuf if every else rbuf[used], workers=_WORKERS)
        np.conjugate(rspec, out=rspec)
        rspec *= cspec if every else cspec[used]
        ccf = sfft.irfft2(rspec, s=(nfft, nfft), workers=_WORKERS)
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
    return thetas, cells, dx, dy, corr, present


# --------------------------------------------------------------------------- decisions


@dataclass
class _Decision:
    original: np.ndarray  # bool (n_theta, n_cells)
    high: np.ndarray  # bool (n_theta, n_cells)
    high_passed: bool
    theta_max: float  # NaN when High CMC failed or no mode


def _decide(thetas, dx, dy, corr, present, cfg: CMCConfig) -> _Decision:
    """cmcR ``decision_CMC`` (original and High CMC) and ``calcMaxCMCTheta`` for one direction."""
    t_xy = cfg.translation_threshold_px
    t_th = cfg.rotation_threshold_deg
    t_c = cfg.correlation_threshold
    thetas = np.asarray(thetas, dtype=np.float64)
    original = K.original_cmc(dx, dy, thetas, corr, present, t_xy, t_th, t_c)
    cand = K.high_cmc_candidates(dx, dy, corr, present, t_xy, t_c)
    high = np.zeros_like(cand)
    counts = cand.sum(axis=1)
    if counts.max(initial=0) == 0:
        return _Decision(original, high, False, math.nan)
    is_high = (counts > 0) & (counts >= counts.max() - cfg.tau)
    th_high = thetas[is_high]
    if th_high.max() - th_high.min() > t_th:
        return _Decision(original, high, False, math.nan)
    rows = cand & is_high[:, None]
    c = np.where(rows, corr, -np.inf)
    best = c.max(axis=0)
    high = rows & (c == best[None, :]) & np.isfinite(best)[None, :]
    # calcMaxCMCTheta(highCMC_thresh = 1, thetaThresh, "minDistance")
    n_per = high.sum(axis=1)
    th_present = n_per > 0
    if not th_present.any():
        return _Decision(original, high, True, math.nan)
    nmax = n_per.max()
    at_max = thetas[n_per == nmax]
    if np.any(np.diff(at_max) > t_th):
        return _Decision(original, high, True, math.nan)
    near = thetas[th_present & (n_per >= nmax - 1)]
    dist = np.array([np.min(np.abs(at_max - t)) for t in near])
    if np.all(dist.max() > t_th):
        return _Decision(original, high, True, math.nan)
    return _Decision(original, high, True, float(np.median(at_max)))


def _combine_cmcr(d1: _Decision, d2: _Decision, thetas, corr1, corr2, t_th: float):
    """cmcR ``decision_combineDirections`` (missingThetaDecision="fail", compareThetas=TRUE).

    Returns ``(count, congruent1, congruent2, theta)``: the combined count, the cells it
    counts in each direction (bool (n_theta, n_cells)), and the modal rotation.
    """
    n1 = int(d1.original.sum())
    n2 = int(d2.original.sum())
    fallback_first = n1 <= n2  # which.min: first on ties
    fallback = (
        min(n1, n2),
        d1.original if fallback_first else np.zeros_like(d1.original),
        np.zeros_like(d2.original) if fallback_first else d2.original,
        math.nan,
    )
    t1, t2 = d1.theta_max, d2.theta_max
    if math.isnan(t1) or math.isnan(t2):
        return fallback
    for d, t in ((d1, t1), (d2, t2)):
        th_orig = np.broadcast_to(np.asarray(thetas)[:, None], d.original.shape)[d.original]
        if th_orig.size == 0 or abs(t - np.median(th_orig)) > t_th:
            return fallback
    if (np.sign(t1) == np.sign(t2) and abs(t1 + t2) > t_th) or abs(abs(t1) - abs(t2)) > t_th:
        return fallback
    th = np.asarray(thetas)[:, None]
    s1 = d1.high & (np.abs(th - t1) <= t_th)
    s2 = d2.high & (np.abs(th - t2) <= t_th)
    # a cell index counted once, in the direction where its correlation is higher
    c1 = np.where(s1, corr1, -np.inf).max(axis=0)
    c2 = np.where(s2, corr2, -np.inf).max(axis=0)
    any1 = s1.any(axis=0)
    any2 = s2.any(axis=0)
    count = int(np.count_nonzero(any1 | any2))
    keep1 = any1 & (~any2 | (c1 >= c2))
    keep2 = any2 & (~any1 | (c2 >= c1))
    return count, s1 & keep1[None, :], s2 & keep2[None, :], t1


# --------------------------------------------------------------------------- default method


@dataclass
class _Prepared:
    """Per-scan work of the default method, done once and reused by compare_many."""

    name: str
    spacing_um: float  # of the original scan
    z: np.ndarray  # cell-search grid (downsampled), NaN missing
    coarse: np.ndarray  # coarse grid (more downsampled)
    coarse_factor: int
    cells: np.ndarray  # (n, h, w) float32 cells of z (standardized), NaN missing
    boxes: np.ndarray  # (n, 4) r0, c0, row, col (grid index)
    valid_fraction: np.ndarray
    tpl: Any = None  # align template when balllink.align is present


def _cell_grid(z: np.ndarray, grid: tuple[int, int], max_missing: float):
    ok = np.isfinite(z)
    rows = np.flatnonzero(ok.any(axis=1))
    cols = np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return (np.zeros((0, 1, 1), np.float32), np.zeros((0, 4), np.int64), np.zeros(0))
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
        return (np.zeros((0, h, w), np.float32), np.zeros((0, 4), np.int64), np.zeros(0))
    return np.stack(cells), np.asarray(boxes, np.int64), np.asarray(frac)


def _prepare(scan: Scan, cfg: CMCConfig) -> _Prepared:
    z = scan.masked_heights()
    f = int(cfg.downsample)
    coarse_factor = 4 * f
    zc = _nan_block_mean(z, coarse_factor)  # the built-in coarse search keeps the long waves
    if cfg.cell_highpass_um > 0 and scan.n_valid:
        from ..preprocess import bandpass

        z = bandpass(scan, short_um=None, long_um=cfg.cell_highpass_um).masked_heights()
    zd = _nan_block_mean(z, f)
    cells, boxes, frac = _cell_grid(zd, cfg.grid, cfg.max_missing)
    tpl = None
    align = _align_module()
    if align is not None and hasattr(align, "prepare_alignment"):
        try:
            tpl = align.prepare_alignment(scan)
        except (NotImplementedError, PreprocessError) as exc:
            log.debug("no alignment template for %s: %s", scan.name, exc)
            tpl = None
    return _Prepared(
        scan.name, float(scan.spacing_um[0]), zd, zc, coarse_factor, cells, boxes, frac, tpl
    )


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepared(scan: Scan, cfg: CMCConfig) -> _Prepared:
    """:func:`_prepare` cached per scan object (weakly) and configuration, so that a scan
    compared many times (a query, or a candidate of many queries) is prepared once."""
    per_scan = _PREPARED.setdefault(scan, {})
    key = (cfg.downsample, cfg.grid, cfg.max_missing, cfg.cell_highpass_um)
    if key not in per_scan:
        per_scan[key] = _prepare(scan, cfg)
    return per_scan[key]


def _align_module():
    try:
        from .. import align
    except ImportError:
        return None
    return align


# ---- coarse search (brute force, used while balllink.align is not available)


def _masked_ncc_fft(a: np.ndarray, bs: np.ndarray, max_shift: int, min_frac: float = 0.3):
    """Masked NCC of ``a`` with each image of the stack ``bs`` over shifts up to ``max_shift``.

    Padfield's method: windowed sums of values, squares and valid counts by FFT, so each
    shift is normalised over the jointly valid pixels. Returns (k, 2s+1, 2s+1) float64
    where entry ``[k, s + u, s + v]`` compares ``a[y, x]`` with ``bs[k][y - u, x - v]``.
    """
    ny, nx = a.shape
    sy, sx = ny + max_shift, nx + max_shift
    shape = (sfft.next_fast_len(sy, real=True), sfft.next_fast_len(sx, real=True))
    ma = np.isfinite(a)
    a0 = np.where(ma, a, 0.0)
    mb = np.isfinite(bs)
    b0 = np.where(mb, bs, 0.0)
    fa = sfft.rfft2(np.stack([a0, a0 * a0, ma.astype(float)]), s=shape, workers=_WORKERS)
    fb = sfft.rfft2(np.stack([b0, b0 * b0, mb.astype(float)], axis=1), s=shape, workers=_WORKERS)
    # corr(X, Y)[u] = sum_y X[y] Y[y - u]  -> ifft(FX * conj(FY))
    prods = np.stack(
        [
            fa[0] * np.conj(fb[:, 2]),  # sum a
            fa[1] * np.conj(fb[:, 2]),  # sum a^2
            fa[2] * np.conj(fb[:, 0]),  # sum b
            fa[2] * np.conj(fb[:, 1]),  # sum b^2
            fa[0] * np.conj(fb[:, 0]),  # sum ab
            fa[2] * np.conj(fb[:, 2]),  # n
        ],
        axis=1,
    )
    sums = sfft.irfft2(prods, s=shape, workers=_WORKERS)
    idx_y = np.arange(-max_shift, max_shift + 1) % shape[0]
    idx_x = np.arange(-max_shift, max_shift + 1) % shape[1]
    sums = sums[:, :, idx_y][:, :, :, idx_x]
    sa, saa, sb, sbb, sab, n = (sums[:, i] for i in range(6))
    n = np.round(n)
    need = min_frac * min(ma.sum(), mb.sum(axis=(1, 2)).min())
    with np.errstate(invalid="ignore", divide="ignore"):
        va = saa - sa * sa / n
        vb = sbb - sb * sb / n
        ncc = (sab - sa * sb / n) / np.sqrt(va * vb)
    ncc[(n < max(need, 3)) | ~(va > 0) | ~(vb > 0)] = np.nan
    return ncc


def _coarse_poses(pa: _Prepared, pb: _Prepared, cfg: CMCConfig, *, fallback: bool = True):
    """Candidate poses of b relative to a: list of (theta_deg, dy_um, dx_um, score).

    From `balllink.align`; when it finds no pose, from the brute-force search
    (`_brute_force_poses`) unless ``fallback`` is False."""
    align = _align_module()
    if align is not None and hasattr(align, "coarse_align") and None not in (pa.tpl, pb.tpl):
        try:
            poses = align.coarse_align(pa.tpl, pb.tpl, n=cfg.coarse_candidates)
        except NotImplementedError:
            poses = []
        if poses:
            return [(float(p[0]), float(p[1]), float(p[2]), float(p[3])) for p in poses]
    return _brute_force_poses(pa, pb, cfg) if fallback else []


def _coarse_poses_either(pa: _Prepared, pb: _Prepared, pbm: _Prepared, cfg: CMCConfig):
    """Candidate poses of b or of its mirror image (whichever aligns better at the coarse
    stage): (poses, mirrored)."""
    align = _align_module()
    if None in (pa.tpl, pb.tpl, pbm.tpl):  # a scan too thin to align at 50 µm
        return _coarse_poses(pa, pb, cfg), False
    if align is not None and hasattr(align, "coarse_align_either"):
        poses, mirrored = align.coarse_align_either(
            pa.tpl, pb.tpl, pbm.tpl, n=cfg.coarse_candidates
        )
        if poses:
            return [(float(p[0]), float(p[1]), float(p[2]), float(p[3])) for p in poses], mirrored
    return _brute_force_poses(pa, pb, cfg), False


def _brute_force_poses(pa: _Prepared, pb: _Prepared, cfg: CMCConfig):
    """The built-in coarse search (masked NCC over every coarse angle); slow."""
    # built-in search: every coarse_step_deg on a 2x coarser grid, then +-2 degrees by 1
    # around the three best angles on the coarse grid
    sp = pa.spacing_um * pa.coarse_factor
    a2, b2 = _nan_block_mean(pa.coarse, 2), _nan_block_mean(pb.coarse, 2)
    scan1 = _angle_scan(a2, b2, 2 * sp, np.arange(0.0, 360.0, cfg.coarse_step_deg))
    seeds: list[float] = []
    for th, *_ in scan1:
        if all(abs((th - t + 180) % 360 - 180) >= 10 for t in seeds):
            seeds.append(th)
        if len(seeds) >= 3:
            break
    if not seeds:
        return []
    fine = np.concatenate([t + np.arange(-2.0, 2.5, 1.0) for t in seeds]) % 360.0
    out: list[tuple[float, float, float, float]] = []
    for pose in _angle_scan(pa.coarse, pb.coarse, sp, fine):
        if all(abs((pose[0] - o[0] + 180) % 360 - 180) >= 10 for o in out):
            out.append(pose)
        if len(out) >= cfg.coarse_candidates:
            break
    return out


def _angle_scan(a: np.ndarray, b: np.ndarray, sp: float, thetas: np.ndarray):
    """Masked NCC of ``b`` turned by each angle against ``a`` over translations up to a
    quarter of the image: [(theta, dy_um, dx_um, score)] best first (finite scores only)."""
    cy_a, cx_a = (a.shape[0] - 1) / 2, (a.shape[1] - 1) / 2
    cy_b, cx_b = (b.shape[0] - 1) / 2, (b.shape[1] - 1) / 2
    warped = K.warp_stack(
        b, a.shape[0], a.shape[1], thetas.astype(np.float64), cy_b, cx_b, cy_a, cx_a, 0.0, 0.0
    )
    max_shift = max(2, round(0.25 * max(a.shape)))
    ncc = _masked_ncc_fft(a, warped, max_shift)
    flat = np.where(np.isfinite(ncc), ncc, -np.inf).reshape(thetas.size, -1)
    best = flat.max(axis=1)
    arg = flat.argmax(axis=1)
    w = 2 * max_shift + 1
    out = []
    for k in np.argsort(-best, kind="stable"):
        if not np.isfinite(best[k]):
            break
        u, v = divmod(int(arg[k]), w)
        # a[y] ~ warped[y - u]: the warped b content must move by +u to land on a
        out.append((float(thetas[k]), (u - max_shift) * sp, (v - max_shift) * sp, float(best[k])))
    return out


def _invert_pose(theta: float, dy: float, dx: float) -> tuple[float, float, float]:
    # q_a = R(t) q_b + d  =>  q_b = R(-t) (q_a - d)
    t = math.radians(theta)
    c, s = math.cos(t), math.sin(t)
    # R(-t) applied to (-dy, -dx)
    ny_ = c * (-dy) + s * (-dx)
    nx_ = -s * (-dy) + c * (-dx)
    return (-theta) % 360.0, ny_, nx_


def _cells_direction(pr: _Prepared, pt: _Prepared, pose, cfg: CMCConfig):
    """Cells of ``pr`` searched in ``pt`` around ``pose`` (pt relative to pr).

    Returns thetas, dy, dx (pixels, relative to the pose), corr, present: (n_theta, n_cells).
    """
    theta0, dy_um, dx_um = pose[:3]
    sp = pr.spacing_um * cfg.downsample
    lo, hi = cfg.rotation_range
    thetas = theta0 + np.arange(lo, hi + 1e-9, cfg.rotation_step)
    n = pr.cells.shape[0]
    if n == 0:
        z = np.zeros((thetas.size, 0))
        return thetas, z, z, z, z.astype(bool)
    h, w = pr.cells.shape[1:]
    margin = max(1, round((cfg.region_multiplier - 1) * min(h, w) / 2))
    ny, nx = pr.z.shape
    cy_r, cx_r = (ny - 1) / 2, (nx - 1) / 2
    cy_t, cx_t = (pt.z.shape[0] - 1) / 2, (pt.z.shape[1] - 1) / 2
    min_n = np.maximum(
        (0.5 * (1.0 - cfg.max_missing) * h * w), 0.5 * np.isfinite(pr.cells).sum(axis=(1, 2))
    ).astype(np.int64)
    stack = K.warp_stack(
        pt.z,
        ny + 2 * margin,
        nx + 2 * margin,
        thetas.astype(np.float64),
        cy_t,
        cx_t,
        cy_r + margin,
        cx_r + margin,
        dy_um / sp,
        dx_um / sp,
    )
    r0 = np.ascontiguousarray(pr.boxes[:, 0])
    c0 = np.ascontiguousarray(pr.boxes[:, 1])
    iy, ix, corr = K.cell_search(pr.cells, stack, r0, c0, margin, min_n)
    dy = iy.astype(np.float64)
    dx = ix.astype(np.float64)
    present = np.isfinite(corr)
    return thetas, dy, dx, corr, present


# --------------------------------------------------------------------------- public API


def _resolve_config(method, config) -> CMCConfig:
    if config is not None and not isinstance(config, CMCConfig):
        raise TypeError(f"config must be a CMCConfig, got {type(config).__name__}")
    if method is None:
        return config if config is not None else CMCConfig()
    if method == "cmcr":
        return CMCConfig.cmcr() if config is None else config
    if method == "default":
        return CMCConfig() if config is None else config
    if method in ("high", "original"):
        base = config if config is not None else CMCConfig()
        if method == "original" and base.combine == "cmcr":
            return replace(base, method="original", combine="min")
        return replace(base, method=method)
    raise ValueError(
        f"method must be None, 'default', 'cmcr', 'high' or 'original', got {method!r}"
    )


def _check_pair(a, b) -> tuple[Scan, Scan]:
    """Validate a pair; scans of different spacing are resampled to the coarser one."""
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, Scan):
            raise TypeError(f"compare: {name} must be a balllink.Scan, got {type(s).__name__}")
    if not np.allclose(a.spacing_um, b.spacing_um, rtol=1e-6):
        from ..preprocess import resample

        target = max(max(a.spacing_um), max(b.spacing_um))
        log.info(
            "compare: %s (%s µm) and %s (%s µm) differ in spacing; resampling to %g µm",
            a.name, a.spacing_um, b.name, b.spacing_um, target,
        )  # fmt: skip
        try:
            a, b = (resample(s, spacing_um=target) for s in (a, b))
        except Exception as exc:
            raise PreprocessError(
                f"compare: scans {a.name} (spacing {a.spacing_um} µm) and {b.name} (spacing "
                f"{b.spacing_um} µm) differ in lateral spacing and could not be resampled to "
                f"{target:g} µm ({exc}); resample both first, e.g. bl.resample(scan, "
                "spacing_um=6.25)"
            ) from exc
    for s in (a, b):
        if abs(s.spacing_um[0] - s.spacing_um[1]) > 1e-6 * s.spacing_um[0]:
            raise PreprocessError(
                f"compare: scan {s.name} has non-square pixels {s.spacing_um} µm; resample "
                "it to square pixels first (bl.resample)"
            )
    return a, b


def _cells_table(
    direction: int, rows, cols, centers_um, thetas, dy, dx, corr, present, congruent, valid_fraction
) -> np.ndarray:
    """One row per compared cell: its best rotation (congruent row if any, else max corr)."""
    n = len(rows)
    out = np.zeros(n, CELL_DTYPE)
    if n == 0:
        return out[:0]
    c = np.where(present, corr, -np.inf)
    pick = np.where(congruent.any(axis=0), np.argmax(congruent, axis=0), np.argmax(c, axis=0))
    ar = np.arange(n)
    out["direction"] = direction
    out["row"] = rows
    out["col"] = cols
    out["center_y_um"] = centers_um[:, 0]
    out["center_x_um"] = centers_um[:, 1]
    out["theta_deg"] = np.asarray(thetas)[pick]
    out["dy_px"] = dy[pick, ar]
    out["dx_px"] = dx[pick, ar]
    out["corr"] = np.where(present[pick, ar], corr[pick, ar], np.nan)
    out["congruent"] = congruent.any(axis=0)
    out["valid_fraction"] = valid_fraction
    return out[present.any(axis=0)]


def _compare_cmcr(a: Scan, b: Scan, cfg: CMCConfig, mirrored: bool = False) -> Comparison:
    za, zb = a.masked_heights(), b.masked_heights()
    sp = a.spacing_um[0]
    dirs, raw = [], []
    # the two directions are independent: the FFTs and the nogil kernels of one run while
    # the other direction's Python glue holds the GIL
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_cmcr_direction, ref, tgt, cfg) for ref, tgt in ((za, zb), (zb, za))]
        for fut, (rs, ts) in zip(futures, ((a, b), (b, a))):
            thetas, cells, dx, dy, corr, present = fut.result()
            dec = _decide(thetas, dx, dy, corr, present, cfg)
            raw.append((thetas, cells, dx, dy, corr, present, dec, rs, ts))
    d1, d2 = raw[0][6], raw[1][6]
    thetas = raw[0][0]
    if cfg.method == "high" and cfg.combine == "cmcr":
        count, s1, s2, theta = _combine_cmcr(
            d1, d2, thetas, raw[0][4], raw[1][4], cfg.rotation_threshold_deg
        )
    else:
        sel = [d.high if cfg.method == "high" else d.original for d in (d1, d2)]
        n1, n2 = int(sel[0].sum()), int(sel[1].sum())
        count = {"min": min(n1, n2), "sum": n1 + n2, "union": n1 + n2}.get(cfg.combine, n1 + n2)
        s1, s2 = sel
        theta = d1.theta_max
    tables = []
    for k, ((th, cells, dx, dy, corr, present, dec, rs, ts), cong) in enumerate(zip(raw, (s1, s2))):
        centers = np.array(
            [((r0 + r1) / 2 * sp, (c0 + c1) / 2 * sp) for r0, r1, c0, c1 in cells.boxes]
        )
        rc = np.array(cells.grid_rc)
        tables.append(
            _cells_table(
                k, rc[:, 0], rc[:, 1], centers, th, dy, dx, corr, present, cong, 1.0 - cells.missing
            )
        )
        dirs.append(
            DirectionResult(
                rs.name,
                ts.name,
                int(dec.original.sum()),
                int(dec.high.sum()),
                bool(dec.high_passed),
                float(dec.theta_max),
                int(present.any(axis=0).sum()),
                tables[-1],
            )
        )
    cells_all = np.concatenate(tables)
    reason = ""
    if dirs[0].n_cells == 0 or dirs[1].n_cells == 0:
        reason = "too few valid cells: a scan has no cell with enough valid pixels"
    rot, trans = math.nan, (math.nan, math.nan)
    t_ref = theta if not math.isnan(theta) else math.nan
    if not math.isnan(t_ref):
        rot = (-t_ref) % 360.0
        m = s1 if s1.any() else None
        if m is not None:
            ny_a, nx_a = za.shape
            ny_b, nx_b = zb.shape
            dyv = np.median(raw[0][3][m]) + ny_b // 2 - (ny_a - 1) / 2
            dxv = np.median(raw[0][2][m]) + nx_b // 2 - (nx_a - 1) / 2
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


def _direction_decision(pr, pt, pose, cfg):
    thetas, dy, dx, corr, present = _cells_direction(pr, pt, pose, cfg)
    dec = _decide(thetas, dx, dy, corr, present, cfg)
    if cfg.method == "high" and dec.high_passed:
        cong = dec.high
    else:
        cong = dec.original
    return thetas, dy, dx, corr, present, dec, cong


def _raw_score(n_cong: int, n_cells: int, corr_cong: np.ndarray) -> float:
    """Congruent share of the compared cells (both directions pooled) times their mean
    correlation: 0 when nothing is congruent, 1 for a perfect copy."""
    if n_cells == 0 or n_cong == 0:
        return 0.0
    return float(n_cong / n_cells * np.mean(corr_cong))


# Calibration of the shipped score: a logistic of the raw score. Measured raw scores with the
# default (benchmarks/eval_fadul.py): the 780 Fadul pairs KNM max 0.07, KM min 0.46;
# simulated sets bl.simulate.casings(6, 4): "medium" seeds 12 / 22 KNM max 0.04 / 0.05, KM
# min 0.25 / 0.22; "fadul-like" seeds 11 / 21 KNM max 0.03 / 0.06, KM min 0.64 / 0.65. The
# centre sits between the highest non-match (0.07) and the lowest match (0.22) of all,
# leaning to recall (a lead is reviewed by an examiner); the width sets how hard it
# saturates (its variance ratio says nothing about separation: use the count's or the raw
# score's).
_CAL_CENTER = 0.14
_CAL_WIDTH = 0.02


def _calibrated(raw: float) -> float:
    return float(1.0 / (1.0 + math.exp(-(raw - _CAL_CENTER) / _CAL_WIDTH)))


def _matched_points(pr: _Prepared, pt: _Prepared, r, pose, cfg: CMCConfig):
    """Congruent cells of one direction as point pairs (µm from each array centre):
    the cell centre in the reference and the matched point in the target."""
    thetas, dy, dx, _corr, _present, _dec, cong = r
    sp = pr.spacing_um * cfg.downsample
    t_idx, c_idx = np.nonzero(cong)
    if t_idx.size == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    h, w = pr.cells.shape[1:]
    cen_r = np.array([(pr.z.shape[0] - 1) / 2, (pr.z.shape[1] - 1) / 2])
    ref = (pr.boxes[c_idx, :2] + (np.array([h, w]) - 1) / 2 - cen_r) * sp
    moved = ref + np.stack([dy[t_idx, c_idx], dx[t_idx, c_idx]], axis=1) * sp
    th = np.radians(thetas[t_idx])
    q = moved - np.array(pose[1:3])
    # target point = R(-theta) q
    c, s = np.cos(th), np.sin(th)
    tgt = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], axis=1)
    return ref, tgt


def _fit_rigid(p_b: np.ndarray, q_a: np.ndarray):
    """Least-squares rotation and translation with q_a = R(theta) p_b + d (None if < 2 pairs)."""
    if p_b.shape[0] < 2:
        return None
    pm, qm = p_b.mean(axis=0), q_a.mean(axis=0)
    p, q = p_b - pm, q_a - qm
    th = math.atan2(
        float(np.sum(q[:, 1] * p[:, 0] - q[:, 0] * p[:, 1])),
        float(np.sum(q[:, 0] * p[:, 0] + q[:, 1] * p[:, 1])),
    )
    c, s = math.cos(th), math.sin(th)
    d = qm - np.array([c * pm[0] - s * pm[1], s * pm[0] + c * pm[1]])
    return math.degrees(th), float(d[0]), float(d[1])


def _no_result(pa: _Prepared, pb: _Prepared, cfg: CMCConfig, reason: str, mirrored=False):
    empty = np.zeros(0, CELL_DTYPE)
    d = DirectionResult(pa.name, pb.name, 0, 0, False, math.nan, 0, empty)
    return Comparison(
        0, 0.0, math.nan, (math.nan, math.nan), False, (d, d), empty, reason, cfg,
        mirrored=mirrored,
    )  # fmt: skip


def _best_pose(pa: _Prepared, pb: _Prepared, poses, cfg: CMCConfig):
    """The coarse pose whose cells (direction a in b) agree best: (key, pose, result)."""
    best = None
    for pose in poses:
        r = _direction_decision(pa, pb, pose, cfg)
        key = (int(r[6].sum()), np.nanmean(np.where(r[6], r[3], np.nan)) if r[6].any() else 0)
        if best is None or key > best[0]:
            best = (key, pose, r)
    return best


def _compare_default(
    pa: _Prepared, pb: _Prepared, cfg: CMCConfig, pb_mirror: _Prepared | None = None,
    *, force_mirror: bool = False,
) -> Comparison:  # fmt: skip
    """The default method. ``pb_mirror`` (the mirror image of b, prepared) is considered as
    well when given; ``force_mirror`` compares the mirror image only."""
    sp = pa.spacing_um * cfg.downsample
    if force_mirror and pb_mirror is not None:
        pb, pb_mirror = pb_mirror, None
    mirrored = force_mirror
    for p, nm in ((pa, "a"), (pb, "b")):
        if p.cells.shape[0] < 3:
            return _no_result(
                pa, pb, cfg,
                f"too few valid cells in scan {nm} ({p.name}): {p.cells.shape[0]} cells with "
                f"at most {cfg.max_missing:.0%} missing (need 3)",
                mirrored,
            )  # fmt: skip
    best = None
    if cfg.search != "global":
        poses = [(0.0, 0.0, 0.0, 0.0)]
    elif pb_mirror is None:
        poses = _coarse_poses(pa, pb, cfg)
    else:
        # the reflection is decided at the coarse stage, so the cell search runs once and a
        # non-match gets no second chance at chance cells: on Fadul the true reflection's
        # coarse score beats the mirrored one's by >= 0.16 on every same-gun pair. The slow
        # brute-force search runs only when the alignment finds nothing.
        poses, use_mirror = _coarse_poses_either(pa, pb, pb_mirror, cfg)
        if use_mirror:
            best, pb, mirrored = _best_pose(pa, pb_mirror, poses, cfg), pb_mirror, True
    if best is None and poses:
        best = _best_pose(pa, pb, poses, cfg)
    if best is None:
        return _no_result(
            pa, pb, cfg, "no overlap found between the scans at any rotation", mirrored
        )
    _, pose, r1 = best
    inv = _invert_pose(*pose[:3])
    r2 = _direction_decision(pb, pa, inv, cfg)
    n1, n2 = int(r1[6].sum()), int(r2[6].sum())
    count = {"min": min(n1, n2), "sum": n1 + n2, "union": n1 + n2}.get(cfg.combine, n1 + n2)
    tables, dirs = [], []
    for k, (pr, pt, r) in enumerate(((pa, pb, r1), (pb, pa, r2))):
        thetas, dy, dx, corr, present, dec, cong = r
        centers = (pr.boxes[:, :2] + np.array(pr.cells.shape[1:]) / 2) * sp
        t = _cells_table(
            k,
            pr.boxes[:, 2],
            pr.boxes[:, 3],
            centers,
            thetas % 360.0,
            dy,
            dx,
            corr,
            present,
            cong,
            pr.valid_fraction,
        )
        tables.append(t)
        dirs.append(
            DirectionResult(
                pr.name,
                pt.name,
                int(dec.original.sum()),
                int(dec.high.sum()),
                bool(dec.high_passed),
                float(dec.theta_max) % 360.0 if not math.isnan(dec.theta_max) else math.nan,
                int(present.any(axis=0).sum()),
                t,
            )
        )
    cells_all = np.concatenate(tables)
    n_cells = dirs[0].n_cells + dirs[1].n_cells
    corr_cong = np.concatenate([r1[3][r1[6]], r2[3][r2[6]]])
    raw_score = _raw_score(n1 + n2, n_cells, corr_cong)
    score = _calibrated(raw_score)
    # pose: a rigid (Procrustes) fit to the congruent cells of both directions
    pts_b, pts_a = [], []
    for pr, pt, r, dpose, forward in ((pa, pb, r1, pose, True), (pb, pa, r2, inv, False)):
        p_ref, p_tgt = _matched_points(pr, pt, r, dpose, cfg)
        (pts_a if forward else pts_b).append(p_ref)
        (pts_b if forward else pts_a).append(p_tgt)
    fit = _fit_rigid(np.concatenate(pts_b), np.concatenate(pts_a))
    if fit is not None:
        rot, trans = fit[0] % 360.0, (fit[1], fit[2])
    else:
        rot, trans = float(pose[0]) % 360.0, (float(pose[1]), float(pose[2]))
    reason = "" if count else "no congruent cell in either direction"
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
        raw_score=raw_score,
        mirrored=mirrored,
    )


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
    hit = _MIRRORS.get(scan)
    if hit is None:
        hit = _MIRRORS[scan] = scan.mirrored()
    return hit


def _mirror_plan(a: Scan, b: Scan, cfg: CMCConfig) -> str:
    """ "same" (compare b as it is), "mirror" (its mirror image) or "search" (both)."""
    if cfg.handedness == "same":
        return "same"
    if cfg.handedness == "both":
        return "search"
    ha, hb = a.meta.get("handedness"), b.meta.get("handedness")
    if ha in HANDEDNESS and hb in HANDEDNESS:
        return "same" if ha == hb else "mirror"
    return "search"


def _with_evidence(res: Comparison, a: Scan, b: Scan, cfg: CMCConfig, auto) -> Comparison:
    """Minimum evidence: too small a surface or too few cells cannot make a lead."""
    short = []
    for s in (a, b) if a is not b else (a,):
        area = s.area_mm2
        if area < cfg.min_area_mm2:
            short.append(
                f"scan {s.name} has {area:.2f} mm² of valid surface (< {cfg.min_area_mm2:g})"
            )
    cells = [d.n_cells for d in res.directions]
    if res.directions and min(cells) < cfg.min_cells and not res.reason.startswith("too few"):
        short.append(f"{min(cells)} cells compared in one direction (< {cfg.min_cells})")
    if not short:
        return replace(res, auto_prepared=auto)
    reason = "too little evidence for a lead: " + "; ".join(short)
    if res.reason:
        reason += f" ({res.reason})"
    return replace(res, score=0.0, lead=False, reason=reason, auto_prepared=auto)


def _ready(scan: Scan, prepare: bool) -> Scan:
    return prepare_if_needed(scan) if prepare else scan


def _centre_offset(given: Scan, used: Scan) -> np.ndarray:
    """Where the array centre of ``used`` (``given`` prepared and cropped) lies relative to
    the array centre of ``given``, in µm."""
    if used is given:
        return np.zeros(2)
    origin = np.asarray(used.meta.get("prepared", {}).get("origin_um", (0.0, 0.0)), float)
    c_used = origin + (np.asarray(used.shape) - 1) / 2 * np.asarray(used.spacing_um)
    return c_used - (np.asarray(given.shape) - 1) / 2 * np.asarray(given.spacing_um)


def _in_given_frames(res: Comparison, a, a_used, b, b_used) -> Comparison:
    """Express the pose between the scans the caller gave, not their prepared crops:
    q_a = R q_b + d in prepared frames becomes q_a' = R q_b' + (d + off_a - R off_b)."""
    if (a_used is a and b_used is b) or math.isnan(res.rotation_deg):
        return res
    off_a, off_b = _centre_offset(a, a_used), _centre_offset(b, b_used)
    if res.mirrored:  # the mirror image of b flips rows about its own centre
        off_b = off_b * np.array([-1.0, 1.0])
    t = math.radians(res.rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    d = np.asarray(res.translation_um, float) + off_a - rot @ off_b
    return replace(res, translation_um=(float(d[0]), float(d[1])))


def _compare_ready(a: Scan, b: Scan, cfg: CMCConfig, pa: _Prepared | None = None):
    """Compare two checked, prepared scans of one spacing (handedness handled here)."""
    plan = _mirror_plan(a, b, cfg)
    if cfg.ccf == "cmcr":
        return _compare_cmcr(a, mirror_scan(b) if plan == "mirror" else b, cfg, plan == "mirror")
    pa = pa if pa is not None else _prepared(a, cfg)
    pb = _prepared(b, cfg)
    # the window search (a fixed rotation range) looks at b as it is unless told otherwise
    search = plan == "search" and cfg.search == "global"
    pbm = _prepared(mirror_scan(b), cfg) if search or plan == "mirror" else None
    return _compare_default(pa, pb, cfg, pbm, force_mirror=plan == "mirror")


def compare(
    a: Scan,
    b: Scan,
    *,
    method: str | None = None,
    config: CMCConfig | None = None,
    prepare: bool | None = None,
) -> Comparison:
    """Compare two scans with congruent matching cells, in both directions.

    Parameters
    ----------
    a, b : Scan
        Scans of one casing each. Scans that are not prepared (leveled, band-passed, NaN
        outside the breech face) are prepared first with the default chain
        (`balllink.preprocess.prepare_if_needed`: a claim to be prepared is checked against
        the data), logged and recorded in ``Comparison.auto_prepared``.
    method : {None, "default", "cmcr", "high", "original"}, optional
        Shortcut for a configuration: ``"cmcr"`` is ``CMCConfig.cmcr()``; ``"high"`` /
        ``"original"`` switch the decision rule of ``config``.
    config : CMCConfig, optional
        Every parameter; ``CMCConfig()`` (full 360 degrees, both handedness when unknown)
        by default.
    prepare : bool, optional
        False compares the scans exactly as given (for experts who prepared them their
        own way). Default: True, except in the cmcR mode (``ccf="cmcr"``), which
        reproduces cmcR on scans processed as cmcR does.

    Returns
    -------
    Comparison
        ``cmc_count``, ``score``, ``rotation_deg`` / ``translation_um`` (pose of ``b``, or
        of its mirror image when ``mirrored``, relative to ``a``, between the array
        centres of the scans as given, see the module docstring; the ``cells`` table is in
        the frames of the prepared scans), ``lead``, ``directions``, ``cells``, ``reason``, ``mirrored``,
        ``auto_prepared``. Too little evidence (`CMCConfig.min_area_mm2`,
        `CMCConfig.min_cells`) gives ``score`` 0 and no lead, with the reason.

    Raises
    ------
    balllink.PreprocessError
        When the scans differ in spacing and cannot be resampled to the coarser one, or have
        non-square pixels, or hold nothing usable (the message names the scans).

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> from scipy import ndimage as ndi
    >>> rng = np.random.default_rng(0)
    >>> z = ndi.gaussian_filter(rng.standard_normal((300, 300)), 2).astype("float32")
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> cmp = bl.compare(a, a)
    >>> cmp.lead, cmp.cmc_count > 60, round(cmp.rotation_deg) % 360, cmp.mirrored
    (True, True, 0, False)
    >>> bl.compare(a, bl.Scan(np.flipud(z), spacing_um=6.25)).mirrored
    True
    """
    cfg = _resolve_config(method, config)
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, Scan):
            raise TypeError(f"compare: {name} must be a balllink.Scan, got {type(s).__name__}")
    prepare = cfg.ccf != "cmcr" if prepare is None else bool(prepare)
    a1, b1 = _ready(a, prepare), _ready(b, prepare)
    auto = (a1 is not a, b1 is not b)
    a2, b2 = _check_pair(a1, b1)
    res = _with_evidence(_compare_ready(a2, b2, cfg), a2, b2, cfg, auto)
    return _in_given_frames(res, a, a1, b, b1)


def compare_many(
    query: Scan,
    candidates: Sequence[Scan],
    *,
    config: CMCConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    prepare: bool | None = None,
) -> list[Comparison]:
    """Compare one query with many candidates, reusing the per-scan work.

    The query's cells, pyramids and alignment template (with its rotated stack) are
    computed once, and each candidate's once (its mirror image's too, when handedness is
    searched); both are cached per ``Scan`` object (weakly: dropped with the scan), so a
    database comparing one candidate with many queries prepares it once. The Numba
    kernels and FFTs use both cores. Scans that are not prepared are prepared first, as
    in `compare`.

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> z = np.random.default_rng(1).standard_normal((96, 96)).astype("float32")
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> cfg = bl.CMCConfig(downsample=1, search="window")
    >>> [(c.cmc_count > 100, c.lead) for c in bl.compare_many(a, [a, a], config=cfg)]
    [(True, False), (True, False)]
    >>> bl.compare_many(a, [a], config=cfg)[0].reason.startswith("too little evidence")
    True
    """
    cfg = config if config is not None else CMCConfig()
    prepare = cfg.ccf != "cmcr" if prepare is None else bool(prepare)
    if not isinstance(query, Scan):
        raise TypeError(f"compare_many: query must be a balllink.Scan, got {type(query).__name__}")
    q = _ready(query, prepare)
    cands = []
    for c in candidates:
        if not isinstance(c, Scan):
            raise TypeError(
                f"compare_many: candidates must be balllink.Scan, got {type(c).__name__}"
            )
        c2 = _ready(c, prepare)
        q2, c3 = _check_pair(q, c2)
        if q2 is not q:  # candidates of another spacing are resampled to the query's
            raise PreprocessError(
                f"compare_many: candidate {c.name} has spacing {c.spacing_um} µm, finer than "
                f"the query {query.name} ({query.spacing_um} µm); resample it first"
            )
        cands.append((c, c2, c3))
    out: list[Comparison] = []
    pq = _prepared(q, cfg) if cfg.ccf != "cmcr" else None
    for i, (given, used, c) in enumerate(cands):
        res = _compare_ready(q, c, cfg, pq)
        res = _with_evidence(res, q, c, cfg, (q is not query, used is not given))
        out.append(_in_given_frames(res, query, q, given, used))
        if progress is not None:
            progress(i + 1, len(cands))
    return out
