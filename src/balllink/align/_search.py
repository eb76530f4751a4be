"""The coarse search over 360°: angle scan, refinement, exact masked NCC (see the
package docstring for the method and the pose convention)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.fft as sfft

from .._scan import Scan
from .._threads import threads_allowed
from ._pose import Pose, angle_diff, invert_pose
from ._template import (
    AlignmentTemplate,
    as_template,
    check_options,
    fft_size,
    fixed_spectra,
    half,
    rotated,
    spectra,
    stack_spectra,
)

__all__ = ["coarse_align", "coarse_align_either", "coarse_align_many", "masked_ncc"]

log = logging.getLogger(__name__)

#: `coarse_align_either`: angle-scan peaks (fast NCC form) of the two reflections closer than
#: this are both refined. On Fadul the true reflection's fast peak led by -0.04 to 0.5
#: (median 0.29; one same-gun pair of 63 led by the wrong one), its refined exact score by
#: 0.16 or more on every pair.
_EITHER_MARGIN = 0.1
#: ... and when both are refined, the mirror image must beat the scan as given by this much:
#: a same-gun mirror wins by far more, while a non-match would otherwise get the better of
#: two chance alignments.
_MIRROR_PREFERENCE = 0.05


def _ncc_window(
    spec_a, spec_b, size, index, min_n, workers, exact=True, conjugated=False, fill=-1.0
):
    """Masked NCC of moving (spec_a: (k, 3, ...)) against fixed (spec_b: (3, ...)) at the
    circular correlation lags ``index`` (both axes); corr[t] = sum_p A(p) B(p + t).
    Returns (k, len(index), len(index)), ``fill`` where too few pixels overlap.

    ``exact`` computes Padfield's six correlations (means removed over each overlap). The
    fast form takes the overlap means as zero (true of the high-passed, normalised grids
    to a good approximation) and needs three: sum ab / sqrt(sum a^2 * sum b^2) over the
    overlap, with the overlap size estimated by the geometric mean of the two energies
    (each grid has unit mean square). ``conjugated``: ``spec_a`` is already conjugated
    (the cached rotated stacks are)."""
    if conjugated:
        a, a2, ma = (spec_a[:, i] for i in range(3))
    else:
        a, a2, ma = (np.conj(spec_a[:, i]) for i in range(3))
    b, b2, mb = spec_b[0], spec_b[1], spec_b[2]
    pairs = (
        [(a, b), (a, mb), (ma, b), (ma, mb), (a2, mb), (ma, b2)]
        if exact
        else [(a, b), (a2, mb), (ma, b2)]
    )
    prods = np.empty((a.shape[0], len(pairs), *a.shape[1:]), np.result_type(a, b))
    for j, (x, y) in enumerate(pairs):  # straight into place: no stacking copy
        np.multiply(x, y, out=prods[:, j])
    full = sfft.irfft2(prods, s=(size, size), workers=workers)
    win = full[:, :, index][:, :, :, index].astype(np.float64)
    if exact:
        ab, a_mb, ma_b, n, a2_mb, ma_b2 = (win[:, i] for i in range(6))
        n = np.rint(n)
        nn = np.maximum(n, 1.0)
        num = ab - a_mb * ma_b / nn
        var_a = a2_mb - a_mb * a_mb / nn
        var_b = ma_b2 - ma_b * ma_b / nn
    else:
        num, var_a, var_b = (win[:, i] for i in range(3))
    den = np.sqrt(np.maximum(var_a, 0.0) * np.maximum(var_b, 0.0))
    ok = ((n >= min_n) & (den > 1e-6 * nn)) if exact else (den >= min_n)
    return np.where(ok, num / np.where(ok, den, 1.0), fill)


def masked_ncc(
    fixed: np.ndarray,
    moving: np.ndarray,
    max_shift: int,
    *,
    min_overlap: float = 0.3,
    min_pixels: int = 3,
    workers: int = 2,
) -> np.ndarray:
    """Masked normalised cross-correlation of NaN-holed grids at every shift (Padfield 2012).

    Correlations of values, squares and validity masks by FFT, so that every shift is
    normalised over the pixels valid in both grids (never NaN-to-zero): the Pearson
    correlation of the overlap, at all shifts at once.

    Parameters
    ----------
    fixed : (ny, nx) array
        NaN where not measured.
    moving : (k, my, mx) or (my, mx) array
        One or more grids, NaN where not measured.
    max_shift : int
        Largest shift searched, pixels per axis.
    min_overlap : float
        A shift is scored only when its jointly valid pixels number at least this share
        of the smaller grid's valid pixels (and at least ``min_pixels``).
    min_pixels : int
    workers : int
        scipy.fft threads.

    Returns
    -------
    (k, 2 s + 1, 2 s + 1) float64 array, ``s = max_shift``
        Entry ``[k, s + u, s + v]`` correlates ``fixed[y, x]`` with
        ``moving[k][y - u, x - v]`` (``moving`` moved by ``(u, v)``); NaN where too few
        pixels overlap or either side is flat there.

    Examples
    --------
    >>> import numpy as np
    >>> from balllink.align import masked_ncc
    >>> z = np.random.default_rng(0).normal(size=(40, 40))
    >>> moved = np.roll(z, (3, -2), axis=(0, 1))  # z moved down 3 and left 2
    >>> moved[:5] = np.nan
    >>> ncc = masked_ncc(moved, z, 6)
    >>> [int(i) - 6 for i in np.unravel_index(np.nanargmax(ncc[0]), ncc[0].shape)]
    [3, -2]
    >>> round(float(np.nanmax(ncc)), 6)
    1.0
    """
    workers = threads_allowed(workers)
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    moving = moving[None] if moving.ndim == 2 else moving
    s = int(max_shift)
    size = sfft.next_fast_len(max(*fixed.shape, *moving.shape[1:]) + s, real=True)
    mf, mm = np.isfinite(fixed), np.isfinite(moving)
    spec_f = spectra(np.where(mf, fixed, 0.0), mf, size, workers, dtype=np.complex128)
    spec_m = spectra(np.where(mm, moving, 0.0), mm, size, workers, dtype=np.complex128)
    need = min_overlap * min(mf.sum(), mm.sum(axis=(1, 2)).min())
    index = np.arange(-s, s + 1) % size
    return _ncc_window(
        spec_m, spec_f, size, index, max(need, min_pixels), workers, exact=True, fill=np.nan
    )


def _parabolic(ym: float, y0: float, yp: float) -> float:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, ym), (0, y0), (1, yp)."""
    den = ym - 2.0 * y0 + yp
    if not np.isfinite(den) or den >= 0:
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


