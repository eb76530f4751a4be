"""What the heights say about a scan before it is prepared.

`surface_state` decides from the data (never from metadata) whether a scan is already cut
to its breech face and band-passed; `check_field` refuses a spacing that cannot be a
breech-face scan's, and `without_gross_outliers` drops points no casing head can have.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._grid import block_mean
from .._scan import Scan
from ..errors import PreprocessError
from ._checks import check_scan, scan_name

log = logging.getLogger(__name__)

#: A scan whose heights, once a robust plane is removed, span less than this (1st to 99th
#: percentile, µm) holds no crater, casing head or primer roll-off: it is already cut to its
#: breech face. Measured: Fadul 5-14 µm, raw DFSC exports inside their own ROI 28-33 µm,
#: simulated raw casings over the whole field 63-107 µm.
CUT_MAX_RELIEF_UM = 30.0
#: An already cut scan is taken as already band-passed (and not filtered again) when its
#: relief is below this and the quadratic form left after the plane (root mean square of
#: the order-2 part of a least-squares fit, µm) is below `FILTERED_MAX_FORM_UM`. Measured:
#: Fadul relief <= 14 µm and form <= 0.77 µm; raw DFSC exports cut to their ROI: relief
#: >= 28 µm, form >= 1.75 µm; simulated prepared scans: relief <= 6.5 µm, form <= 0.11 µm.
FILTERED_MAX_RELIEF_UM = 20.0
FILTERED_MAX_FORM_UM = 1.0


@dataclass(frozen=True)
class SurfaceState:
    """What the heights say about how far a scan was already processed.

    Attributes
    ----------
    relief_um : float
        1st-99th percentile range of the heights after a plane fit (µm).
    form_um : float
        Root mean square of the quadratic part of an order-2 fit (µm): curvature left.
    valid_mm2 : float
        Usable area (mm²).
    cut : bool
        Already cut to its breech face (``relief_um < CUT_MAX_RELIEF_UM``).
    filtered : bool
        Already cut and free of form (band-passed): ``relief_um < FILTERED_MAX_RELIEF_UM``
        and ``form_um < FILTERED_MAX_FORM_UM``.
    """

    relief_um: float
    form_um: float
    valid_mm2: float
    cut: bool
    filtered: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "relief_um": round(self.relief_um, 3),
            "form_um": round(self.form_um, 3),
            "valid_mm2": round(self.valid_mm2, 4),
            "cut": self.cut,
            "filtered": self.filtered,
        }


def surface_state(scan: Scan, *, work_um: float = 25.0) -> SurfaceState:
    """Decide from the data whether a scan is already cut and band-passed.

    Never from metadata: a file's claim to be prepared is checked against this. The heights
    are averaged onto a ``work_um`` grid; a plane and an order-2 surface are fitted by least
    squares. A scan is *cut* when the plane residual spans less than `CUT_MAX_RELIEF_UM`
    (no crater, casing head or roll-off left), and *filtered* when it is cut, spans less
    than `FILTERED_MAX_RELIEF_UM` and the curvature left is below `FILTERED_MAX_FORM_UM`.

    Parameters
    ----------
    scan : Scan
    work_um : float
        Grid of the test (µm); about 10 ms for a 560 x 560 scan.

    Returns
    -------
    SurfaceState

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocessing import surface_state
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:200, :200] * 12.5
    >>> texture = rng.normal(0, 1.0, (200, 200))
    >>> surface_state(bl.Scan(texture, spacing_um=12.5)).filtered
    True
    >>> bowl = texture + 4e-6 * ((yy - 1250) ** 2 + (xx - 1250) ** 2)
    >>> state = surface_state(bl.Scan(bowl, spacing_um=12.5))
    >>> state.cut, state.filtered
    (True, False)
    """
    check_scan(scan, "surface_state")
    dy, dx = scan.spacing_um
    ky, kx = max(1, round(work_um / dy)), max(1, round(work_um / dx))
    z, share = block_mean(scan.heights, scan.mask, ky, kx)
    ok = share >= 0.5
    if np.count_nonzero(ok) < 12:  # too small for a block grid: use every point
        z, ok, ky, kx = scan.heights, scan.mask, 1, 1
    iy, ix = np.nonzero(ok)
    y = iy * (dy * ky / 1000.0)
    x = ix * (dx * kx / 1000.0)
    y, x = y - y.mean(), x - x.mean()
    v = z[iy, ix].astype(np.float64)
    plane = np.stack([np.ones_like(y), y, x], axis=1)
    quad = np.concatenate([plane, np.stack([y * y, x * x, x * y], axis=1)], axis=1)
    r1 = v - plane @ np.linalg.lstsq(plane, v, rcond=None)[0]
    if len(v) >= 12:
        r2 = v - quad @ np.linalg.lstsq(quad, v, rcond=None)[0]
        form = math.sqrt(max(0.0, float(np.mean(r1 * r1) - np.mean(r2 * r2))))
    else:
        form = 0.0
    lo, hi = np.percentile(r1, [1.0, 99.0]) if len(r1) else (0.0, 0.0)
    relief = float(hi - lo)
    cut = relief < CUT_MAX_RELIEF_UM
    filtered = cut and relief < FILTERED_MAX_RELIEF_UM and form < FILTERED_MAX_FORM_UM
    return SurfaceState(relief, form, scan.area_mm2, bool(cut), bool(filtered))


#: Field of view (mm, the longer side) a breech-face scan can have: a 9 mm primer is about
#: 4.4 mm across; a field outside this range means the spacing is in the wrong unit.
FIELD_RANGE_MM = (0.2, 60.0)
#: Largest grid `preprocess` resamples to (pixels).
MAX_OUTPUT_PIXELS = 64_000_000


#: A point this far (µm) from the scan's median height is no measurement of a casing head
#: (its whole relief, crater and tilt included, is well under a millimetre): an invalid
#: marker such as -999999, or a glitch. Such points are set to not measured before anything
#: is fitted, since a few of them would tilt every least-squares fit.
GROSS_OUTLIER_UM = 5000.0


class Cleaned(NamedTuple):
    """`without_gross_outliers`' result: the scan and how many points it lost."""

    scan: Scan
    removed: int


