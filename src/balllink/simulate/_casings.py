"""Simulated sets: `casings`, `iter_casings` (streamed) and `cut_geometries`.

The public entry points of the simulator; each validates its counts and hands the rest to
a `Generator` (see `balllink.simulate._generator`), which checks the other arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._scan import Scan
from ._checks import check_counts
from ._cuts import CUT_KINDS, draw_cut
from ._difficulty import Difficulty
from ._generator import PREPARED_SPACING_UM, Generator
from ._streams import STREAM_CUTS, stream
from ._truth import TRUTH_DTYPE

__all__ = ["SimulatedSet", "casings", "cut_geometries", "iter_casings"]

logger = logging.getLogger(__name__)


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
    n_firearms, per_firearm = check_counts(n_firearms, per_firearm)
    if not 0 <= int(first_firearm) <= n_firearms:
        raise ValueError(f"first_firearm must be in [0, {n_firearms}], got {first_firearm}")
    gen = Generator(
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


def _stream(gen: Generator, n_firearms: int, per_firearm: int, keep: bool, first: int = 0):
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
    n_firearms, per_firearm = check_counts(n_firearms, per_firearm)
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
    spacing_um: float = PREPARED_SPACING_UM,
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
    gen = Generator(
        seed=seed,
        raw=False,
        difficulty=difficulty,
        shape=shape,
        spacing_um=spacing_um,
        per_firearm=1,
        geometry="varied",
    )
    return _cut_stream(gen, int(n), kinds)


def _cut_stream(gen: Generator, n: int, kinds: tuple[str, ...] | None) -> Iterator[Scan]:
    fired = gen.fire(0, 0)
    for i in range(n):
        cut = draw_cut(stream(gen.seed, i, 0, STREAM_CUTS), gen.shape, gen.spacing, kinds)
        yield gen.export(fired, cut, mirrored=False, keep_arrays=True, extra={"cut_index": i})