@dataclass
class _AngleScan:
    """The full-circle angle scan of one pair: the best NCC per angle and where."""

    angles: np.ndarray
    curve: np.ndarray  # best score per angle
    best: np.ndarray  # flat index of the best shift per angle
    shift_px: int  # s: shifts searched per axis on the search grid
    size: int  # FFT side

    @property
    def peak(self) -> float:
        return float(self.curve.max()) if self.curve.size else -1.0


def _scan_angles(ta: AlignmentTemplate, tb: AlignmentTemplate, opts: dict[str, Any], size=None):
    """``ta`` rotated over the full circle (its stack cached) against ``tb`` fixed."""
    if abs(ta.spacing_um - tb.spacing_um) > 1e-6 * ta.spacing_um:
        raise ValueError(
            f"cannot align {ta.name} ({ta.spacing_um:g} µm/px) with {tb.name} "
            f"({tb.spacing_um:g} µm/px): resample both to one spacing first (bl.resample)"
        )
    workers = threads_allowed(int(opts["workers"]))
    step = float(opts["angle_step_deg"])
    la, lb = ta.search, tb.search
    s = math.ceil(opts["max_shift_um"] / la.pixel_um)
    size = size or fft_size(la, lb, s)
    angles, spec_a, n_a = stack_spectra(la, ta._cache, step, size, workers)
    spec_b = fixed_spectra(lb, tb._cache, size, workers)
    # lag t on the canvases <-> shift d of a's centre onto b's centre: d = t + ha - hb
    lag0 = half(la) - half(lb)
    index = (np.arange(-s, s + 1) - lag0) % size
    min_n = max(4.0, opts["min_overlap"] * min(float(np.median(n_a)), float(lb.n_valid)))
    ncc = _ncc_window(
        spec_a, spec_b, size, index, min_n, workers, exact=opts["exact_search"], conjugated=True
    )
    flat = ncc.reshape(len(angles), -1)
    best = flat.argmax(axis=1)
    curve = flat[np.arange(len(angles)), best]
    return _AngleScan(angles, curve, best, s, size)


