"""Simulated casings with ground truth (issue 2).

A simulated firearm carries a *breech-face signature*: a band-limited, multi-scale random
surface plus class marks (parallel filing lines, circular machining arcs, or granular
texture). Each firing reproduces part of that signature on a casing, rotated by an
arbitrary angle and shifted, with partial contact, dropouts and fresh texture of its own.
Every scan comes with its truth (firearm, pose, the noise-free surface it carries, the
usable breech-face mask), so every later stage can be tested on planted answers.

Conventions (all public functions)
----------------------------------
*Grid.* Pixel ``(i, j)`` of a scan of shape ``(ny, nx)`` and spacing ``s`` µm lies at
``(y, x) = (i * s, j * s)`` µm; the *image centre* is pixel ``((ny - 1) / 2, (nx - 1) / 2)``.
Rows grow downwards, as in every image display.

*Pose.* A firearm's signature ``S`` is an image on the scan grid centred on the image
centre. Firing ``k`` is ``rotation_deg = θ`` (uniform in [0, 360)) and ``shift_um =
(dy, dx)``; the surface it carries is::

    scan = scipy.ndimage.shift(skimage.transform.rotate(S, θ), (dy / s, dx / s))

i.e. the signature rotated by ``+θ`` degrees counter-clockwise *as displayed* (skimage's
convention, rows down) about the image centre, then moved by ``dy`` µm down and ``dx`` µm
right. A feature at ``q = (y, x)`` µm from the image centre in ``S`` appears at
``R(θ) q + (dy, dx)`` with ``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]`` acting on
``(y, x)``. Two firings ``a``, ``b`` of one firearm are related by `relative_pose`:
``scan_b = shift(rotate(scan_a, θb - θa), t_b - R(θb - θa) t_a)``.

*Handedness.* A simulated scan is stored as the casing is viewed (``meta["handedness"] ==
"viewed"``). An export with the other handedness (`mirror`, ``casings(mirrored=...)``) is
``np.flipud`` of the viewed array (``meta["handedness"] == "mirrored"``, truth
``mirrored=True``): row ``i`` becomes row ``ny - 1 - i``, about the same image centre.
Its ``rotation_deg`` / ``shift_um`` still give the pose of the casing as viewed; the other
truth entries (centres, masks, ...) describe the stored array. `relative_pose` gives the
pose of ``b`` brought to ``a``'s handedness (``np.flipud(b)`` when exactly one of the two
is mirrored, as `balllink.compare` reports with ``Comparison.mirrored``) relative to ``a``
as stored: the viewed pose ``(θ, dy, dx)`` when ``a`` is viewed, ``(-θ, -dy, dx)`` when
``a`` is mirrored (flipping conjugates a rotation into its inverse).

*Cut.* ``geometry="varied"`` keeps every firing's surface and changes only which pixels
are kept: the breech-face outline and firing-pin hole vary per casing like real exports
(off-centre, touching or open holes, missing sectors, elliptical or clipped outlines; see
`casings`). `crop` cuts small windows, `annotations` makes FiX3P-like annotation masks.

Nothing here is random without a seed: the firearm signature comes from
``np.random.default_rng([seed, firearm_id])``, its manufacturing-batch component from
``np.random.default_rng([seed, 7919, batch_size, batch_id])`` and firing ``k`` from
``np.random.default_rng([seed, firearm_id, k])``, so any casing can be regenerated alone.
The varied cut, the mirrored choice, `cut_geometries`, `crop` and `annotations` draw from
separate streams ``np.random.default_rng([seed, a, b, 104729, kind])`` (kind 1-5), so the
options never change the surfaces of the default ones.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from ._scan import Scan
from ._simulate_geometry import (
    ANNOTATION_NAMES,
    CUT_KINDS,
    STREAM_CUT,
    STREAM_CUTS,
    STREAM_MIRROR,
    Cut,
    annotations,
    annulus_cut,
    crop,
    draw_cut,
    flip_truth,
    mirror,
    stream,
)

__all__ = [
    "ANNOTATION_NAMES",
    "CUT_KINDS",
    "DIFFICULTIES",
    "GEOMETRIES",
    "TRUTH_DTYPE",
    "Difficulty",
    "SimulatedSet",
    "annotations",
    "casings",
    "crop",
    "cut_geometries",
    "iter_casings",
    "mirror",
    "relative_pose",
]

logger = logging.getLogger(__name__)

#: dtype of the truth table (one row per casing).
TRUTH_DTYPE = np.dtype(
    [
        ("casing_id", np.int64),
        ("firearm_id", np.int64),
        ("rotation_deg", np.float64),
        ("shift_y_um", np.float64),
        ("shift_x_um", np.float64),
        ("mirrored", np.bool_),
    ]
)

#: Breech-face geometries of `casings`: ``"annulus"`` (default: a circle minus a nearly
#: centred circle) and ``"varied"`` (a new cut per casing, kinds `CUT_KINDS`).
GEOMETRIES = ("annulus", "varied")

_BATCH_TAG = 7919  # separates the batch random streams from the firearm streams
_RMS_UM = 1.5  # RMS height of the breech-face surface, µm (Fadul after band-pass: 1.3-1.8)
_LAMBDA_SHORT_UM = 20.0  # signature band: Gaussian low-pass cutoff (raised to 2.5 px)
_LAMBDA_LONG_UM = 400.0  # signature band: Gaussian high-pass cutoff
_SPECTRAL_SLOPE = 1.5  # amplitude ∝ f**-slope inside the band (Fadul's spectrum)
_FRESH_SLOPE = 1.0  # per-firing texture is finer: coarse scales reproduce better
_MARKS_SLOPE = 1.0  # amplitude ∝ f**-slope of the line and arc profiles
_MARKS_SHARE = 0.5  # share of a signature's variance carried by its class marks
_STYLES = ("filing", "arcs", "granular")
_PREPARED_SPACING_UM = 6.25
_PREPARED_SHAPE = (545, 545)
_RAW_SPACING_UM = 3.125
_RAW_FIELD_UM = 4375.0  # raw field side at the default geometry (1400 px at 3.125 µm)
_PRIMER_RADIUS_UM = 1600.0  # breech-face outer radius at the default geometry
_CACHE_SIZE = 4  # firearm signatures kept (casings come firearm by firearm)


# --------------------------------------------------------------------------- difficulty


@dataclass(frozen=True)
class Difficulty:
    """What makes a simulated set easy or hard to link.

    Parameters
    ----------
    reproduction : float in (0, 1]
        Share of the breech-face surface variance, where the firearm made contact, that
        comes from the firearm signature; the rest is fresh texture of this casing (same
        band). Two firings of one firearm compared at the true relative pose correlate
        about ``reproduction`` over their common contact region.
    shared : float in [0, 1)
        Share of a firearm signature's variance that comes from its manufacturing batch
        (subclass marks shared by consecutively made firearms). Two firings of different
        firearms of one batch, at their true relative pose, correlate about
        ``reproduction * shared``; firearms of different batches about 0.
    batch_size : int >= 1
        Firearms per batch: firearm ``f`` belongs to batch ``f // batch_size``. The batch
        also fixes the class-mark style (filing lines, arcs or granular texture).
    contact : float in (0, 1]
        Mean share of the breech-face annulus that the firearm marks in a firing (drawn
        per firing as ``1 - (1 - contact) * U(0.5, 1.5)``); outside it the casing shows
        only its own texture.
    dropout : float in [0, 1)
        Mean share of the annulus lost to missing-data blobs (NaN), drawn per firing
        uniformly in ``[0.5, 1.5] * dropout``.
    noise_um : float >= 0
        White measurement noise added to the heights, µm RMS (not in ``clean_surface``).
    shift_sd_um : float >= 0
        SD of each shift component, µm (truncated at 3 SD).
    """

    reproduction: float
    shared: float
    batch_size: int
    contact: float
    dropout: float
    noise_um: float
    shift_sd_um: float

    def __post_init__(self) -> None:
        checks = {
            "reproduction": 0.0 < self.reproduction <= 1.0,
            "shared": 0.0 <= self.shared < 1.0,
            "batch_size": int(self.batch_size) >= 1,
            "contact": 0.0 < self.contact <= 1.0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "noise_um": self.noise_um >= 0.0,
            "shift_sd_um": self.shift_sd_um >= 0.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"Difficulty.{name}={getattr(self, name)!r} is out of range; see the "
                    "Difficulty docstring for the allowed interval"
                )
        object.__setattr__(self, "batch_size", int(self.batch_size))

    @classmethod
    def from_value(cls, value: float) -> Difficulty:
        """Interpolate linearly between "easy" (0.0) and "hard" (1.0).

        ``batch_size`` is rounded to the nearest integer; 0.5 is "medium".
        """
        d = float(value)
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"difficulty as a number must lie in [0, 1], got {value!r}")
        easy, hard = DIFFICULTIES["easy"], DIFFICULTIES["hard"]
        mix = {
            f.name: getattr(easy, f.name) + d * (getattr(hard, f.name) - getattr(easy, f.name))
            for f in dataclasses.fields(cls)
        }
        mix["batch_size"] = round(mix["batch_size"])
        return cls(**mix)


#: Named difficulty settings (see `Difficulty` for what each field does).
#:
#: - ``"easy"``: every firing reproduces its firearm almost fully; no batch sharing.
#: - ``"medium"``: ``Difficulty.from_value(0.5)``.
#: - ``"hard"``: 40 % of the surface is fresh texture, three quarters contact, 10 %
#:   dropouts, and batches of 10 consecutively made firearms sharing 25 % of their
#:   signature (aimed at sets like the consecutively made Ruger SR9 slides).
#: - ``"fadul-like"``: aimed at the Fadul set (10 consecutively made slides).
#:
#: Measured (seed 1, 6 firearms x 3 firings, 272 x 272 px at 12.5 µm; Pearson correlation
#: of the heights at the true relative pose; KM = same firearm, batch = same batch):
#: easy KM 0.90-0.94; medium KM 0.52-0.68, batch 0.08-0.18; hard KM 0.20-0.46, batch
#: 0.09-0.22; fadul-like KM 0.80-0.86, batch 0.13-0.27.
#: Whole-surface masked correlation maximised over 360° (3° steps) and all shifts at
#: 25 µm, 12 KM and 12 KNM pairs of a 10 x 3 set at the default geometry: fadul-like KM
#: 0.59-0.82, KNM 0.26-0.37 (the real Fadul scans, same method: KM 0.66-0.85, KNM
#: 0.27-0.47); medium KM 0.38-0.61, KNM 0.23-0.31; hard KM 0.25-0.40, KNM 0.23-0.35.
DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        reproduction=0.95,
        shared=0.0,
        batch_size=1,
        contact=0.98,
        dropout=0.01,
        noise_um=0.02,
        shift_sd_um=30.0,
    ),
    "hard": Difficulty(
        reproduction=0.6,
        shared=0.25,
        batch_size=10,
        contact=0.75,
        dropout=0.1,
        noise_um=0.1,
        shift_sd_um=120.0,
    ),
    "fadul-like": Difficulty(
        reproduction=0.92,
        shared=0.12,
        batch_size=10,
        contact=0.95,
        dropout=0.05,
        noise_um=0.05,
        shift_sd_um=60.0,
    ),
}
DIFFICULTIES["medium"] = Difficulty.from_value(0.5)


def _difficulty(value: str | float | Difficulty) -> tuple[str, Difficulty]:
    if isinstance(value, Difficulty):
        return "custom", value
    if isinstance(value, str):
        if value not in DIFFICULTIES:
            raise ValueError(
                f"unknown difficulty {value!r}; use one of {sorted(DIFFICULTIES)}, a number "
                "in [0, 1] or a Difficulty(...)"
            )
        return value, DIFFICULTIES[value]
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
        return f"{float(value):g}", Difficulty.from_value(float(value))
    raise ValueError(
        f"difficulty must be a name {sorted(DIFFICULTIES)}, a number in [0, 1] or a "
        f"Difficulty, got {value!r}"
    )


# ------------------------------------------------------------------------------ fields


@functools.lru_cache(maxsize=64)
def _transfer(
    shape: tuple[int, int], spacing: float, short_um: float, long_um: float, slope: float
) -> np.ndarray:
    """Band-pass amplitude for irfft2 coefficients: Gaussian (ISO) roll-offs, f**-slope."""
    fy = scipy.fft.fftfreq(shape[0], d=spacing)[:, None]
    fx = scipy.fft.rfftfreq(shape[1], d=spacing)[None, :]
    f = np.hypot(fy, fx)
    alpha2 = math.log(2.0) / math.pi  # Gaussian filter constant: 50 % at the cutoff
    low = np.exp(-math.pi * alpha2 * (short_um * f) ** 2)
    high = 1.0 - np.exp(-math.pi * alpha2 * (long_um * f) ** 2)
    with np.errstate(divide="ignore"):
        power = np.where(f > 0, f, np.inf) ** -slope
    h = (low * high * power).astype(np.float32)
    h.setflags(write=False)
    return h


def _band_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    short_um: float,
    long_um: float,
    slope: float = 0.0,
) -> np.ndarray:
    """A periodic Gaussian random field with the given band, unit RMS, float32."""
    h = _transfer(shape, float(spacing), float(short_um), float(long_um), float(slope))
    coef = np.empty(h.shape, dtype=np.complex64)
    coef.real = rng.standard_normal(h.shape, dtype=np.float32)
    coef.imag = rng.standard_normal(h.shape, dtype=np.float32)
    coef *= h
    field = scipy.fft.irfft2(coef, s=shape)
    field -= field.mean()
    std = float(field.std())
    if std > 0:
        field /= std
    return field.astype(np.float32, copy=False)


def _profile(
    rng: np.random.Generator,
    n: int,
    spacing: float,
    short_um: float,
    long_um: float,
    slope: float = 0.0,
) -> np.ndarray:
    """A 1-D band-limited unit-RMS profile of ``n`` samples (for lines and arcs)."""
    f = scipy.fft.rfftfreq(n, d=spacing)
    alpha2 = math.log(2.0) / math.pi
    h = np.exp(-math.pi * alpha2 * (short_um * f) ** 2) * (
        1.0 - np.exp(-math.pi * alpha2 * (long_um * f) ** 2)
    )
    with np.errstate(divide="ignore"):
        h = h * np.where(f > 0, f, np.inf) ** -slope
    coef = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * h
    p = scipy.fft.irfft(coef, n=n)
    p -= p.mean()
    return p / max(float(p.std()), 1e-12)


def _normalise(z: np.ndarray) -> np.ndarray:
    z = z - z.mean()
    std = float(z.std())
    return (z / std if std > 0 else z).astype(np.float32, copy=False)


def _marks(
    rng: np.random.Generator, style: str, shape: tuple[int, int], spacing: float, short: float
) -> np.ndarray:
    """Class marks on a signature grid (unit RMS): filing lines, arcs or grains."""
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * spacing
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * spacing
    half = 0.5 * math.hypot(ny, nx) * spacing
    if style == "filing":
        phi = rng.uniform(0.0, math.pi)
        u = y[:, None] * math.sin(phi) + x[None, :] * math.cos(phi)
        v = y[:, None] * math.cos(phi) - x[None, :] * math.sin(phi)
        n = int(2 * half / spacing) + 8
        grid = np.linspace(-half - 4 * spacing, half + 4 * spacing, n)
        lines = _profile(rng, n, grid[1] - grid[0], short, 300.0, _MARKS_SLOPE)
        strength = 1.0 + 0.5 * _profile(rng, n, grid[1] - grid[0], 400.0, 3000.0)
        z = np.interp(u, grid, lines) * np.interp(v, grid, strength)
    elif style == "arcs":
        dist = rng.uniform(0.6, 3.0) * half
        ang = rng.uniform(0.0, 2.0 * math.pi)
        cy, cx = dist * math.sin(ang), dist * math.cos(ang)
        r = np.hypot(y[:, None] - cy, x[None, :] - cx)
        r0, r1 = float(r.min()), float(r.max())
        n = int((r1 - r0) / spacing) + 8
        grid = np.linspace(r0 - 2 * spacing, r1 + 2 * spacing, n)
        arcs = _profile(rng, n, grid[1] - grid[0], short, 300.0, _MARKS_SLOPE)
        t = np.arctan2(y[:, None] - cy, x[None, :] - cx)
        m = 64
        ring = rng.standard_normal(m)
        ring = ndi.gaussian_filter1d(ring, 2.0, mode="wrap")
        ring = 1.0 + 0.5 * ring / max(float(ring.std()), 1e-12)
        tg = np.linspace(-math.pi, math.pi, m + 1)
        z = np.interp(r, grid, arcs) * np.interp(t, tg, np.append(ring, ring[0]))
    elif style == "granular":
        g = _band_field(rng, shape, spacing, max(short, 30.0), 300.0, _SPECTRAL_SLOPE)
        z = np.tanh(2.0 * g)
    else:  # pragma: no cover - guarded by _STYLES
        raise ValueError(style)
    return _normalise(np.asarray(z, dtype=np.float32))


def _rotation(theta_deg: float) -> np.ndarray:
    """R(θ) on (y, x) vectors: counter-clockwise as displayed (rows down)."""
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def _field(truth: Any, name: str) -> Any:
    """``truth[name]`` of a truth row or mapping, None when it has no such entry."""
    try:
        return truth[name]
    except (KeyError, ValueError, IndexError):
        return None


def _pose(truth: Any) -> tuple[float, np.ndarray, bool]:
    if _field(truth, "shift_y_um") is not None:
        t = np.array([truth["shift_y_um"], truth["shift_x_um"]], dtype=float)
    else:
        t = np.asarray(truth["shift_um"], dtype=float)
    return float(truth["rotation_deg"]), t, bool(_field(truth, "mirrored") or False)


def relative_pose(truth_a: Any, truth_b: Any) -> tuple[float, float, float]:
    """Pose of casing ``b`` relative to casing ``a`` of the same firearm.

    Parameters
    ----------
    truth_a, truth_b : truth rows, e.g. ``sims.truth[i]``, or mappings such as
        ``scan.meta["simulation"]`` (``rotation_deg``, and ``shift_y_um`` / ``shift_x_um``
        or ``shift_um``; ``mirrored`` is False when absent). The two scans must have one
        shape (two crops of one size relate exactly; see `crop`).

    Returns
    -------
    rotation_deg, dy_um, dx_um : float
        ``b' ≈ shift(rotate(a, rotation_deg), (dy_um, dx_um) / spacing)`` with skimage's
        ``rotate`` (counter-clockwise as displayed, about the image centre) and scipy's
        ``shift``; ``rotation_deg`` in [0, 360). ``a`` is the stored array of ``a`` and
        ``b'`` that of ``b`` brought to ``a``'s handedness: ``np.flipud(b)`` when exactly
        one of them is mirrored, else ``b`` itself. With ``(θ, dy, dx)`` the pose between
        the two casings as viewed, this is ``(θ, dy, dx)`` when ``a`` is viewed and
        ``(-θ mod 360, -dy, dx)`` when ``a`` is mirrored.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros(2, dtype=TRUTH_DTYPE)
    >>> t["rotation_deg"], t["shift_y_um"], t["shift_x_um"] = [10.0, 100.0], [0, 5.0], [0, -5.0]
    >>> tuple(round(v, 6) for v in relative_pose(t[0], t[1]))
    (90.0, 5.0, -5.0)
    >>> t["mirrored"] = [True, False]  # a stored flipped: compare it with flipud(b)
    >>> tuple(round(v, 6) for v in relative_pose(t[0], t[1]))
    (270.0, -5.0, -5.0)
    """
    ra, ta, mirrored_a = _pose(truth_a)
    rb, tb, _ = _pose(truth_b)
    delta = (rb - ra) % 360.0
    t = tb - _rotation(delta) @ ta
    if mirrored_a:
        return float(-delta % 360.0), float(-t[0]), float(t[1])
    return float(delta), float(t[0]), float(t[1])


# --------------------------------------------------------------------------- generator


@dataclass
class _Signature:
    coeffs: np.ndarray  # cubic-spline coefficients of the signature grid (grid-wrap)
    centre: np.ndarray  # (y, x) index of the signature origin on its grid
    hole_ratio: float  # firing-pin hole radius / breech-face outer radius
    hole_offset: np.ndarray  # hole centre in the signature frame, µm (y, x)
    style: str
    batch_id: int


@dataclass
class _Firing:
    """What one firing leaves on the whole grid, before the breech face is cut out."""

    firearm_id: int
    firing: int
    signature: _Signature
    rotation_deg: float
    shift_um: tuple[float, float]
    contact: float
    dropout: float
    surface: np.ndarray  # µm, the marks on the whole grid (no noise)
    noise: np.ndarray  # µm, white measurement noise
    lost: np.ndarray  # bool, dropout blobs
    annulus: np.ndarray  # bool, the default breech face
    cut: Cut  # the default breech face as a Cut
    rng: np.random.Generator  # the firing's stream, where the raw artefacts continue
    r_o: np.ndarray  # distance to the primer centre, µm
    r_h: np.ndarray  # distance to the hole centre, µm


class _Generator:
    """Everything fixed for one simulated set; produces casing after casing."""

    def __init__(
        self,
        *,
        seed: int,
        raw: bool,
        difficulty: str | float | Difficulty,
        shape: tuple[int, int] | None,
        spacing_um: float | tuple[float, float] | None,
        per_firearm: int,
        geometry: str = "annulus",
        mirrored: float = 0.0,
    ) -> None:
        self.seed = _check_seed(seed)
        self.raw = bool(raw)
        self.geometry = _check_geometry(geometry, self.raw)
        self.mirrored = _check_share(mirrored)
        self.difficulty_name, self.difficulty = _difficulty(difficulty)
        self.per_firearm = per_firearm
        self.spacing = _check_spacing(
            spacing_um, _RAW_SPACING_UM if self.raw else _PREPARED_SPACING_UM
        )
        if shape is None:
            if self.raw:
                n = round(_RAW_FIELD_UM / self.spacing)
                shape = (n, n)
            elif self.spacing == _PREPARED_SPACING_UM:
                shape = _PREPARED_SHAPE
            else:
                n = round(_PREPARED_SHAPE[0] * _PREPARED_SPACING_UM / self.spacing)
                shape = (n, n)
        self.shape = _check_shape(shape)
        field = min(self.shape) * self.spacing
        # breech-face outer radius (µm): the default geometry scaled with the field
        scale = _PRIMER_RADIUS_UM / (
            _RAW_FIELD_UM if self.raw else _PREPARED_SHAPE[0] * _PREPARED_SPACING_UM
        )
        self.radius = scale * field
        self.short = max(_LAMBDA_SHORT_UM, 2.5 * self.spacing)
        self.long = _LAMBDA_LONG_UM
        d = self.difficulty
        reach = 1.03 * self.radius + 3.0 * d.shift_sd_um + 0.02 * self.radius
        n = scipy.fft.next_fast_len(math.ceil(2.0 * reach / self.spacing) + 16, real=True)
        self.sig_shape = (n, n)
        self._cache: OrderedDict[int, _Signature] = OrderedDict()
        self._batch_cache: OrderedDict[int, tuple[str, np.ndarray]] = OrderedDict()

    # signature ----------------------------------------------------------------------

    def _surface(self, rng: np.random.Generator, style: str) -> np.ndarray:
        """Multi-scale random surface plus class marks, unit RMS, on the signature grid."""
        rough = _band_field(
            rng, self.sig_shape, self.spacing, self.short, self.long, _SPECTRAL_SLOPE
        )
        marks = _marks(rng, style, self.sig_shape, self.spacing, self.short)
        return _normalise(math.sqrt(1.0 - _MARKS_SHARE) * rough + math.sqrt(_MARKS_SHARE) * marks)

    def _batch(self, batch_id: int) -> tuple[str, np.ndarray]:
        hit = self._batch_cache.get(batch_id)
        if hit is not None:
            self._batch_cache.move_to_end(batch_id)
            return hit
        rng = np.random.default_rng([self.seed, _BATCH_TAG, self.difficulty.batch_size, batch_id])
        style = _STYLES[int(rng.integers(len(_STYLES)))]
        surface = self._surface(rng, style) if self.difficulty.shared > 0 else None
        self._batch_cache[batch_id] = (style, surface)
        while len(self._batch_cache) > 2:
            self._batch_cache.popitem(last=False)
        return style, surface

    def signature(self, firearm_id: int) -> _Signature:
        hit = self._cache.get(firearm_id)
        if hit is not None:
            self._cache.move_to_end(firearm_id)
            return hit
        d = self.difficulty
        batch_id = firearm_id // d.batch_size
        style, batch_surface = self._batch(batch_id)
        rng = np.random.default_rng([self.seed, firearm_id])
        hole_ratio = rng.uniform(0.70, 0.78)
        offset = rng.uniform(0.06, min(0.22, 0.96 - hole_ratio)) * self.radius
        ang = rng.uniform(0.0, 2.0 * math.pi)
        own = self._surface(rng, style)
        if batch_surface is not None:
            own = _normalise(math.sqrt(1.0 - d.shared) * own + math.sqrt(d.shared) * batch_surface)
        coeffs = ndi.spline_filter(own, order=3, mode="grid-wrap", output=np.float32)
        sig = _Signature(
            coeffs=coeffs,
            centre=(np.array(self.sig_shape, dtype=float) - 1.0) / 2.0,
            hole_ratio=hole_ratio,
            hole_offset=offset * np.array([math.sin(ang), math.cos(ang)]),
            style=style,
            batch_id=batch_id,
        )
        self._cache[firearm_id] = sig
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return sig

    # firing -------------------------------------------------------------------------

    def casing(self, firearm_id: int, firing: int, *, keep_arrays: bool) -> Scan:
        fired = self._fire(firearm_id, firing)
        cut = fired.cut
        if self.geometry == "varied":
            rng = stream(self.seed, firearm_id, firing, STREAM_CUT)
            cut = draw_cut(rng, self.shape, self.spacing)
        flip = False
        if self.mirrored > 0.0:
            flip = bool(
                stream(self.seed, firearm_id, firing, STREAM_MIRROR).random() < self.mirrored
            )
        return self._scan(fired, cut, mirrored=flip, keep_arrays=keep_arrays)

    def _fire(self, firearm_id: int, firing: int) -> _Firing:
        """The surface a firing leaves, on the whole grid, before any cut."""
        d = self.difficulty
        sp = self.spacing
        ny, nx = self.shape
        sig = self.signature(firearm_id)
        rng = np.random.default_rng([self.seed, firearm_id, firing])
        theta = float(rng.uniform(0.0, 360.0))
        shift = np.clip(rng.normal(0.0, d.shift_sd_um, 2), -3 * d.shift_sd_um, 3 * d.shift_sd_um)
        centre_px = (np.array(self.shape, dtype=float) - 1.0) / 2.0
        rot = _rotation(theta)
        # geometry of this casing (µm, from pixel (0, 0))
        r_out = self.radius * (1.0 + 0.01 * rng.standard_normal())
        c_out = centre_px * sp + 0.01 * self.radius * rng.standard_normal(2)
        r_hole = sig.hole_ratio * self.radius * (1.0 + 0.005 * rng.standard_normal())
        c_hole = (
            centre_px * sp + rot @ sig.hole_offset + shift
        ) + 0.004 * self.radius * rng.standard_normal(2)
        contact = float(np.clip(1.0 - (1.0 - d.contact) * rng.uniform(0.5, 1.5), 0.05, 1.0))
        dropout = float(d.dropout * rng.uniform(0.5, 1.5))

        # the signature under this pose: scan(p) = S(R(-θ) (p - t))
        matrix = rot.T
        offset = sig.centre - matrix @ (centre_px + shift / sp)
        carried = ndi.affine_transform(
            sig.coeffs,
            matrix,
            offset=offset,
            output_shape=self.shape,
            order=3,
            mode="grid-wrap",
            prefilter=False,
            output=np.float32,
        )
        yy = (np.arange(ny, dtype=np.float32) * sp)[:, None]
        xx = (np.arange(nx, dtype=np.float32) * sp)[None, :]
        r_o = np.hypot(yy - c_out[0], xx - c_out[1])
        r_h = np.hypot(yy - c_hole[0], xx - c_hole[1])
        annulus = (r_o <= r_out) & (r_h >= r_hole)

        # partial contact: a smooth weight, 1 on the marked share of the annulus
        low = _band_field(rng, self.shape, sp, 300.0, 2500.0)
        if contact < 1.0:
            vals = low[annulus]
            q = float(np.quantile(vals, 1.0 - contact)) if vals.size else 0.0
            weight = np.clip((low - q) / 0.3 + 0.5, 0.0, 1.0)
        else:
            weight = np.ones(self.shape, dtype=np.float32)
        fresh = _band_field(rng, self.shape, sp, self.short, self.long, _FRESH_SLOPE)
        rep = d.reproduction
        a = np.float32(math.sqrt(rep)) * weight
        b = np.sqrt(np.clip(1.0 - a * a, 0.0, 1.0))
        surface = (_RMS_UM * (a * carried + b * fresh)).astype(np.float32)

        # dropouts: NaN blobs covering `dropout` of the annulus
        blobs = _band_field(rng, self.shape, sp, 200.0, 2500.0, 0.5)
        if dropout > 0 and annulus.any():
            cut = float(np.quantile(blobs[annulus], 1.0 - dropout))
            lost = blobs > cut
        else:
            lost = np.zeros(self.shape, dtype=bool)
        noise = rng.standard_normal(self.shape, dtype=np.float32) * np.float32(d.noise_um)

        return _Firing(
            firearm_id=int(firearm_id),
            firing=int(firing),
            signature=sig,
            rotation_deg=theta,
            shift_um=(float(shift[0]), float(shift[1])),
            contact=contact,
            dropout=dropout,
            surface=surface,
            noise=noise,
            lost=lost,
            annulus=annulus,
            cut=annulus_cut(c_out, r_out, c_hole, r_hole),
            rng=rng,
            r_o=r_o,
            r_h=r_h,
        )

    def _scan(
        self,
        fired: _Firing,
        cut: Cut,
        *,
        mirrored: bool,
        keep_arrays: bool,
        extra: dict[str, Any] | None = None,
    ) -> Scan:
        """Cut a firing's surface, export it (viewed or mirrored) with its truth."""
        sp = self.spacing
        sig = fired.signature
        region = fired.annulus if cut is fired.cut else cut.mask(self.shape, sp)
        usable = region & ~fired.lost
        clean = np.where(region, fired.surface, np.float32(np.nan)).astype(np.float32)
        geometry = cut.info(self.shape, sp)
        if self.raw:
            heights = self._raw_heights(
                fired.rng,
                fired.surface + fired.noise,
                fired.annulus,
                fired.lost,
                fired.r_o,
                fired.r_h,
                geometry,
            )
        else:
            heights = np.where(usable, fired.surface + fired.noise, np.float32(np.nan)).astype(
                np.float32
            )

        casing_id = fired.firearm_id * self.per_firearm + fired.firing
        info = {
            "casing_id": int(casing_id),
            "firearm_id": fired.firearm_id,
            "firing_index": fired.firing,
            "batch_id": int(sig.batch_id),
            "style": sig.style,
            "rotation_deg": fired.rotation_deg,
            "shift_um": fired.shift_um,
            "contact_fraction": fired.contact,
            "dropout_fraction": fired.dropout,
            "difficulty": self.difficulty_name,
            "seed": self.seed,
            "raw": self.raw,
            "mirrored": False,
            **geometry,
            **(extra or {}),
        }
        if mirrored:
            info = flip_truth(info, self.shape, sp)
            heights, usable, clean = (
                np.ascontiguousarray(x[::-1]) for x in (heights, usable, clean)
            )
        if keep_arrays:
            usable.setflags(write=False)
            clean.setflags(write=False)
            truth = {**info, "breech_face_mask": usable, "clean_surface": clean}
        else:
            truth = _LazyTruth(info, self)
        meta = {
            "generator": "balllink.simulate",
            "format": "simulated",
            "handedness": "mirrored" if mirrored else "viewed",
            "simulation": truth,
        }
        source = f"sim-seed{self.seed}-firearm{fired.firearm_id}-firing{fired.firing}"
        return Scan(heights, spacing_um=(sp, sp), meta=meta, source=source)

    def _raw_heights(self, rng, surface, annulus, lost, r_o, r_h, geometry) -> np.ndarray:
        """Add what preprocessing must remove: tilt, curvature, crater, casing head, spikes."""
        sp = self.spacing
        ny, nx = self.shape
        r_out = geometry["primer_radius_um"]
        r_hole = geometry["hole_radius_um"]
        cy, cx = geometry["primer_center_um"]
        yy = (np.arange(ny, dtype=np.float32) * sp - cy)[:, None]
        xx = (np.arange(nx, dtype=np.float32) * sp - cx)[None, :]
        # primer plane tilt (5-30 µm per mm) and curvature (sag ±2-8 µm at the edge)
        slope = rng.uniform(0.005, 0.03)
        direction = rng.uniform(0.0, 2.0 * math.pi)
        tilt = slope * (yy * math.sin(direction) + xx * math.cos(direction))
        sag = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 8.0)
        curve = sag * (yy * yy + xx * xx) / (r_out * r_out)
        rough = _band_field(rng, self.shape, sp, 30.0, 1000.0)
        # firing-pin crater: a steep-walled bowl 40-120 µm deep inside the hole
        depth = rng.uniform(40.0, 120.0)
        q = np.clip(r_h / r_hole, 0.0, 1.0)
        crater = -depth * (1.0 - q * q) ** 0.3 + 0.8 * rough
        # outside the primer: a gap (groove, mostly unmeasured) then the casing head
        gap = rng.uniform(40.0, 90.0)
        head_level = rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 30.0)
        head = head_level + 0.6 * rough
        groove = -rng.uniform(20.0, 50.0) + 0.5 * rough
        z = np.where(annulus, surface, np.float32(0.0))
        inside_hole = (r_o <= r_out) & ~annulus
        in_gap = (r_o > r_out) & (r_o <= r_out + gap)
        z = np.where(inside_hole, crater, z)
        z = np.where(in_gap, groove, z)
        z = np.where(r_o > r_out + gap, head, z)
        z = (z + tilt + np.where(r_o <= r_out, curve, 0.0)).astype(np.float32)
        # missing data: dropouts, most of the gap, steep crater walls, rim sectors
        theta = np.arctan2(yy, xx)
        sectors = _band_field(rng, (1, 256), 1.0, 24.0, 256.0)[0]
        sector_lost = np.interp(theta, np.linspace(-math.pi, math.pi, 256), sectors) > 0.8
        wall = inside_hole & (q > 0.93) & (rough > -0.3)
        rim = (r_o > r_out + gap + 0.1 * r_out) & sector_lost
        nan = lost | (in_gap & (rough > -1.0)) | wall | rim
        z[nan] = np.nan
        # spikes: isolated outliers of ±20-200 µm, a few per 10^4 pixels
        n_spikes = max(3, int(3e-4 * ny * nx))
        iy = rng.integers(0, ny, n_spikes)
        ix = rng.integers(0, nx, n_spikes)
        z[iy, ix] = rng.choice([-1.0, 1.0], n_spikes) * rng.uniform(20.0, 200.0, n_spikes)
        geometry["tilt_um_per_mm"] = float(slope * 1000.0)
        geometry["crater_depth_um"] = float(depth)
        geometry["n_spikes"] = int(n_spikes)
        return z

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_batch_cache"] = OrderedDict()
        return state


