"""Descriptors of prepared scans for the candidate index.

A breech-face scan is described by many small *local* descriptors rather than one global
vector: the identifying marks are local, and global rotation-invariant vectors (radial or
angular power spectra, rotated thumbnails) put same-gun casings in the top 10 for fewer
than half of the Fadul queries (see ``benchmarks/eval_retrieval.py``).

Each keypoint is a local extremum (5×5 neighbourhood) of the NaN-aware smoothed surface
(working grid 12.5 µm, Gaussian σ = 1 px) whose surrounding disk (radius 20 px = 250 µm)
is at least 75 % measured; the 256 strongest are kept. The disk is sampled on rings
(8 rings × 32 angles) and each ring is Fourier transformed along the angle (harmonics
0–6). The phase of the first angular harmonic (summed over rings) gives the keypoint a
canonical orientation; rotating every harmonic by it makes the descriptor invariant to a
rotation of the scan over the full 360° while keeping the relative phases (the shape) of
the patch. A keypoint therefore carries its position and orientation as well as its
descriptor, so that the index can count only neighbours that agree on one rotation and
shift of the whole casing (a Hough vote, like CMC does for cells). The detector was tuned
on simulated "fadul-like" sets (denser, finer keypoints repeat better under fresh
texture and partial contact) and checked on Fadul. About 7–14 ms per 545×545 scan
(> 50 scans/s) in NumPy/SciPy; no Numba kernel was needed.

`embed` returns one float32 row per keypoint: ``[y_um, x_um, angle_rad, d_0 … d_103]``
(positions relative to the scan centre, µm; ``DESCRIPTOR_DIM`` descriptor values, unit
L2 norm). `CasingIndex` stores the descriptor part in FAISS and the pose part beside it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from ._grid import nan_block_mean, nan_gaussian
from ._scan import Scan
from .preprocessing import prepare_if_needed

__all__ = [
    "DESCRIPTOR_DIM",
    "DESCRIPTOR_VERSION",
    "POSE_COLUMNS",
    "embed",
    "embed_many",
    "mirror_keypoints",
    "remember_embedding",
]

logger = logging.getLogger(__name__)

#: Tables computed elsewhere (another process) for a scan object: `remember_embedding`.
_REMEMBERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Bumped whenever the descriptor changes meaning; saved with every index.
DESCRIPTOR_VERSION = "kp-polar-fourier-1"
#: Number of leading pose columns in an `embed` row: y (µm), x (µm), angle (rad).
POSE_COLUMNS = 3

_WORK_SPACING_UM = 12.5
_RADIUS_PX = 20
_N_RINGS = 8
_N_ANGLES = 32
_N_HARMONICS = 6
_SIGMA_PX = 1.0
_MIN_DISTANCE_PX = 2
_MIN_VALID = 0.75
_MAX_POINTS = 256
_MIN_PATCH_STD_UM = 1e-4

#: Length of the descriptor part of an `embed` row.
DESCRIPTOR_DIM = _N_RINGS * (1 + 2 * _N_HARMONICS)

_RADII = np.linspace(_RADIUS_PX / _N_RINGS, _RADIUS_PX, _N_RINGS)
_ANGLES = 2 * np.pi * np.arange(_N_ANGLES) / _N_ANGLES
_DY = (_RADII[:, None] * np.sin(_ANGLES)[None, :]).ravel()
_DX = (_RADII[:, None] * np.cos(_ANGLES)[None, :]).ravel()


def _check_scan(prep: Scan) -> None:
    if not isinstance(prep, Scan):
        raise TypeError(
            f"embed expects a prepared bl.Scan, got {type(prep).__name__}; "
            "read it with bl.read_scan and prepare it with bl.preprocess"
        )
    dy, dx = (float(v) for v in prep.spacing_um)
    if not (np.isfinite(dy) and dy > 0 and abs(dy - dx) <= 1e-3 * dy):
        raise ValueError(
            f"embed needs a square positive pixel spacing, got {prep.spacing_um} "
            f"({prep.name}); resample with bl.resample(scan, spacing_um=6.25)"
        )
    if dy > _WORK_SPACING_UM * 1.5:
        raise ValueError(
            f"embed needs a spacing of at most {_WORK_SPACING_UM * 1.5:g} µm, got {dy:g} µm "
            f"({prep.name}); the descriptors work on a {_WORK_SPACING_UM:g} µm grid"
        )


def embed(prep: Scan, *, prepare: bool = True) -> np.ndarray:
    """Local descriptors of a prepared scan, with their poses.

    Parameters
    ----------
    prep : Scan
        A prepared scan (leveled, band-passed, NaN outside the breech face), spacing at most
        18.75 µm/px; it is averaged onto a 12.5 µm grid. A scan that is not prepared is
        prepared first with the default chain (`balllink.preprocessing.prepare_if_needed`).
    prepare : bool, default True
        False describes the scan exactly as given.

    Returns
    -------
    ndarray, float32, shape (n_keypoints, 3 + DESCRIPTOR_DIM)
        One row per keypoint (at most 256, strongest first): ``y_um``, ``x_um`` (relative
        to the scan centre), the canonical orientation in radians, then the unit-norm
        rotation-invariant descriptor. Zero rows when the scan has no usable region.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> rng = np.random.default_rng(0)
    >>> from scipy.ndimage import gaussian_filter
    >>> z = gaussian_filter(rng.normal(size=(200, 200)), 3).astype(np.float32)
    >>> rows = bl.embed(bl.Scan(z, spacing_um=6.25))
    >>> rows.dtype, rows.shape[1] == 3 + bl.features.DESCRIPTOR_DIM, len(rows) > 10
    (dtype('float32'), True, True)
    """
    if prepare and isinstance(prep, Scan) and prep in _REMEMBERED:
        return _REMEMBERED[prep].copy()
    if isinstance(prep, Scan) and prepare and prep.n_valid:
        prep = prepare_if_needed(prep)
    _check_scan(prep)
    spacing = float(prep.spacing_um[0])
    factor = max(1, round(_WORK_SPACING_UM / spacing))
    z = nan_block_mean(prep.masked_heights(), factor)
    work_spacing = spacing * factor
    ok = np.isfinite(z)
    empty = np.zeros((0, POSE_COLUMNS + DESCRIPTOR_DIM), np.float32)
    if ok.sum() < 16:
        return empty
    # NaN-aware smoothing by normalised convolution; zero where less than half the
    # Gaussian's weight falls on measured points
    smooth, weight = nan_gaussian(z - np.median(z[ok]), ok, _SIGMA_PX)
    smooth = np.where(weight > 0.5, smooth, 0).astype(np.float32)
    response = np.abs(smooth)
    peak = ndimage.maximum_filter(response, size=2 * _MIN_DISTANCE_PX + 1)
    iy, ix = np.nonzero((response == peak) & (response > 0) & ok)
    order = np.argsort(-response[iy, ix], kind="stable")
    iy, ix = iy[order], ix[order]
    # Share of the sampled disk that is measured (nearest sample of the validity mask).
    cy = iy[:, None] + _DY[None, :]
    cx = ix[:, None] + _DX[None, :]
    okf = ok.astype(np.float32)
    inside = ndimage.map_coordinates(okf, [cy.ravel(), cx.ravel()], order=0, mode="constant")
    keep = inside.reshape(len(iy), _DY.size).mean(axis=1) >= _MIN_VALID
    iy, ix, cy, cx = iy[keep][:_MAX_POINTS], ix[keep][:_MAX_POINTS], cy[keep], cx[keep]
    cy, cx = cy[:_MAX_POINTS], cx[:_MAX_POINTS]
    n = len(iy)
    if n == 0:
        return empty
    samples = ndimage.map_coordinates(smooth, [cy.ravel(), cx.ravel()], order=1, mode="constant")
    samples = samples.reshape(n, _N_RINGS, _N_ANGLES)
    samples -= samples.mean(axis=(1, 2), keepdims=True)
    textured = samples.std(axis=(1, 2)) > _MIN_PATCH_STD_UM
    if not textured.all():  # flat patches carry no marks (and only rounding noise)
        iy, ix, samples = iy[textured], ix[textured], samples[textured]
        n = len(iy)
        if n == 0:
            return empty
    coef = np.fft.rfft(samples, axis=2)[:, :, : _N_HARMONICS + 1]
    angle = np.angle((coef[:, :, 1] * _RADII[None, :]).sum(axis=1))
    m = np.arange(_N_HARMONICS + 1)
    coef = coef * np.exp(-1j * m[None, None, :] * angle[:, None, None])
    desc = np.concatenate(
        [
            coef[:, :, 0].real,
            coef[:, :, 1:].real.reshape(n, -1),
            coef[:, :, 1:].imag.reshape(n, -1),
        ],
        axis=1,
    )
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    centre_y, centre_x = (z.shape[0] - 1) / 2, (z.shape[1] - 1) / 2
    out = np.empty((n, POSE_COLUMNS + DESCRIPTOR_DIM), np.float32)
    out[:, 0] = (iy - centre_y) * work_spacing
    out[:, 1] = (ix - centre_x) * work_spacing
    out[:, 2] = angle
    out[:, POSE_COLUMNS:] = desc
    return out


def mirror_keypoints(rows: np.ndarray) -> np.ndarray:
    """The `embed` rows of the mirror image (``np.flipud``) of the same scan.

    Reversing the rows maps a keypoint at ``(y, x)`` from the centre to ``(-y, x)`` and a
    ring sample at angle ``θ`` to ``-θ``: the ring's Fourier coefficients become their
    complex conjugates and the canonical orientation ``-angle``, so the oriented
    descriptor keeps its real parts and negates its imaginary parts. No re-embedding.

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> from scipy.ndimage import gaussian_filter
    >>> z = gaussian_filter(np.random.default_rng(0).normal(size=(200, 200)), 3)
    >>> rows = bl.embed(bl.Scan(z, spacing_um=12.5))
    >>> back = mirror_keypoints(mirror_keypoints(rows))
    >>> bool(np.array_equal(back, rows))
    True
    """
    rows = np.asarray(rows, dtype=np.float32)
    out = rows.copy()
    out[:, 0] = -rows[:, 0]
    out[:, 2] = -rows[:, 2]
    imag = POSE_COLUMNS + _N_RINGS * (1 + _N_HARMONICS)
    out[:, imag:] = -rows[:, imag:]
    return out


def embed_many(
    preps: Sequence[Scan] | Iterable[Scan],
    *,
    progress: Callable[[int, int], object] | None = None,
) -> list[np.ndarray]:
    """`embed` each prepared scan.

    Parameters
    ----------
    preps : sequence of Scan
        Prepared scans.
    progress : callable, optional
        Called as ``progress(done, total)`` after each scan (``total`` is 0 for an
        iterator of unknown length).

    Returns
    -------
    list of ndarray
        One `embed` result per scan (their lengths differ).

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> z = np.random.default_rng(1).normal(size=(120, 120)).astype(np.float32)
    >>> [r.shape[1] for r in bl.embed_many([bl.Scan(z, spacing_um=12.5)] * 2)]
    [107, 107]
    """
    total = len(preps) if hasattr(preps, "__len__") else 0
    out = []
    for i, prep in enumerate(preps):
        out.append(embed(prep))
        if progress is not None:
            progress(i + 1, total)
    return out


def remember_embedding(prep: Scan, table: np.ndarray) -> None:
    """Let `embed` return ``table`` for this scan object (computed by another process).

    Bulk ingest embeds in worker processes and hands the table back with the prepared
    scan; the index then adds it without embedding again. Kept as long as ``prep`` lives.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> scan = bl.Scan(np.zeros((8, 8), np.float32), spacing_um=12.5)
    >>> remember_embedding(scan, np.ones((2, POSE_COLUMNS + DESCRIPTOR_DIM), np.float32))
    >>> bl.embed(scan).shape
    (2, 107)
    """
    _REMEMBERED[prep] = np.asarray(table, dtype=np.float32)