class _Peak(NamedTuple):
    """The best shift of the refined NCC map at one angle."""

    score: float
    py: int
    px: int


def _align_templates(
    ta: AlignmentTemplate,
    tb: AlignmentTemplate,
    n: int,
    opts: dict[str, Any],
    size=None,
    scan: _AngleScan | None = None,
) -> list[Pose]:
    """Poses of ``tb`` relative to ``ta``. ``ta`` is the one rotated (its stack is cached)."""
    workers = threads_allowed(int(opts["workers"]))
    step = float(opts["angle_step_deg"])
    scan = scan if scan is not None else _scan_angles(ta, tb, opts, size)
    angles, curve, best, s, size = scan.angles, scan.curve, scan.best, scan.shift_px, scan.size
    la, lb = ta.search, tb.search
    # local maxima of the circular score curve, best first, at least min_separation apart
    left, right = np.roll(curve, 1), np.roll(curve, -1)
    peaks = np.flatnonzero((curve >= left) & (curve >= right) & (curve > -1))
    peaks = peaks[np.argsort(-curve[peaks], kind="stable")]
    chosen: list[int] = []
    sep = float(opts["min_separation_deg"])
    for p in peaks:
        if all(angle_diff(angles[p], angles[q]) >= sep for q in chosen):
            chosen.append(int(p))
        if len(chosen) >= n + 1:
            break
    if not chosen:
        log.info("coarse_align %s vs %s: no overlap at any angle", ta.name, tb.name)
        return []
    # ---- refinement: angle by parabola on the curve, translation re-measured ------------
    fa, fb = ta.refine, tb.refine
    ratio = la.pixel_um / fa.pixel_um
    k = len(angles)
    cand_angles, cand_shift = [], []
    for p in chosen:
        delta = _parabolic(curve[(p - 1) % k], curve[p], curve[(p + 1) % k])
        cand_angles.append((angles[p] + delta * step) % 360.0)
        iy, ix = divmod(int(best[p]), 2 * s + 1)
        cand_shift.append(((iy - s) * ratio, (ix - s) * ratio))
    # each candidate at its angle and +-delta: the peak score over angle is sharper at the
    # exact NCC, and the translation depends on the angle (about 25 µm per degree at the rim)
    delta = float(opts["refine_angle_deg"])
    offsets = np.array([-delta, 0.0, delta]) if delta > 0 else np.array([0.0])
    eval_angles = (np.repeat(cand_angles, len(offsets)) + np.tile(offsets, len(chosen))) % 360
    fs = math.ceil(opts["max_shift_um"] / fa.pixel_um)
    fsize = size if fa is la and fb is lb else fft_size(fa, fb, fs)
    va, ma = rotated(fa, eval_angles)
    spec_fa = spectra(va, ma, fsize, workers)
    spec_fb = fixed_spectra(fb, tb._cache, fsize, workers)
    findex = (np.arange(-fs, fs + 1) - (half(fa) - half(fb))) % fsize
    min_fn = max(4.0, opts["min_overlap"] * min(float(np.median(ma.sum(axis=(1, 2)))), fb.n_valid))
    fncc = _ncc_window(spec_fa, spec_fb, fsize, findex, min_fn, workers, exact=True)
    w = math.ceil(ratio) + 1  # search the refined map near the coarse peak
    poses = []
    for c, (cy, cx) in enumerate(cand_shift):
        y0, x0 = round(cy) + fs, round(cx) + fs
        ylo, yhi = max(0, y0 - w), min(2 * fs + 1, y0 + w + 1)
        xlo, xhi = max(0, x0 - w), min(2 * fs + 1, x0 + w + 1)
        peaks_c = []  # the peak of each evaluated angle of this candidate
        for j in range(len(offsets)):
            sub = fncc[c * len(offsets) + j, ylo:yhi, xlo:xhi]
            jy, jx = np.unravel_index(int(sub.argmax()), sub.shape)
            peaks_c.append(_Peak(float(sub[jy, jx]), int(jy + ylo), int(jx + xlo)))
        j = max(range(len(offsets)), key=lambda i: peaks_c[i].score)
        score, py, px = peaks_c[j]
        if score <= -1:
            continue
        theta_a = float(eval_angles[c * len(offsets) + j])
        if len(offsets) == 3 and j == 1:
            theta_a += delta * _parabolic(peaks_c[0].score, score, peaks_c[2].score)
        m = fncc[c * len(offsets) + j]
        dy = _parabolic(m[py - 1, px], m[py, px], m[py + 1, px]) if 0 < py < 2 * fs else 0.0
        dx = _parabolic(m[py, px - 1], m[py, px], m[py, px + 1]) if 0 < px < 2 * fs else 0.0
        shift_um = np.array([py - fs + dy, px - fs + dx]) * fa.pixel_um
        # found: a rotated by theta_a then shifted lands on b; invert for b relative to a
        poses.append(invert_pose(Pose(theta_a % 360.0, *map(float, shift_um), score)))
    poses.sort(key=lambda p: -p.score)
    return poses[:n]