def without_gross_outliers(scan: Scan) -> Cleaned:
    """``scan`` with the points farther than `GROSS_OUTLIER_UM` from its median height
    set to not measured, and their count."""
    z = scan.heights
    median = float(np.median(z[scan.mask]))
    with np.errstate(invalid="ignore"):
        bad = scan.mask & (np.abs(z - median) > GROSS_OUTLIER_UM)
    n = int(np.count_nonzero(bad))
    if not n:
        return Cleaned(scan, 0)
    log.info("%s: %d gross outlier(s) set to not measured", scan_name(scan), n)
    return Cleaned(scan.replace(mask=scan.mask & ~bad), n)


def check_field(scan: Scan, spacing_um: float) -> None:
    """Refuse at once a spacing that cannot be a breech-face scan's (a unit mix-up), before
    a resample to an absurd grid runs for minutes and eats the memory."""
    field_mm = max(n * s for n, s in zip(scan.shape, scan.spacing_um, strict=True)) / 1000.0
    lo, hi = FIELD_RANGE_MM
    out_px = np.prod(
        [n * s / float(spacing_um) for n, s in zip(scan.shape, scan.spacing_um, strict=True)]
    )
    if not lo <= field_mm <= hi or out_px > MAX_OUTPUT_PIXELS:
        raise PreprocessError(
            f"scan {scan_name(scan)}: {scan.shape[0]} x {scan.shape[1]} px at "
            f"{scan.spacing_um} µm per pixel is a field of {field_mm:.3g} mm, not a "
            f"breech-face scan (expected {lo:g}-{hi:g} mm); is the spacing in micrometres? Read it with "
            "read_scan(path, spacing_um=...)"
        )
