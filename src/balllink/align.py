"""Coarse global alignment of two prepared scans over the full 360° (issue 4, first stage).

Casework orientation is unknown, so before the cell search (``compare``) looks in a narrow
rotation window, this stage proposes a few candidate global poses of one scan relative to
another. Both scans are reduced to a coarse grid (NaN-aware block means, 50 µm by default)
and high-passed there (NaN-aware Gaussian local-mean removal); one of them is rotated over
the whole circle at a coarse angle step (4°), and for every angle the masked normalised
cross-correlation over all translations is computed at once by FFT. The angle scan uses a
three-correlation form (overlap means taken as zero, which the high-pass makes true to a
good approximation); the best angles are then refined (parabolic interpolation of the
score over angle) and re-measured with Padfield's exact masked NCC (2012: correlations of
values, squares and masks, so that every offset is normalised over the pixels valid in
both scans, never NaN-to-zero), with a sub-pixel peak fit for the translation.

The rotated copies and spectra of a template are cached in it, so a query compared with
many candidates (``coarse_align_many``) pays its rotations and transforms once.

Pose convention
---------------
A :class:`Pose` ``(rotation_deg, dy_um, dx_um, score)`` returned by
``coarse_align(a, b)`` places ``b`` on ``a``. Positions are micrometres ``(y, x)`` = (row,
column), row 0 at the top, measured from each scan's array centre
``((ny - 1) / 2 * spacing_y, (nx - 1) / 2 * spacing_x)``. A point at ``q_b`` in ``b`` lands
at ``q_a = R(theta) @ q_b + (dy_um, dx_um)`` in ``a`` with::

    y' = cos(theta) * y - sin(theta) * x
    x' = sin(theta) * y + cos(theta) * x

which is the rotation of ``skimage.transform.rotate(b, rotation_deg)`` and
``scipy.ndimage.rotate(b, rotation_deg, reshape=False)`` (counter-clockwise as displayed
with row 0 on top) followed by moving the content by ``(dy_um, dx_um)``.
:func:`pose_transform` applies a pose to points; :func:`invert_pose` gives the pose of
``a`` relative to ``b``. cmcR's "modal theta" (target rotated to match the reference) has
the opposite sign: ``rotation_deg ≈ -theta_cmcR (mod 360)`` for ``a`` = reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from skimage.measure import block_reduce

from ._scan import Scan
from .errors import PreprocessError

__all__ = [
    "AlignmentTemplate",
    "Pose",
    "coarse_align",
    "coarse_align_either",
    "coarse_align_many",
    "invert_pose",
    "pose_transform",
    "prepare_alignment",
]

log = logging.getLogger(__name__)

_DEFAULTS: dict[str, Any] = {
    "search_um": 50.0,  # grid of the full-circle angle scan
    "refine_um": 50.0,  # grid of the translation refinement
    "highpass_um": 250.0,  # Gaussian sigma of the local-mean removal (0: none)
    "angle_step_deg": 4.0,  # angle step of the full-circle scan
    "max_shift_um": 1000.0,  # largest translation searched, per axis
    "min_overlap": 0.3,  # smallest joint valid area, as a share of the smaller scan's
    "refine_angle_deg": 1.0,  # the best angles are re-measured at +-this (0: not)
    "min_separation_deg": 10.0,  # candidates closer than this in angle are one candidate
    "exact_search": False,  # Padfield's exact masked NCC in the angle scan (2x slower)
    "workers": 2,  # scipy.fft workers
}
_TEMPLATE_KEYS = ("search_um", "refine_um", "highpass_um")
_MIN_VALID_CELLS = 30  # a level with fewer valid coarse pixels is unusable
#: `coarse_align_either`: angle-scan peaks (fast NCC form) of the two reflections closer than
#: this are both refined. On Fadul the true reflection's fast peak led by -0.04 to 0.5
#: (median 0.29; one same-gun pair of 63 led by the wrong one), its refined exact score by
#: 0.16 or more on every pair.
_EITHER_MARGIN = 0.1
#: ... and when both are refined, the mirror image must beat the scan as given by this much:
#: a same-gun mirror wins by far more, while a non-match would otherwise get the better of
#: two chance alignments.
_MIRROR_PREFERENCE = 0.05


class Pose(NamedTuple):
    """One candidate pose of scan ``b`` relative to scan ``a`` (see the module docstring).

    Attributes
    ----------
    rotation_deg : float
        Rotation of ``b`` about its array centre, degrees in [0, 360), counter-clockwise as
        displayed with row 0 on top (``skimage.transform.rotate`` sense).
    dy_um, dx_um : float
        Translation (µm) of the rotated ``b`` centre relative to ``a``'s centre.
    score : float
        Masked normalised cross-correlation at the refinement grid (Pearson over the
        jointly valid pixels), in [-1, 1]; higher is better.
    """

    rotation_deg: float
    dy_um: float
    dx_um: float
    score: float


def _rotation_matrix(theta_deg: float) -> np.ndarray:
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def invert_pose(pose: Pose) -> Pose:
    """The pose of ``a`` relative to ``b`` given that of ``b`` relative to ``a``.

    Examples
    --------
    >>> from balllink.align import Pose, invert_pose
    >>> p = invert_pose(Pose(90.0, 10.0, 0.0, 0.5))
    >>> round(p.rotation_deg, 6), round(p.dy_um, 6) + 0.0, round(p.dx_um, 6) + 0.0
    (270.0, 0.0, 10.0)
    """
    d = -_rotation_matrix(-pose.rotation_deg) @ np.array([pose.dy_um, pose.dx_um])
    return Pose((-pose.rotation_deg) % 360.0, float(d[0]), float(d[1]), pose.score)


def pose_transform(pose: Pose, yx_um: np.ndarray) -> np.ndarray:
    """Map points of ``b`` (µm from b's array centre, shape (..., 2) as (y, x)) into ``a``.

    Examples
    --------
    >>> import numpy as np
    >>> from balllink.align import Pose, pose_transform
    >>> pose_transform(Pose(90.0, 0.0, 5.0, 1.0), np.array([0.0, 10.0])).round(6) + 0.0
    array([-10.,   5.])
    """
    pts = np.asarray(yx_um, dtype=float)
    return pts @ _rotation_matrix(pose.rotation_deg).T + np.array([pose.dy_um, pose.dx_um])


@dataclass(frozen=True, eq=False)
class _Level:
    """One reduced grid of a scan: normalised values (0 where invalid) and the valid mask."""

    values: np.ndarray  # float32, zero where invalid, zero mean / unit variance on valid
    mask: np.ndarray  # float32 0/1
    centre: tuple[float, float]  # the full-resolution array centre, in this grid's pixels
    pixel_um: float
    radius: float  # largest distance (px) of a valid pixel from ``centre``
    n_valid: int


@dataclass(frozen=True, eq=False, repr=False)
class AlignmentTemplate:
    """Per-scan work of the coarse alignment, done once and reused for many comparisons.

    Build with :func:`prepare_alignment`. Holds reduced grids of the scan and caches the
    spectra and rotated copies computed on demand, so a query compared with many candidates
    rotates and transforms itself only once. Picklable.
    """

    name: str
    spacing_um: float
    shape: tuple[int, int]
    options: dict[str, float]
    search: _Level
    refine: _Level
    _cache: dict = field(default_factory=dict, compare=False)

    def clear_cache(self) -> None:
        """Drop the cached rotated copies and spectra (about 15 MB for a query template)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return (
            f"AlignmentTemplate({self.name}, shape={self.shape}, "
            f"search={self.search.values.shape}@{self.search.pixel_um:g}um, "
            f"refine={self.refine.values.shape}@{self.refine.pixel_um:g}um)"
        )


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(
            f"unknown alignment option(s) {sorted(unknown)}; valid options: {sorted(_DEFAULTS)}"
        )
    opts = {**_DEFAULTS, **options}
    for key in ("search_um", "refine_um", "angle_step_deg", "max_shift_um"):
        value = opts[key]
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    if opts["refine_um"] > opts["search_um"]:
        raise ValueError(
            f"refine_um ({opts['refine_um']}) must not exceed search_um ({opts['search_um']})"
        )
    ra = opts["refine_angle_deg"]
    if not (isinstance(ra, int | float) and 0 <= ra <= opts["angle_step_deg"]):
        raise ValueError(f"refine_angle_deg must be in [0, angle_step_deg], got {ra!r}")
    hp = opts["highpass_um"]
    if not (isinstance(hp, int | float) and math.isfinite(hp) and hp >= 0):
        raise ValueError(f"highpass_um must be a number >= 0 (0: off), got {hp!r}")
    if not 0 < opts["min_overlap"] <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {opts['min_overlap']!r}")
    if opts["angle_step_deg"] > 30:
        raise ValueError(f"angle_step_deg must be at most 30, got {opts['angle_step_deg']!r}")
    opts["exact_search"] = bool(opts["exact_search"])
    if not (isinstance(opts["workers"], int) and opts["workers"] >= 1):
        raise ValueError(f"workers must be a positive int, got {opts['workers']!r}")
    return opts


def _make_level(
    heights: np.ndarray, mask: np.ndarray, spacing: float, target_um: float, highpass_um: float
):
    factor = max(1, round(target_um / spacing))
    values = np.where(mask, heights, 0.0).astype(np.float64)
    if factor > 1:
        sums = block_reduce(values, (factor, factor), np.sum)
        counts = block_reduce(mask.astype(np.float64), (factor, factor), np.sum)
        ok = counts >= 0.5 * factor * factor
        values = np.divide(sums, counts, out=np.zeros_like(sums), where=ok)
    else:
        ok = mask.copy()
    n_valid = int(np.count_nonzero(ok))
    ny, nx = heights.shape
    off = (factor - 1) / 2
    centre = (((ny - 1) / 2 - off) / factor, ((nx - 1) / 2 - off) / factor)
    if n_valid and highpass_um:
        # NaN-aware Gaussian high-pass: local means ~0 so the fast NCC form is accurate
        sigma = highpass_um / (factor * spacing)
        w = ndi.gaussian_filter(ok.astype(np.float64), sigma, mode="constant")
        sm = ndi.gaussian_filter(np.where(ok, values, 0.0), sigma, mode="constant")
        values = np.where(ok, values - sm / np.maximum(w, 1e-6), 0.0)
    if n_valid:
        sel = values[ok]
        values = np.where(ok, (values - sel.mean()) / (sel.std() + 1e-12), 0.0)
        yy, xx = np.nonzero(ok)
        radius = float(np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2).max()) + 1.0
    else:
        radius = 1.0
    return _Level(
        values=values.astype(np.float32),
        mask=ok.astype(np.float32),
        centre=centre,
        pixel_um=factor * spacing,
        radius=radius,
        n_valid=n_valid,
    )