def coarse_align(
    a: Scan | AlignmentTemplate, b: Scan | AlignmentTemplate, *, n: int = 3, **options: Any
) -> list[Pose]:
    """Candidate global poses of ``b`` relative to ``a`` over the full 360°, best first.

    Parameters
    ----------
    a, b : Scan or AlignmentTemplate
        Prepared scans of the same spacing (or their :func:`prepare_alignment` templates,
        to reuse per-scan work).
    n : int
        Number of distinct candidates returned (fewer when the scans barely overlap).
    **options
        ``search_um`` (50), ``refine_um`` (50), ``highpass_um`` (250), ``angle_step_deg`` (4),
        ``max_shift_um`` (1000), ``min_overlap`` (0.3, share of the smaller scan),
        ``min_separation_deg`` (10), ``workers`` (2, scipy.fft threads).

    Returns
    -------
    list of Pose
        ``b`` rotated by ``rotation_deg`` about its array centre, then shifted by
        ``(dy_um, dx_um)``, lands on ``a`` (see the module docstring), best score first.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> import balllink as bl
    >>> from balllink.align import coarse_align
    >>> rng = np.random.default_rng(1)
    >>> z = ndi.gaussian_filter(rng.normal(size=(240, 240)), 4)
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> b = bl.Scan(ndi.rotate(z, -40, reshape=False, order=1), spacing_um=6.25)
    >>> best = coarse_align(a, b, n=1)[0]
    >>> abs(best.rotation_deg - 40) < 2
    True
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    opts = check_options(options)
    ta = as_template(a, opts, "a")
    tb = as_template(b, opts, "b")
    return _align_templates(ta, tb, int(n), opts)


def coarse_align_either(
    a: Scan | AlignmentTemplate,
    b: Scan | AlignmentTemplate,
    b_mirror: Scan | AlignmentTemplate,
    *,
    n: int = 3,
    **options: Any,
) -> tuple[list[Pose], bool]:
    """:func:`coarse_align` of ``a`` with ``b`` or with its mirror image, whichever fits.

    Both reflections get the full-circle angle scan (``a``'s rotated stack is shared).
    When their best angles' scores differ by `_EITHER_MARGIN` or more, only the better one
    is refined; otherwise both are refined and the refined (exact masked NCC) scores decide,
    the mirror image needing `_MIRROR_PREFERENCE` more. The handedness is decided at the coarse stage, mostly at the cost of one more
    angle scan rather than of a second alignment.

    Parameters
    ----------
    a, b : Scan or AlignmentTemplate
        As for :func:`coarse_align`.
    b_mirror : Scan or AlignmentTemplate
        ``b``'s mirror image (`balllink.Scan.mirrored`, or its template).
    n : int
        Candidate poses returned.
    **options
        As for :func:`coarse_align`.

    Returns
    -------
    poses : list of Pose
        Of ``b`` (or of ``b_mirror`` when ``mirrored``) relative to ``a``, best first.
    mirrored : bool

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> import balllink as bl
    >>> from balllink.align import coarse_align_either
    >>> z = ndi.gaussian_filter(np.random.default_rng(1).normal(size=(240, 240)), 4)
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> b = a.mirrored()
    >>> poses, mirrored = coarse_align_either(a, b, b.mirrored(), n=1)
    >>> mirrored, round(poses[0].rotation_deg) % 360
    (True, 0)
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    opts = check_options(options)
    ta = as_template(a, opts, "a")
    tb = as_template(b, opts, "b")
    tm = as_template(b_mirror, opts, "b_mirror")
    s = math.ceil(opts["max_shift_um"] / ta.search.pixel_um)
    size = max(fft_size(ta.search, t.search, s) for t in (tb, tm))
    plain, mirror = _scan_angles(ta, tb, opts, size), _scan_angles(ta, tm, opts, size)
    if abs(mirror.peak - plain.peak) < _EITHER_MARGIN:  # too close: refine both
        poses = _align_templates(ta, tb, int(n), opts, size, plain)
        poses_m = _align_templates(ta, tm, int(n), opts, size, mirror)
        top = max((p.score for p in poses), default=-math.inf)
        if poses_m and max(p.score for p in poses_m) > top + _MIRROR_PREFERENCE:
            return poses_m, True
        return poses, False
    if mirror.peak > plain.peak:
        return _align_templates(ta, tm, int(n), opts, size, mirror), True
    return _align_templates(ta, tb, int(n), opts, size, plain), False


def coarse_align_many(
    a: Scan | AlignmentTemplate,
    candidates: Sequence[Scan | AlignmentTemplate],
    *,
    n: int = 3,
    progress: Callable[[int, int], Any] | None = None,
    **options: Any,
) -> list[list[Pose]]:
    """:func:`coarse_align` of one query against many candidates, rotating the query once.

    Parameters
    ----------
    a : Scan or AlignmentTemplate
        The query.
    candidates : sequence of Scan or AlignmentTemplate
        Prepare them once with :func:`prepare_alignment` when they are compared often.
    n : int
        Candidates poses per pair.
    progress : callable, optional
        Called as ``progress(done, total)`` after each candidate.
    **options
        As for :func:`coarse_align`.

    Returns
    -------
    list of list of Pose
        For each candidate ``b``, the poses of ``b`` relative to ``a``, best first.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.align import coarse_align_many, prepare_alignment
    >>> z = np.random.default_rng(2).normal(size=(200, 200))
    >>> q = prepare_alignment(bl.Scan(z, spacing_um=6.25))
    >>> [len(p) for p in coarse_align_many(q, [q, q], n=2)]
    [2, 2]
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    opts = check_options(options)
    ta = as_template(a, opts, "query")
    tbs = [as_template(b, opts, f"candidate {i}") for i, b in enumerate(candidates)]
    out: list[list[Pose]] = []
    if not tbs:
        return out
    # one FFT size for the batch so the query's rotated stack is computed once
    s = math.ceil(opts["max_shift_um"] / ta.search.pixel_um)
    size = max(fft_size(ta.search, tb.search, s) for tb in tbs)
    for i, tb in enumerate(tbs):
        out.append(_align_templates(ta, tb, int(n), opts, size=size))
        if progress is not None:
            progress(i + 1, len(tbs))
    return out
