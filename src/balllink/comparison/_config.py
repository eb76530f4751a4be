"""Every parameter of a CMC comparison: `CMCConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..preprocessing import MIN_AREA_MM2

__all__ = ["CMCConfig"]


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
    combine : {"cmcr", "min", "sum"}
        How two directions make one count: ``"cmcr"`` follows cmcR's
        ``decision_combineDirections`` exactly; ``"min"``/``"sum"`` of the counts. ``"sum"``
        counts the cells congruent in either direction (the cells of ``a`` and of ``b`` are
        distinct cells); ``"union"`` is accepted as another name for it and stored as
        ``"sum"``.
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
        Angle step of the brute-force coarse search, the fallback used when the coarse
        alignment (`balllink.align`) finds no pose.
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

    Examples
    --------
    >>> from balllink.comparison import CMCConfig
    >>> CMCConfig().grid, CMCConfig(combine="union").combine
    ((8, 8), 'sum')
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
        if self.combine == "union":  # the cells of a and b are distinct: the union is the sum
            object.__setattr__(self, "combine", "sum")
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
            "combine": ("cmcr", "min", "sum"),
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
        """The rotations of ``rotation_range`` by ``rotation_step`` (degrees), ends included.

        Examples
        --------
        >>> CMCConfig.cmcr().thetas()[:3].tolist()
        [-30.0, -27.0, -24.0]
        """
        lo, hi = self.rotation_range
        n = math.floor((hi - lo) / self.rotation_step + 1e-9) + 1
        return lo + self.rotation_step * np.arange(n)
