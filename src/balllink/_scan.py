"""The `Scan`: a height map with its lateral spacing, validity mask and metadata.

Every stage of balllink takes and returns `Scan` objects (see DESIGN.md). Heights are
float32 micrometres from the reader on; NaN means *not measured*; the spacing travels with
the array.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HANDEDNESS", "Scan"]

#: The two known handedness values (``meta["handedness"]``; None = unknown): ``"viewed"``,
#: the array displayed with row 0 on top shows the casing head as seen looking at it, and
#: ``"mirrored"``, its mirror image.
HANDEDNESS = ("viewed", "mirrored")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False, repr=False)
class Scan:
    """A breech-face height map.

    Parameters
    ----------
    heights : ndarray, shape (ny, nx)
        Heights in micrometres, converted to C-contiguous float32. NaN marks a point that
        was not measured (or lies outside the region of interest).
    spacing_um : tuple of float
        Lateral spacing ``(dy, dx)`` in micrometres per pixel.
    mask : ndarray of bool, shape (ny, nx), optional
        True where the point is usable. Defaults to the finite points of ``heights``. A
        point is only ever usable when it is also finite.
    meta : dict, optional
        Everything known about the scan: instrument, date, creator, file quirks met while
        reading, and one entry per processing step under ``"history"``.
    source : str, optional
        Where the scan came from (a path), for error messages and reports.

    Attributes
    ----------
    shape : tuple of int
        ``heights.shape``.
    valid : ndarray of bool
        ``mask`` (already restricted to finite heights).
    n_valid : int
        Number of usable points.
    area_mm2 : float
        Usable area in mm².

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> z = np.zeros((4, 5))
    >>> z[0, 0] = np.nan
    >>> scan = bl.Scan(z, spacing_um=(6.25, 6.25))
    >>> scan.shape, scan.heights.dtype, scan.n_valid
    ((4, 5), dtype('float32'), 19)
    >>> scan.replace(spacing_um=(3.125, 3.125)).spacing_um
    (3.125, 3.125)
    """

    heights: np.ndarray
    spacing_um: tuple[float, float]
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        heights = np.ascontiguousarray(self.heights, dtype=np.float32)
        if heights.ndim != 2:
            raise ValueError(
                f"Scan heights must be a 2-D array, got shape {heights.shape}"
                + (f" ({self.source})" if self.source else "")
            )
        spacing = self.spacing_um
        try:
            if np.isscalar(spacing):
                spacing = (float(spacing), float(spacing))
            dy, dx = (float(s) for s in spacing)
        except (TypeError, ValueError):
            raise ValueError(
                f"spacing_um must be (dy, dx) in micrometres, got {self.spacing_um!r}"
            ) from None
        if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
            raise ValueError(f"spacing_um must be positive and finite, got {(dy, dx)!r}")
        finite = np.isfinite(heights)
        if self.mask is None:
            mask = finite
        else:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.shape != heights.shape:
                raise ValueError(
                    f"mask shape {mask.shape} does not match heights shape {heights.shape}"
                )
            mask = mask & finite
        object.__setattr__(self, "heights", _readonly(heights))
        object.__setattr__(self, "spacing_um", (dy, dx))
        object.__setattr__(self, "mask", _readonly(np.ascontiguousarray(mask)))
        meta = dict(self.meta) if isinstance(self.meta, Mapping) else {}
        object.__setattr__(self, "meta", meta)
        if self.source is not None:
            object.__setattr__(self, "source", str(self.source))

    @property
    def shape(self) -> tuple[int, int]:
        return self.heights.shape  # type: ignore[return-value]

    @property
    def valid(self) -> np.ndarray:
        return self.mask  # type: ignore[return-value]

    @property
    def n_valid(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def area_mm2(self) -> float:
        """Usable area in mm² (``n_valid`` times the pixel area)."""
        return self.n_valid * self.spacing_um[0] * self.spacing_um[1] / 1e6

    @property
    def name(self) -> str:
        """A short name for messages: the file name of ``source``, else ``"<scan>"``."""
        if not self.source:
            return "<scan>"
        return self.source.replace("\\", "/").rsplit("/", 1)[-1]

    def masked_heights(self) -> np.ndarray:
        """Heights with every unusable point set to NaN (a new float32 array)."""
        out = np.array(self.heights, dtype=np.float32, copy=True)
        out[~self.mask] = np.nan
        return out

    def replace(self, **changes: Any) -> Scan:
        """Return a copy with some fields changed (``meta`` is copied, not shared).

        When ``heights`` changes shape and no new ``mask`` is given, the mask is derived
        again from the finite points of the new heights.
        """
        if "heights" in changes and "mask" not in changes:
            new = np.asarray(changes["heights"])
            if new.shape != self.heights.shape:
                changes["mask"] = None
        if "meta" not in changes:
            changes["meta"] = dict(self.meta)
        return dataclasses.replace(self, **changes)

    def mirrored(self) -> Scan:
        """The mirror image: rows reversed (``np.flipud``), as another exporter may write it.

        Everything on the grid follows: ``heights``, ``mask``, ``meta["file_mask"]`` and each
        of ``meta["annotations"]``; ``meta["handedness"]`` is swapped (``"viewed"`` <->
        ``"mirrored"``; unknown stays unknown) and the step is added to ``meta["history"]``.
        A prepared scan's ``meta["prepared"]["fingerprint"]`` follows the new heights.
        Mirroring twice gives the original data back.

        Examples
        --------
        >>> import numpy as np
        >>> import balllink as bl
        >>> s = bl.Scan(np.arange(6.0).reshape(3, 2), spacing_um=6.25, meta={"handedness": "viewed"})
        >>> m = s.mirrored()
        >>> m.heights[0].tolist(), m.meta["handedness"]
        ([4.0, 5.0], 'mirrored')
        >>> bool(np.array_equal(m.mirrored().heights, s.heights))
        True
        """
        meta = self.with_history("mirror", axis="rows")
        hand = meta.get("handedness")
        if hand in HANDEDNESS:
            meta["handedness"] = HANDEDNESS[1 - HANDEDNESS.index(hand)]
        for key in ("file_mask",):
            grid = meta.get(key)
            if isinstance(grid, np.ndarray) and grid.shape == self.shape:
                meta[key] = np.ascontiguousarray(grid[::-1])
        notes = meta.get("annotations")
        if isinstance(notes, Mapping):
            meta["annotations"] = {
                k: np.ascontiguousarray(v[::-1])
                if isinstance(v, np.ndarray) and v.shape == self.shape
                else v
                for k, v in notes.items()
            }
        heights = np.ascontiguousarray(self.heights[::-1])
        mask = np.ascontiguousarray(self.mask[::-1])
        prepared = meta.get("prepared")
        if isinstance(prepared, Mapping) and "fingerprint" in prepared:
            meta["prepared"] = {**prepared, "fingerprint": data_fingerprint(heights, mask)}
        return self.replace(heights=heights, mask=mask, meta=meta)

    def with_history(self, step: str, **params: Any) -> dict[str, Any]:
        """Return a copy of ``meta`` with one processing step appended to ``history``."""
        meta = dict(self.meta)
        meta["history"] = [*meta.get("history", []), {"step": step, **params}]
        return meta

    def __repr__(self) -> str:
        dy, dx = self.spacing_um
        return (
            f"Scan({self.name!s}, shape={self.shape}, spacing_um=({dy:g}, {dx:g}), "
            f"valid={self.n_valid / max(1, self.heights.size):.0%})"
        )


def data_fingerprint(heights: np.ndarray, mask: np.ndarray) -> str:
    """SHA-256 of the usable heights (float32, NaN elsewhere) and the grid shape: what
    `balllink.preprocess` records so that its own output is recognised without a re-check."""
    z = np.where(mask, np.asarray(heights, np.float32), np.float32(np.nan))
    digest = hashlib.sha256(repr(z.shape).encode())
    digest.update(np.ascontiguousarray(z).tobytes())
    return digest.hexdigest()
