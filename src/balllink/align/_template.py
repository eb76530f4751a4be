"""Per-scan work of the coarse alignment (`balllink.align`): the alignment options, the
reduced grids of a scan (`AlignmentTemplate`, built by `prepare_alignment`), and the
rotated copies and spectra computed from them on demand and cached in the template.

A grid is a NaN-aware block mean of the heights (`balllink._grid.block_mean`, 50 µm by
default) high-passed by Gaussian local-mean removal (`balllink._grid.nan_gaussian`, the
normalised convolution) and scaled to zero mean and unit variance over its valid pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import scipy.fft as sfft

from .._grid import block_mean, nan_gaussian, warp_weighted
from .._scan import Scan
from ..errors import PreprocessError
from ._pose import rotation_matrix

__all__ = [
    "DEFAULTS",
    "MIN_VALID_CELLS",
    "TEMPLATE_KEYS",
    "AlignmentTemplate",
    "Level",
    "RotatedStack",
    "as_template",
    "check_options",
    "fft_size",
    "fixed_spectra",
    "half",
    "prepare_alignment",
    "rotated",
    "spectra",
    "stack_spectra",
]

DEFAULTS: dict[str, Any] = {
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
TEMPLATE_KEYS = ("search_um", "refine_um", "highpass_um")
MIN_VALID_CELLS = 30  # a level with fewer valid coarse pixels is unusable


@dataclass(frozen=True, eq=False)
class Level:
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
    search: Level
    refine: Level
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


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """`DEFAULTS` updated with ``options``, checked (the error names the bad option)."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(
            f"unknown alignment option(s) {sorted(unknown)}; valid options: {sorted(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **options}
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