def prepare_alignment(scan: Scan, **options: Any) -> AlignmentTemplate:
    """Reduce a prepared scan to the grids the coarse alignment works on.

    Parameters
    ----------
    scan : Scan
        A prepared scan (leveled, band-passed, NaN outside the breech face) with square
        pixels.
    **options
        ``search_um`` (50) and ``refine_um`` (50): the grids, µm per pixel, of the angle
        scan and of the translation refinement; ``highpass_um`` (250): Gaussian sigma of
        the local-mean removal on those grids (0: none). Other alignment options are
        accepted and ignored here.

    Returns
    -------
    AlignmentTemplate

    Raises
    ------
    PreprocessError
        When the pixels are not square or too few points are valid.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.align import prepare_alignment
    >>> z = np.random.default_rng(0).normal(size=(200, 200))
    >>> tpl = prepare_alignment(bl.Scan(z, spacing_um=6.25))
    >>> tpl.search.values.shape, tpl.search.pixel_um
    ((25, 25), 50.0)
    """
    if isinstance(scan, AlignmentTemplate):
        return scan
    if not isinstance(scan, Scan):
        raise TypeError(f"prepare_alignment needs a balllink Scan, got {type(scan).__name__}")
    opts = _check_options(options)
    dy, dx = scan.spacing_um
    if abs(dy - dx) > 1e-6 * max(dy, dx):
        raise PreprocessError(
            f"{scan.name}: alignment needs square pixels, spacing is {(dy, dx)} µm; "
            "resample it first (bl.resample)"
        )
    if min(scan.shape) < 2:
        raise PreprocessError(f"{scan.name}: scan of shape {scan.shape} is too small to align")
    heights = np.asarray(scan.heights)
    mask = np.asarray(scan.mask)
    levels = []
    for key in ("search_um", "refine_um"):
        level = _make_level(heights, mask, dy, opts[key], opts["highpass_um"])
        if level.n_valid < _MIN_VALID_CELLS:
            raise PreprocessError(
                f"{scan.name}: only {level.n_valid} valid pixels at the {opts[key]:g} µm "
                f"alignment grid (need {_MIN_VALID_CELLS}); the scan has {scan.n_valid} "
                "valid points — is it empty or masked out?"
            )
        if levels and level.pixel_um == levels[0].pixel_um:
            level = levels[0]  # same grid: share it (and its cached spectra)
        levels.append(level)
    return AlignmentTemplate(
        name=scan.name,
        spacing_um=dy,
        shape=scan.shape,
        options={k: float(opts[k]) for k in _TEMPLATE_KEYS},
        search=levels[0],
        refine=levels[1],
    )