class _LazyTruth(Mapping):
    """``meta["simulation"]`` when ``keep_truth_arrays=False``: a read-only mapping.

    The scalars are stored; the two truth arrays are regenerated from the seed the first
    time they are read (then kept), so a large streamed set stays small in memory.
    """

    _ARRAYS = ("breech_face_mask", "clean_surface")

    def __init__(self, info: dict[str, Any], gen: _Generator):
        self._info = info
        self._gen = gen
        self._arrays: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            again = self._gen.casing(
                self._info["firearm_id"], self._info["firing_index"], keep_arrays=True
            )
            full = again.meta["simulation"]
            self._arrays = {k: full[k] for k in self._ARRAYS}
        return self._arrays

    def __getitem__(self, key: str) -> Any:
        if key in self._ARRAYS:
            return self._load()[key]
        return self._info[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._info
        yield from self._ARRAYS

    def __len__(self) -> int:
        return len(self._info) + len(self._ARRAYS)

    def __contains__(self, key: object) -> bool:
        return key in self._ARRAYS or key in self._info

    def __repr__(self) -> str:
        state = "loaded" if self._arrays is not None else "lazy"
        return f"LazyTruth({self._info!r}, arrays={state})"


# ------------------------------------------------------------------------- validation


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_spacing(spacing: Any, default: float) -> float:
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


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
        ok = ny >= 16 and nx >= 16 and (ny, nx) == tuple(shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be two integers >= 16 (rows, columns), got {shape!r}")
    return ny, nx


def _check_geometry(geometry: Any, raw: bool) -> str:
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if raw and geometry != "annulus":
        raise ValueError(
            f"geometry={geometry!r} makes already-cut (prepared) scans; use raw=False, or "
            "geometry='annulus' for raw scans"
        )
    return str(geometry)


def _check_share(mirrored: Any) -> float:
    try:
        share = float(mirrored)
    except (TypeError, ValueError):
        share = math.nan
    if isinstance(mirrored, bool) or not 0.0 <= share <= 1.0:
        raise ValueError(
            f"mirrored must be the share of casings exported mirrored, in [0, 1], got {mirrored!r}"
        )
    return share


def _check_counts(n_firearms: Any, per_firearm: Any) -> tuple[int, int]:
    for name, v in (("n_firearms", n_firearms), ("per_firearm", per_firearm)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(n_firearms), int(per_firearm)


# ------------------------------------------------------------------------------ public


@dataclass(frozen=True, eq=False)
class SimulatedSet:
    """Simulated casings and their truth.

    Attributes
    ----------
    scans : list of Scan
        One scan per casing, in ``casing_id`` order (firearm by firearm).
    truth : structured ndarray, dtype `TRUTH_DTYPE`
        ``casing_id``, ``firearm_id``, ``rotation_deg`` (in [0, 360)), ``shift_y_um``,
        ``shift_x_um`` (the pose as viewed), ``mirrored`` (stored flipped up-down); row
        ``i`` describes ``scans[i]``.
    params : dict
        The arguments that made the set (seed, raw, difficulty, shape, spacing_um,
        geometry, mirrored).
    """

    scans: list[Scan]
    truth: np.ndarray
    params: dict[str, Any]

    def __len__(self) -> int:
        return len(self.scans)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All pairs ``i < j``: index arrays ``i``, ``j`` and ``same`` (same firearm)."""
        i, j = np.triu_indices(len(self.scans), k=1)
        f = self.truth["firearm_id"]
        return i, j, f[i] == f[j]


def iter_casings(
    n_firearms: int,
    per_firearm: int,
    *,
    seed: int,
    raw: bool = False,
    difficulty: str | float | Difficulty = "medium",
    shape: tuple[int, int] | None = None,
    spacing_um: float | None = None,
    keep_truth_arrays: bool = False,
    first_firearm: int = 0,
    geometry: str = "annulus",
    mirrored: float = 0.0,
) -> Iterator[tuple[Scan, np.void]]:
    """Yield simulated casings one by one, never holding more than a few signatures.

    Same arguments as `casings`; yields ``(scan, truth_row)`` in ``casing_id`` order
    (firearm 0 firings 0..per_firearm-1, then firearm 1, ...). The scans are identical to
    ``casings(...)``'s. ``keep_truth_arrays`` defaults to False here: the truth arrays in
    ``meta["simulation"]`` are then regenerated from the seed on first access.
    ``first_firearm`` starts the stream at that firearm (the earlier ones are not
    simulated), so a large set can be made in slices by several processes; the casings
    are those of the full stream.

    Examples
    --------
    >>> from itertools import islice
    >>> stream = iter_casings(10**5, 10, seed=1, shape=(48, 48), spacing_um=50.0)
    >>> [int(row["casing_id"]) for _, row in islice(stream, 3)]
    [0, 1, 2]
    """
    n_firearms, per_firearm = _check_counts(n_firearms, per_firearm)
    if not 0 <= int(first_firearm) <= n_firearms:
        raise ValueError(f"first_firearm must be in [0, {n_firearms}], got {first_firearm}")
    gen = _Generator(
        seed=seed,
        raw=raw,
        difficulty=difficulty,
        shape=shape,
        spacing_um=spacing_um,
        per_firearm=per_firearm,
        geometry=geometry,
        mirrored=mirrored,
    )
    return _stream(gen, n_firearms, per_firearm, bool(keep_truth_arrays), int(first_firearm))


def _stream(gen: _Generator, n_firearms: int, per_firearm: int, keep: bool, first: int = 0):
    for firearm in range(first, n_firearms):
        for firing in range(per_firearm):
            scan = gen.casing(firearm, firing, keep_arrays=keep)
            info = scan.meta["simulation"]
            dy, dx = info["shift_um"]
            row = np.array(
                [(info["casing_id"], firearm, info["rotation_deg"], dy, dx, info["mirrored"])],
                dtype=TRUTH_DTYPE,
            )[0]
            yield scan, row


def casings(
    n_firearms: int,
    per_firearm: int,
    *,
    seed: int,
    raw: bool = False,
    difficulty: str | float | Difficulty = "medium",
    shape: tuple[int, int] | None = None,
    spacing_um: float | None = None,
    keep_truth_arrays: bool = True,
    progress: Callable[[int, int], Any] | None = None,
    geometry: str = "annulus",
    mirrored: float = 0.0,
) -> SimulatedSet:
    """Simulate ``n_firearms * per_firearm`` fired casings with their ground truth.

    Parameters
    ----------
    n_firearms, per_firearm : int
        Firearms, and firings (casings) per firearm. Casing ``c`` of firearm ``f`` has
        ``casing_id = f * per_firearm + c``.
    seed : int >= 0
        Everything is a function of the seed (see the module docstring).
    raw : bool
        False (default): prepared-like scans, as after `balllink.preprocess`: 6.25 µm,
        545 x 545 px like the Fadul scans, leveled, band-limited, NaN outside the
        breech-face annulus and in dropouts. True: a raw instrument export at 3.125 µm
        over a larger field (1400 x 1400 px = 4.4 mm) that also carries what
        preprocessing must remove: primer plane tilt (5-30 µm/mm) and curvature (±2-8 µm
        sag), a steep firing-pin crater 40-120 µm deep inside the hole, a mostly
        unmeasured gap around the primer, the casing head 8-30 µm above or below it with
        missing sectors at the rim, and spikes (±20-200 µm, 3 per 10^4 pixels).
    difficulty : str, float in [0, 1] or Difficulty
        "easy", "medium", "hard", "fadul-like" (see `DIFFICULTIES`), a number
        interpolating between "easy" (0) and "hard" (1), or a `Difficulty`. It changes
        how firings reproduce the signatures, never the signatures' random streams.
    shape : (int, int), optional
        Grid in pixels; the geometry scales with the field (breech-face outer radius =
        0.47 of the field side when prepared, 0.366 when raw). Small shapes (e.g.
        ``(96, 96)`` at 25 µm) make fast large sets.
    spacing_um : float, optional
        Pixel size, µm (6.25 prepared, 3.125 raw). The signature band is 20-400 µm
        (Gaussian cutoffs; the short end rises to 2.5 pixels on coarse grids), so a
        16-500 µm band-pass keeps it.
    keep_truth_arrays : bool
        True (default): ``meta["simulation"]`` is a plain dict holding the arrays. False:
        it is a read-only mapping with the same keys whose ``breech_face_mask`` and
        ``clean_surface`` are regenerated from the seed on first access (same values),
        for large sets.
    progress : callable, optional
        ``progress(done, total)`` after each casing.
    geometry : {"annulus", "varied"}
        "annulus" (default): a circle of radius 0.47 field minus a firing-pin hole of
        0.70-0.78 of it, 6-22 % of the radius off-centre. "varied" (prepared scans only):
        the same surfaces (the heights equal the "annulus" set's wherever both are kept),
        cut out like real exports, a new cut per casing (`CUT_KINDS`): an elliptical
        outline (axis ratio 0.9-1) of mean radius 0.40 field ±15 %, a hole of 0.2-0.6 of
        it, and one of ``"centred"`` (hole within 8 % of the radius of the centre),
        ``"offcentre"`` (12-40 %), ``"touching"`` (the hole's edge within -0.5..1 px of the
        outline), ``"open"`` (the hole crosses the outline by 20-60 % of its radius: one
        NaN region with the outside, a C-shaped face), ``"sector"`` (a missing wedge of
        20-120° about the outline centre), ``"clipped"`` (the outline crosses the image
        border by 4-15 % of its radius).
    mirrored : float in [0, 1]
        Share of casings exported mirrored (``np.flipud``, see the module docstring),
        each chosen on its own stream: casing ``(f, k)`` is mirrored when its uniform
        draw is below the share (so a larger share mirrors a superset).

    Returns
    -------
    SimulatedSet
        ``.scans`` (float32 µm `Scan`s) and ``.truth`` (`TRUTH_DTYPE`). Each scan's
        ``meta["generator"] == "balllink.simulate"`` and ``meta["simulation"]`` holds
        ``casing_id``, ``firearm_id``, ``firing_index``, ``batch_id``, ``style`` (class
        marks), ``rotation_deg``, ``shift_um = (dy, dx)`` (pose convention in the module
        docstring), ``contact_fraction``, ``dropout_fraction``, ``difficulty``, ``seed``,
        ``raw``, ``mirrored``, the cut: ``cut`` (``"annulus"`` or a `CUT_KINDS` kind), the
        outline ``primer_center_um``, ``primer_radius_um`` (mean), ``primer_axes_um``
        (semi-axes), ``primer_angle_deg`` (of the first axis, counter-clockwise as
        displayed from +x), the hole ``hole_center_um``, ``hole_radius_um`` ((y, x) µm
        from pixel (0, 0)), ``sector_deg`` (None or ``(start, width)`` of the missing
        wedge, same angle convention), ``rim_gap_um`` (hole edge to outline, negative
        when the hole opens), ``clipped`` (outline crosses the image border); raw-only
        ``tilt_um_per_mm``, ``crater_depth_um``, ``n_spikes``, and two arrays on the scan
        grid: ``breech_face_mask`` (bool: inside the cut and measured, i.e. the true
        usable breech face) and ``clean_surface`` (float32 µm: the noise-free band-limited
        surface this casing carries, i.e. the reproduced signature plus the casing's own
        texture, without tilt, curvature, crater, noise, spikes; NaN outside the cut).
        ``meta["handedness"]`` is ``"viewed"`` or ``"mirrored"``.

    How difficulty is built
    -----------------------
    Within contact, surface = ``sqrt(reproduction) * signature + sqrt(1 - reproduction)
    * fresh`` (scaled to 1.5 µm RMS); outside contact, fresh texture only. A signature is
    ``sqrt(1 - shared) * own + sqrt(shared) * batch``; each of ``own`` and ``batch`` is
    half multi-scale random surface (amplitude ∝ f^-1.5, like Fadul's spectrum), half
    class marks of the batch's style.

    Examples
    --------
    >>> sims = casings(2, 2, seed=0, shape=(64, 64), spacing_um=25.0)
    >>> len(sims.scans), sims.truth["firearm_id"].tolist()
    (4, [0, 0, 1, 1])
    >>> sims.scans[0].meta["simulation"]["clean_surface"].shape
    (64, 64)
    >>> odd = casings(2, 2, seed=0, shape=(64, 64), spacing_um=25.0, geometry="varied",
    ...               mirrored=0.5)
    >>> [s.meta["simulation"]["cut"] for s in odd.scans], odd.truth["mirrored"].tolist()
    (['offcentre', 'open', 'offcentre', 'sector'], [False, False, False, True])
    """
    n_firearms, per_firearm = _check_counts(n_firearms, per_firearm)
    total = n_firearms * per_firearm
    items = iter_casings(
        n_firearms,
        per_firearm,
        seed=seed,
        raw=raw,
        difficulty=difficulty,
        shape=shape,
        spacing_um=spacing_um,
        keep_truth_arrays=keep_truth_arrays,
        geometry=geometry,
        mirrored=mirrored,
    )
    scans: list[Scan] = []
    truth = np.empty(total, dtype=TRUTH_DTYPE)
    for k, (scan, row) in enumerate(items):
        scans.append(scan)
        truth[k] = row
        if progress is not None:
            progress(k + 1, total)
    first = scans[0]
    params = {
        "n_firearms": n_firearms,
        "per_firearm": per_firearm,
        "seed": int(seed),
        "raw": bool(raw),
        "difficulty": first.meta["simulation"]["difficulty"],
        "shape": first.shape,
        "spacing_um": first.spacing_um[0],
        "geometry": str(geometry),
        "mirrored": float(mirrored),
    }
    logger.debug("simulated %d casings: %s", total, params)
    return SimulatedSet(scans=scans, truth=truth, params=params)


def cut_geometries(
    n: int,
    *,
    seed: int,
    shape: tuple[int, int] = (560, 560),
    spacing_um: float = _PREPARED_SPACING_UM,
    difficulty: str | float | Difficulty = "fadul-like",
    kinds: Sequence[str] | None = None,
) -> Iterator[Scan]:
    """Yield ``n`` prepared-like scans of one firing, each cut out differently.

    For preprocessing tests that need many breech-face geometries cheaply: the surface of
    firearm 0, firing 0 of ``casings(..., seed=seed, difficulty=difficulty)`` is made
    once; scan ``i`` keeps it inside a cut drawn as for ``geometry="varied"`` from its
    own stream (a few milliseconds each at 560 x 560).

    Parameters
    ----------
    n : int >= 1
    seed : int >= 0
    shape : (int, int)
        Grid, pixels (default 560 x 560, like the Fadul exports).
    spacing_um : float
        Pixel size, µm (default 6.25).
    difficulty : str, float or Difficulty
        As for `casings` (default "fadul-like").
    kinds : sequence of str, optional
        Restrict the cuts to these `CUT_KINDS` (drawn with their relative weights).

    Yields
    ------
    Scan
        As from `casings` with ``geometry="varied"``, with ``meta["simulation"]
        ["cut_index"] = i`` and the truth arrays kept.

    Examples
    --------
    >>> from collections import Counter
    >>> scans = cut_geometries(60, seed=0, shape=(64, 64), spacing_um=50.0)
    >>> kinds = Counter(s.meta["simulation"]["cut"] for s in scans)
    >>> sorted(kinds) == sorted(CUT_KINDS)
    True
    >>> opened = next(cut_geometries(1, seed=0, shape=(64, 64), kinds=["open"]))
    >>> opened.meta["simulation"]["cut"], opened.meta["simulation"]["rim_gap_um"] < 0
    ('open', True)
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if kinds is not None:
        kinds = tuple(kinds)
        unknown = sorted(set(kinds) - set(CUT_KINDS))
        if unknown or not kinds:
            raise ValueError(f"kinds must be taken from {list(CUT_KINDS)}, got {list(kinds)!r}")
    gen = _Generator(
        seed=seed,
        raw=False,
        difficulty=difficulty,
        shape=shape,
        spacing_um=spacing_um,
        per_firearm=1,
        geometry="varied",
    )
    return _cut_stream(gen, int(n), kinds)


def _cut_stream(gen: _Generator, n: int, kinds: tuple[str, ...] | None) -> Iterator[Scan]:
    fired = gen._fire(0, 0)
    for i in range(n):
        cut = draw_cut(stream(gen.seed, i, 0, STREAM_CUTS), gen.shape, gen.spacing, kinds)
        yield gen._scan(fired, cut, mirrored=False, keep_arrays=True, extra={"cut_index": i})