def make_level(
    heights: np.ndarray, mask: np.ndarray, spacing: float, target_um: float, highpass_um: float
) -> Level:
    """The grid of ``heights`` at about ``target_um`` per pixel (blocks at least half
    valid), high-passed at ``highpass_um`` (Gaussian sigma, 0: not) and normalised."""
    factor = max(1, round(target_um / spacing))
    ny, nx = heights.shape
    if factor > 1:
        # blocks cut by the border count too (padded with invalid points), if half valid
        pad = ((0, -ny % factor), (0, -nx % factor))
        mean, share = block_mean(np.pad(heights, pad), np.pad(mask, pad), factor)
        ok = share >= 0.5
        values = np.where(ok, mean, 0.0).astype(np.float64)
    else:
        ok = np.asarray(mask, dtype=bool).copy()
        values = np.where(ok, heights, 0.0).astype(np.float64)
    n_valid = int(np.count_nonzero(ok))
    off = (factor - 1) / 2
    centre = (((ny - 1) / 2 - off) / factor, ((nx - 1) / 2 - off) / factor)
    if n_valid and highpass_um:
        # NaN-aware Gaussian high-pass: local means ~0 so the fast NCC form is accurate
        local, _ = nan_gaussian(values, ok, highpass_um / (factor * spacing), dtype=np.float64)
        values = np.where(ok, values - local, 0.0)
    if n_valid:
        sel = values[ok]
        values = np.where(ok, (values - sel.mean()) / (sel.std() + 1e-12), 0.0)
        yy, xx = np.nonzero(ok)
        radius = float(np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2).max()) + 1.0
    else:
        radius = 1.0
    return Level(
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
    opts = check_options(options)
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
        level = make_level(heights, mask, dy, opts[key], opts["highpass_um"])
        if level.n_valid < MIN_VALID_CELLS:
            raise PreprocessError(
                f"{scan.name}: only {level.n_valid} valid pixels at the {opts[key]:g} µm "
                f"alignment grid (need {MIN_VALID_CELLS}); the scan has {scan.n_valid} "
                "valid points — is it empty or masked out?"
            )
        if levels and level.pixel_um == levels[0].pixel_um:
            level = levels[0]  # same grid: share it (and its cached spectra)
        levels.append(level)
    return AlignmentTemplate(
        name=scan.name,
        spacing_um=dy,
        shape=scan.shape,
        options={k: float(opts[k]) for k in TEMPLATE_KEYS},
        search=levels[0],
        refine=levels[1],
    )


def half(level: Level) -> int:
    """Half side of the square canvas holding the level at any rotation."""
    return math.ceil(level.radius) + 1


def rotated(level: Level, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and masks of ``level`` rotated by each angle about its centre, on a square
    canvas of side ``2 h + 1`` (``h = half(level)``) whose pixel (h, h) is the centre.
    Values are renormalised to unit mean square over the valid pixels of each rotation."""
    h = half(level)
    side = 2 * h + 1
    out_v = np.empty((len(angles), side, side), np.float32)
    out_m = np.empty((len(angles), side, side), np.float32)
    cc = np.array([h, h], float)
    for i, angle in enumerate(angles):
        # output o - cc = R (i - centre)  =>  input i = R^T (o - cc) + centre
        rt = rotation_matrix(float(angle)).T
        offset = np.asarray(level.centre) - rt @ cc
        warped = warp_weighted(level.values, level.mask, rt, offset, output_shape=(side, side))
        ok = warped.weight > 0.999
        v = np.where(ok, warped.values, 0.0)
        # interpolation smooths: restore unit mean square so energies estimate overlap sizes
        ms = float(np.mean(v[ok] ** 2)) if ok.any() else 0.0
        out_v[i] = v / math.sqrt(ms) if ms > 0 else v
        out_m[i] = ok
    return out_v, out_m


def spectra(
    values: np.ndarray, mask: np.ndarray, size: int, workers: int, *, dtype=np.complex64
) -> np.ndarray:
    """rfft2 (zero-padded to size) of values, squares and mask: (..., 3, size, size // 2 + 1)."""
    stack = np.stack([values, values * values, mask], axis=-3)
    return sfft.rfft2(stack, s=(size, size), workers=workers).astype(dtype, copy=False)


def fixed_spectra(level: Level, cache: dict, size: int, workers: int) -> np.ndarray:
    """Spectra of the level as it is (the fixed side of the NCC), cached in ``cache``."""
    key = ("fixed", level.pixel_um, size)
    spec = cache.get(key)
    if spec is None:
        v, m = rotated(level, np.array([0.0]))
        spec = spectra(v[0], m[0], size, workers)
        cache[key] = spec
    return spec


class RotatedStack(NamedTuple):
    """A level rotated over the full circle: the angles, the conjugated spectra of each
    rotation (k, 3, size, size // 2 + 1) and each rotation's valid-pixel count."""

    angles: np.ndarray
    spectra: np.ndarray
    n_valid: np.ndarray


def stack_spectra(level: Level, cache: dict, step: float, size: int, workers: int) -> RotatedStack:
    """The level rotated every ``step`` degrees (the moving side of the NCC), cached."""
    key = ("stack", level.pixel_um, step, size)
    hit = cache.get(key)
    if hit is None:
        angles = np.arange(0.0, 360.0 - 1e-9, step)
        rkey = ("rotated", level.pixel_um, step)
        if rkey not in cache:
            cache[rkey] = rotated(level, angles)
        v, m = cache[rkey]
        # kept conjugated: the stack is always the moving side of the NCC
        hit = RotatedStack(angles, np.conj(spectra(v, m, size, workers)), m.sum(axis=(1, 2)))
        cache[key] = hit
    return hit


def fft_size(la: Level, lb: Level, s: int) -> int:
    """Smallest fast FFT side free of wrap-around for shifts up to ``s`` pixels."""
    ha, hb = half(la), half(lb)
    return sfft.next_fast_len(max(ha + hb + s + 1, 2 * max(ha, hb) + 1), True)


def as_template(x: Any, opts: dict[str, Any], role: str) -> AlignmentTemplate:
    """``x`` as a template for ``opts``: a template is checked, a scan is prepared."""
    if isinstance(x, AlignmentTemplate):
        for key in TEMPLATE_KEYS:
            if abs(x.options[key] - float(opts[key])) > 1e-9:
                raise ValueError(
                    f"{role} ({x.name}) was prepared with {key}={x.options[key]:g} but this "
                    f"alignment asks for {opts[key]:g}; prepare it again with the same options"
                )
        return x
    if isinstance(x, Scan):
        return prepare_alignment(x, **{k: opts[k] for k in TEMPLATE_KEYS})
    raise TypeError(f"{role} must be a Scan or an AlignmentTemplate, got {type(x).__name__}")
