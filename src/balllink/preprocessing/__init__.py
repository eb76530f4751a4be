"""Preprocessing: from a raw scan to a comparable breech-face surface.

Each step takes a `Scan` and returns a new one (`find_breech_face` returns a `BreechFace`),
so the steps chain and every intermediate can be inspected. `preprocess` runs the default
chain::

    find_breech_face -> crop -> remove_spikes -> level -> bandpass(low-pass)
        -> resample -> bandpass(high-pass) -> trim_edges

and records every step with its parameters in ``meta["history"]`` and a summary in
``meta["prepared"]``.

Conventions
-----------
- Positions are in micrometres with pixel ``(i, j)`` centred at ``(i * dy, j * dx)``.
- NaN (or ``scan.mask == False``) means *not measured*; every filter is NaN-aware by
  normalised convolution, ``G(z * w) / G(w)`` (`balllink._grid.nan_gaussian`), never by
  replacing NaN with zero.
- The Gaussian filters follow ISO 16610-61 by default: a cutoff wavelength ``λ`` gives
  ``σ = λ * sqrt(ln 2 / 2) / π`` (50 % transmission at ``λ``). ``convention="cmcr"``
  uses cmcR's ``σ = λ / (2π)`` instead.

Modules (private): ``_breech_face`` (`find_breech_face`), ``_filters`` (`level`,
`remove_spikes`, `bandpass`, `resample`, `trim_edges`), ``_state`` (`surface_state` and
the checks of a raw field), ``_chain`` (`preprocess`, `flags_of`, `prepare_if_needed`).

>>> import balllink as bl
>>> from balllink.preprocessing import MIN_AREA_MM2, preprocess
>>> preprocess is bl.preprocess, MIN_AREA_MM2
(True, 2.0)
"""

from ._breech_face import BreechFace, find_breech_face
from ._chain import DEFAULTS, MIN_AREA_MM2, flags_of, prepare_if_needed, preprocess
from ._filters import bandpass, level, remove_spikes, resample, trim_edges
from ._state import (
    CUT_MAX_RELIEF_UM,
    FIELD_RANGE_MM,
    FILTERED_MAX_FORM_UM,
    FILTERED_MAX_RELIEF_UM,
    GROSS_OUTLIER_UM,
    MAX_OUTPUT_PIXELS,
    SurfaceState,
    surface_state,
)

__all__ = [
    "CUT_MAX_RELIEF_UM",
    "DEFAULTS",
    "FIELD_RANGE_MM",
    "FILTERED_MAX_FORM_UM",
    "FILTERED_MAX_RELIEF_UM",
    "GROSS_OUTLIER_UM",
    "MAX_OUTPUT_PIXELS",
    "MIN_AREA_MM2",
    "BreechFace",
    "SurfaceState",
    "bandpass",
    "find_breech_face",
    "flags_of",
    "level",
    "prepare_if_needed",
    "preprocess",
    "remove_spikes",
    "resample",
    "surface_state",
    "trim_edges",
]
