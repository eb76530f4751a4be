"""What a comparison returns: `Comparison`, its `DirectionResult` and the cells table, and
`CellSearch`, the per-rotation, per-cell search result both methods hand to the decisions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ._config import CMCConfig

if TYPE_CHECKING:  # the evidence stage is downstream of this one
    from ..evidence import Evidence

__all__ = ["CELL_DTYPE", "CellSearch", "Comparison", "DirectionResult", "cells_table"]

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


class CellSearch(NamedTuple):
    """The cells of one reference searched in one target: arrays of shape (n_theta, n_cells).

    ``dy`` / ``dx`` are the best offsets (pixels of the compared grid), ``corr`` the
    correlation there, ``present`` whether the cell was compared at that rotation.
    """

    thetas: np.ndarray  # (n_theta,) degrees
    dy: np.ndarray
    dx: np.ndarray
    corr: np.ndarray
    present: np.ndarray


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
        Rotation of ``b`` relative to ``a`` in [0, 360) (the pose convention of
        `balllink.comparison`), NaN when undetermined.
    translation_um : (float, float)
        ``(dy, dx)`` of ``b`` relative to ``a`` in micrometres (NaN when undetermined).
    lead : bool
        The pair is worth an examiner's review: its likelihood ratio reaches the LR
        model's lead threshold (``evidence``; the threshold is set from a target false-lead
        rate), or, when there is no LR (another configuration than the model's, the cmcR
        mode), ``score >= config.lead_threshold``. Never with too little evidence.
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
    evidence : balllink.evidence.Evidence or None
        The likelihood ratio with its interval, bounds and range flag
        (`balllink.evidence`), None when no LR model applies. ``lr``, ``log10_lr`` and
        ``lr_interval`` read it (NaN without one).
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
    evidence: Evidence | None = field(default=None, repr=False)

    @property
    def lr(self) -> float:
        """Likelihood ratio (same firearm vs different firearms), bounded; NaN without a model."""
        return self.evidence.lr if self.evidence is not None else math.nan

    @property
    def log10_lr(self) -> float:
        """log10 of `lr`."""
        return self.evidence.log10_lr if self.evidence is not None else math.nan

    @property
    def lr_interval(self) -> tuple[float, float]:
        """90 % interval of `lr` (see `balllink.evidence.Evidence`)."""
        return self.evidence.lr_interval if self.evidence is not None else (math.nan, math.nan)

    def to_pandas(self):
        """The ``cells`` table as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame.from_records(self.cells)


def cells_table(
    direction: int,
    rows: np.ndarray,
    cols: np.ndarray,
    centers_um: np.ndarray,
    search: CellSearch,
    congruent: np.ndarray,
    valid_fraction: np.ndarray,
) -> np.ndarray:
    """One row per compared cell: its best rotation (congruent row if any, else max corr)."""
    thetas, dy, dx, corr, present = search
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
