"""Cell-based (CMC) comparison of two prepared scans (issue 4): `compare`, `compare_many`.

Two ways to compare, chosen by :class:`CMCConfig`:

* ``CMCConfig.cmcr()``: a faithful re-implementation of the R package cmcR 0.1.11
  (``comparison_allTogether`` over -30..30 degrees by 3, ``decision_CMC`` original and High
  CMC, ``decision_combineDirections``), down to its cell division (CImg ``imsplit``), its
  nearest-neighbour CImg rotation, its zero-filled FFT cross-correlation and its
  pairwise-complete correlation at the chosen offset.
* ``CMCConfig()`` (the default): full 360 degree search. A coarse global alignment (from
  :mod:`balllink.align`; a brute-force search over coarse angles with its masked NCC when
  it finds nothing) gives the pose; both scans are block-averaged to 12.5 µm, the reference's
  valid bounding box is cut into 8x8 cells (cells more than 70 % missing are dropped), and
  each cell is searched in the target warped by that pose over +-4 pixels (50 µm) with
  masked normalised cross-correlation (per-offset normalisation over jointly valid pixels).
  Before the cells are cut, both scans are high-passed at 200 µm (``cell_highpass_um``):
  a cell of ~420 µm holds only a few of the longer waves, which gave non-matching cells
  chance correlations; the fine individual marks carry the match. Congruent cells follow
  the High CMC rule in each direction (3 px, 0.40); the count sums both directions;
  ``raw_score`` = congruent share of the compared cells x their mean correlation, and
  ``score`` is its logistic calibration (centre 0.14, width 0.02: `CAL_CENTER`, `CAL_WIDTH`);
  ``lead`` = score >= 0.5.
  The final pose is a least-squares rigid fit to the congruent cells of both directions.
  Measured on Fadul (benchmarks/eval_fadul.py): searching cells at the coarse angle only
  separates better than a +-2 degree window (fewer chance maxima for non-matches) and is
  three times cheaper, so the default rotation window is 0.

Pose convention (also :mod:`balllink.align`'s): ``rotation_deg`` in [0, 360) and
``translation_um = (dy, dx)`` say that scan ``b`` rotated counter-clockwise (as displayed
with row 0 on top, the sense of ``skimage.transform.rotate``) by ``rotation_deg`` about its
array centre, then moved by ``(dy, dx)`` micrometres (down, right), with both array centres
superposed, lands on scan ``a``.

One module per job: ``_config`` (`CMCConfig`), ``_result`` (`Comparison`,
`DirectionResult`, the cells table), ``_cmcr`` (the cmcR-faithful method), ``_prepare``
(per-scan work of the default method, cached; `mirror_scan`), ``_coarse`` (its coarse
poses), ``_cells`` (its cell search and final pose), ``_consensus`` (decisions, combining
directions), ``_calibration`` (raw score and score), ``_compare`` (`compare`,
`compare_many`: checks, preparation, handedness).

>>> import balllink as bl
>>> from balllink.comparison import CMCConfig, compare
>>> compare is bl.compare, CMCConfig.cmcr().search
(True, 'window')
"""

from __future__ import annotations

from ._calibration import CAL_CENTER, CAL_WIDTH
from ._compare import compare, compare_many
from ._config import CMCConfig
from ._prepare import mirror_scan, prepared
from ._result import CELL_DTYPE, Comparison, DirectionResult

__all__ = [
    "CAL_CENTER",
    "CAL_WIDTH",
    "CELL_DTYPE",
    "CMCConfig",
    "Comparison",
    "DirectionResult",
    "compare",
    "compare_many",
    "mirror_scan",
    "prepared",
]