def _half(level: _Level) -> int:
    """Half side of the square canvas holding the level at any rotation."""
    return math.ceil(level.radius) + 1


def _rotated(level: _Level, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and masks of ``level`` rotated by each angle about its centre, on a square
    canvas of side ``2 h + 1`` (``h = _half(level)``) whose pixel (h, h) is the centre.
    Values are renormalised to unit mean square over the valid pixels of each rotation."""
    h = _half(level)
    side = 2 * h + 1
    out_v = np.empty((len(angles), side, side), np.float32)
    out_m = np.empty((len(angles), side, side), np.float32)
    cc = np.array([h, h], float)
    for i, angle in enumerate(angles):
        # output o - cc = R (i - centre)  =>  input i = R^T (o - cc) + centre
        rt = _rotation_matrix(float(angle)).T
        offset = np.asarray(level.centre) - rt @ cc
        mv = ndi.affine_transform(level.mask, rt, offset, output_shape=(side, side), order=1)
        vv = ndi.affine_transform(level.values, rt, offset, output_shape=(side, side), order=1)
        ok = mv > 0.999
        v = np.where(ok, vv / np.where(ok, mv, 1.0), 0.0)
        # interpolation smooths: restore unit mean square so energies estimate overlap sizes
        ms = float(np.mean(v[ok] ** 2)) if ok.any() else 0.0
        out_v[i] = v / math.sqrt(ms) if ms > 0 else v
        out_m[i] = ok
    return out_v, out_m


def _spectra(values: np.ndarray, mask: np.ndarray, size: int, workers: int) -> np.ndarray:
    """rfft2 (zero-padded to size) of values, squares and mask: (..., 3, size, size // 2 + 1)."""
    stack = np.stack([values, values * values, mask], axis=-3)
    return sfft.rfft2(stack, s=(size, size), workers=workers).astype(np.complex64, copy=False)


def _fixed_spectra(level: _Level, cache: dict, size: int, workers: int) -> np.ndarray:
    key = ("fixed", level.pixel_um, size)
    spec = cache.get(key)
    if spec is None:
        v, m = _rotated(level, np.array([0.0]))
        spec = _spectra(v[0], m[0], size, workers)
        cache[key] = spec
    return spec


def _stack_spectra(level: _Level, cache: dict, step: float, size: int, workers: int):
    key = ("stack", level.pixel_um, step, size)
    hit = cache.get(key)
    if hit is None:
        angles = np.arange(0.0, 360.0 - 1e-9, step)
        rkey = ("rotated", level.pixel_um, step)
        if rkey not in cache:
            cache[rkey] = _rotated(level, angles)
        v, m = cache[rkey]
        # kept conjugated: the stack is always the moving side of `_ncc_window`
        hit = (angles, np.conj(_spectra(v, m, size, workers)), m.sum(axis=(1, 2)))
        cache[key] = hit
    return hit


def _ncc_window(spec_a, spec_b, size, index, min_n, workers, exact=True, conjugated=False):
    """Masked NCC of moving (spec_a: (k, 3, ...)) against fixed (spec_b: (3, ...)) at the
    circular correlation lags ``index`` (both axes); corr[t] = sum_p A(p) B(p + t).
    Returns (k, len(index), len(index)).

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
    return np.where(ok, num / np.where(ok, den, 1.0), -1.0)


def _parabolic(ym: float, y0: float, yp: float) -> float:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, ym), (0, y0), (1, yp)."""
    den = ym - 2.0 * y0 + yp
    if not np.isfinite(den) or den >= 0:
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


def _fft_size(la: _Level, lb: _Level, s: int) -> int:
    """Smallest fast FFT side free of wrap-around for shifts up to ``s`` pixels."""
    ha, hb = _half(la), _half(lb)
    return sfft.next_fast_len(max(ha + hb + s + 1, 2 * max(ha, hb) + 1), True)


def _as_template(x: Any, opts: dict[str, Any], role: str) -> AlignmentTemplate:
    if isinstance(x, AlignmentTemplate):
        for key in _TEMPLATE_KEYS:
            if abs(x.options[key] - float(opts[key])) > 1e-9:
                raise ValueError(
                    f"{role} ({x.name}) was prepared with {key}={x.options[key]:g} but this "
                    f"alignment asks for {opts[key]:g}; prepare it again with the same options"
                )
        return x
    if isinstance(x, Scan):
        return prepare_alignment(x, **{k: opts[k] for k in _TEMPLATE_KEYS})
    raise TypeError(f"{role} must be a Scan or an AlignmentTemplate, got {type(x).__name__}")


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
    workers = int(opts["workers"])
    step = float(opts["angle_step_deg"])
    la, lb = ta.search, tb.search
    s = math.ceil(opts["max_shift_um"] / la.pixel_um)
    size = size or _fft_size(la, lb, s)
    angles, spec_a, n_a = _stack_spectra(la, ta._cache, step, size, workers)
    spec_b = _fixed_spectra(lb, tb._cache, size, workers)
    # lag t on the canvases <-> shift d of a's centre onto b's centre: d = t + ha - hb
    lag0 = _half(la) - _half(lb)
    index = (np.arange(-s, s + 1) - lag0) % size
    min_n = max(4.0, opts["min_overlap"] * min(float(np.median(n_a)), float(lb.n_valid)))
    ncc = _ncc_window(
        spec_a, spec_b, size, index, min_n, workers, exact=opts["exact_search"], conjugated=True
    )
    flat = ncc.reshape(len(angles), -1)
    best = flat.argmax(axis=1)
    curve = flat[np.arange(len(angles)), best]
    return _AngleScan(angles, curve, best, s, size)


def _align_templates(
    ta: AlignmentTemplate,
    tb: AlignmentTemplate,
    n: int,
    opts: dict[str, Any],
    size=None,
    scan: _AngleScan | None = None,
) -> list[Pose]:
    """Poses of ``tb`` relative to ``ta``. ``ta`` is the one rotated (its stack is cached)."""
    workers = int(opts["workers"])
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
        if all(_angle_diff(angles[p], angles[q]) >= sep for q in chosen):
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
    fsize = size if fa is la and fb is lb else _fft_size(fa, fb, fs)
    va, ma = _rotated(fa, eval_angles)
    spec_fa = _spectra(va, ma, fsize, workers)
    spec_fb = _fixed_spectra(fb, tb._cache, fsize, workers)
    findex = (np.arange(-fs, fs + 1) - (_half(fa) - _half(fb))) % fsize
    min_fn = max(4.0, opts["min_overlap"] * min(float(np.median(ma.sum(axis=(1, 2)))), fb.n_valid))
    fncc = _ncc_window(spec_fa, spec_fb, fsize, findex, min_fn, workers, exact=True)
    w = math.ceil(ratio) + 1  # search the refined map near the coarse peak
    poses = []
    for c, (cy, cx) in enumerate(cand_shift):
        y0, x0 = round(cy) + fs, round(cx) + fs
        ylo, yhi = max(0, y0 - w), min(2 * fs + 1, y0 + w + 1)
        xlo, xhi = max(0, x0 - w), min(2 * fs + 1, x0 + w + 1)
        peaks_c = []  # (score, py, px) per evaluated angle of this candidate
        for j in range(len(offsets)):
            sub = fncc[c * len(offsets) + j, ylo:yhi, xlo:xhi]
            jy, jx = np.unravel_index(int(sub.argmax()), sub.shape)
            peaks_c.append((float(sub[jy, jx]), jy + ylo, jx + xlo))
        j = max(range(len(offsets)), key=lambda i: peaks_c[i][0])
        score, py, px = peaks_c[j]
        if score <= -1:
            continue
        theta_a = float(eval_angles[c * len(offsets) + j])
        if len(offsets) == 3 and j == 1:
            theta_a += delta * _parabolic(peaks_c[0][0], score, peaks_c[2][0])
        m = fncc[c * len(offsets) + j]
        dy = _parabolic(m[py - 1, px], m[py, px], m[py + 1, px]) if 0 < py < 2 * fs else 0.0
        dx = _parabolic(m[py, px - 1], m[py, px], m[py, px + 1]) if 0 < px < 2 * fs else 0.0
        shift_um = np.array([py - fs + dy, px - fs + dx]) * fa.pixel_um
        # found: a rotated by theta_a then shifted lands on b; invert for b relative to a
        poses.append(invert_pose(Pose(theta_a % 360.0, *map(float, shift_um), score)))
    poses.sort(key=lambda p: -p.score)
    return poses[:n]


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


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
    opts = _check_options(options)
    ta = _as_template(a, opts, "a")
    tb = _as_template(b, opts, "b")
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
    opts = _check_options(options)
    ta = _as_template(a, opts, "a")
    tb = _as_template(b, opts, "b")
    tm = _as_template(b_mirror, opts, "b_mirror")
    s = math.ceil(opts["max_shift_um"] / ta.search.pixel_um)
    size = max(_fft_size(ta.search, t.search, s) for t in (tb, tm))
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
    opts = _check_options(options)
    ta = _as_template(a, opts, "query")
    tbs = [_as_template(b, opts, f"candidate {i}") for i, b in enumerate(candidates)]
    out: list[list[Pose]] = []
    if not tbs:
        return out
    # one FFT size for the batch so the query's rotated stack is computed once
    s = math.ceil(opts["max_shift_um"] / ta.search.pixel_um)
    size = max(_fft_size(ta.search, tb.search, s) for tb in tbs)
    for i, tb in enumerate(tbs):
        out.append(_align_templates(ta, tb, int(n), opts, size=size))
        if progress is not None:
            progress(i + 1, len(tbs))
    return out
