"""Ground truth of simulated casings: truth table, relative poses, lazy and flipped truth.

The pose convention (`relative_pose`, ``rotation_deg``, ``shift_um``) is stated in the
`balllink.simulate` package docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._scan import Scan

if TYPE_CHECKING:
    from ._generator import Generator

__all__ = ["TRUTH_DTYPE", "LazyTruth", "flip_truth", "relative_pose", "rotation", "scan_truth"]

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


def rotation(theta_deg: float) -> np.ndarray:
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
    t = tb - rotation(delta) @ ta
    if mirrored_a:
        return float(-delta % 360.0), float(-t[0]), float(t[1])
    return float(delta), float(t[0]), float(t[1])


class LazyTruth(Mapping):
    """``meta["simulation"]`` when ``keep_truth_arrays=False``: a read-only mapping.

    The scalars are stored; the two truth arrays are regenerated from the seed the first
    time they are read (then kept), so a large streamed set stays small in memory.
    """

    _ARRAYS = ("breech_face_mask", "clean_surface")

    def __init__(self, info: dict[str, Any], gen: Generator):
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


def scan_truth(scan: Scan) -> dict[str, Any] | None:
    """``meta["simulation"]`` as a plain dict (lazy arrays are loaded), or None."""
    truth = scan.meta.get("simulation")
    if not isinstance(truth, Mapping):
        return None
    return {k: truth[k] for k in truth}


def flip_truth(info: Mapping[str, Any], shape: tuple[int, int], spacing: float) -> dict[str, Any]:
    """The truth of ``np.flipud`` of a scan of ``shape`` (see `mirror`)."""
    out = dict(info)
    top = (shape[0] - 1) * spacing
    for key, value in info.items():
        if isinstance(value, np.ndarray) and value.shape == tuple(shape):
            flipped = np.ascontiguousarray(value[::-1])
            flipped.setflags(write=False)
            out[key] = flipped
        elif key.endswith("_center_um"):
            out[key] = (top - float(value[0]), float(value[1]))
    if "primer_angle_deg" in info:
        out["primer_angle_deg"] = float(-info["primer_angle_deg"] % 180.0)
    if info.get("sector_deg") is not None:
        start, width = info["sector_deg"]
        out["sector_deg"] = (float((-start - width) % 360.0), float(width))
    out["mirrored"] = not bool(info.get("mirrored", False))
    return out
