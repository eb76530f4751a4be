"""The default preparation chain, its flags, and preparation on use.

`preprocess` runs the steps with the options in `DEFAULTS` and records a summary in
``meta["prepared"]``; `flags_of` reads what a user of a scan should know; and
`prepare_if_needed` prepares a scan only when its data say it is not prepared yet, once
per scan object.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .._scan import Scan, data_fingerprint
from ..errors import PreprocessError
from ._breech_face import find_breech_face
from ._checks import check_scan, scan_name
from ._filters import bandpass, level, remove_spikes, resample, trim_edges
from ._state import (
    GROSS_OUTLIER_UM,
    check_field,
    surface_state,
    without_gross_outliers,
)

log = logging.getLogger(__name__)

#: Default options of `preprocess` (DESIGN.md reference parameters, ISO Gaussian).
DEFAULTS: dict[str, Any] = {
    "roi": "auto",
    "spacing_um": 6.25,
    "short_um": 16.0,
    "long_um": 500.0,
    "convention": "iso",
    "level_method": "median",
    "level_order": 1,
    "despike": True,
    "spike_threshold": 8.0,
    "trim_um": 12.5,
    "margin_um": 0.0,
    "min_quality": 0.5,
    "crop": True,
    "refilter": "auto",
}

#: Scans with less usable breech face than this (mm²) after preparation are flagged
#: ``small_area``; a comparison of such a scan cannot yield a lead (see
#: `balllink.CMCConfig.min_area_mm2`). A 9 mm breech face holds about 5-7 mm².
MIN_AREA_MM2 = 2.0


class _Cropped(NamedTuple):
    """A scan cut to a bounding box, and the box's first pixel in the input."""

    scan: Scan
    origin_px: tuple[int, int]  # (row, column)


def _crop(scan: Scan, mask: np.ndarray, pad_px: int) -> _Cropped:
    """Cut ``scan`` to the bounding box of ``mask`` plus ``pad_px``; NaN outside ``mask``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(0, rows[0] - pad_px), min(mask.shape[0], rows[-1] + pad_px + 1)
    x0, x1 = max(0, cols[0] - pad_px), min(mask.shape[1], cols[-1] + pad_px + 1)
    z = scan.heights[y0:y1, x0:x1].copy()
    m = mask[y0:y1, x0:x1]
    z[~m] = np.nan
    meta = scan.with_history("crop", rows=(int(y0), int(y1)), cols=(int(x0), int(x1)))
    return _Cropped(scan.replace(heights=z, mask=m, meta=meta), (int(y0), int(x0)))


def preprocess(scan: Scan, *, strict: bool = False, **options: Any) -> Scan:
    """Turn a scan (raw or already processed) into a comparable breech-face surface.

    Runs `find_breech_face`, crops to it, `remove_spikes`, `level`, the low-pass half of
    `bandpass` at the native spacing (it doubles as anti-aliasing), `resample`, the
    high-pass half of `bandpass`, and `trim_edges`. Scans already cut to their breech face
    (e.g. the processed Fadul scans) keep their region and are not filtered again
    (``refilter="auto"``): they come out nearly unchanged, so processed and raw inputs mix.

    Defaults follow cmcR's reference parameters (DESIGN.md) with the ISO 16610-61
    Gaussian: band-pass 16-500 µm, robust (median) plane, 6.25 µm output.

    Parameters
    ----------
    scan : Scan
    strict : bool, default False
        When no breech face is found in a raw scan: raise `PreprocessError` (True, the
        opt-in refusal) or return the scan processed over all its measured points,
        flagged ``breech_face_not_found`` with ``meta["prepared"]["ok"] = False`` (False).
        A scan already cut to its breech face (`surface_state`) or carrying the file's ROI
        keeps its region whatever its ring geometry: an irregular ring is flagged
        ``ring_irregular``, never refused.
    **options
        roi : {"auto", "fit", "existing", "file"}
            How to find the breech face (see `find_breech_face`; ``"auto"`` uses the
            file's ROI when ``meta["file_mask"]`` holds one).
        spacing_um : float, default 6.25
        short_um, long_um : float or None, default 16 and 500
        convention : {"iso", "cmcr"}, default "iso"
        level_method : {"median", "lstsq"}; level_order : {1, 2}
        despike : bool; spike_threshold : float, default 8
        trim_um : float, default 12.5
        margin_um : float, default 0
        min_quality : float, default 0.5
        crop : bool, default True
            Crop to the breech face's bounding box (plus the trim width).
        refilter : {"auto", True, False}, default "auto"
            Band-pass a scan already cut to its breech face again (True) or not
            (False); "auto" filters only scans whose breech face was found or read.

    Returns
    -------
    Scan
        Heights in µm, NaN outside the breech face, on the ``spacing_um`` grid.
        ``meta["prepared"]`` holds ``ok``, ``quality``, ``flags``, ``reason``, ``state``
        (the `surface_state` of the input), ``filtered``, ``area_mm2``, ``spacing_um``, ``options``,
        ``breech_face`` (circles in input µm) and ``origin_um``: the position, in the input
        scan's µm coordinates, of output pixel (0, 0).

    Raises
    ------
    PreprocessError
        Naming the scan: when nothing usable is left, or when no breech face is found in a
        raw scan and ``strict`` is True.

    Notes
    -----
    ``meta["prepared"]["flags"]`` lists what a user of the scan should know, as
    ``{"code", "message"}`` dicts: ``breech_face_not_found`` (raw scan, no ring found: all
    measured points kept), ``ring_irregular`` (already cut region kept though far from an
    annulus: a hole touching or opening to the edge, missing sectors), ``small_area`` (less
    than `MIN_AREA_MM2` of breech face: its comparisons cannot yield a lead) and, from
    `prepare_if_needed`, ``auto_prepared``.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> yy, xx = np.mgrid[:240, :240] * 12.5
    >>> r = np.hypot(yy - 1500, xx - 1500)
    >>> z = np.where(r < 400, -60.0, 0.0) + np.where(r > 1100, -0.5 * (r - 1100), 0.0)
    >>> z = z + np.random.default_rng(1).normal(0, 0.5, z.shape) + 0.02 * xx
    >>> prep = bl.preprocess(bl.Scan(z, spacing_um=12.5, source="demo.x3p"))
    >>> prep.spacing_um, prep.meta["prepared"]["ok"]
    ((6.25, 6.25), True)
    """
    check_scan(scan, "preprocess")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(
            f"preprocess: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **options}
    check_field(scan, opts["spacing_um"])
    cleaned = without_gross_outliers(scan)
    scan, gross = cleaned.scan, cleaned.removed
    refilter = opts["refilter"]
    if refilter not in ("auto", True, False):
        raise ValueError(f"refilter must be 'auto', True or False, got {refilter!r}")
    roi = opts["roi"]
    if roi == "auto" and scan.meta.get("file_mask") is not None:
        if np.shape(scan.meta["file_mask"]) == scan.shape:
            roi = "file"
    state = surface_state(scan)
    if roi == "auto":
        roi = "existing" if state.cut else "fit"
    face = find_breech_face(scan, method=roi, margin_um=opts["margin_um"])
    flags: list[dict[str, str]] = []
    if gross:
        flags.append(
            _flag(
                "gross_outliers",
                f"{gross} point(s) more than {GROSS_OUTLIER_UM:g} µm from the scan's median "
                "height set to not measured",
            )
        )
    low = face.quality < opts["min_quality"]
    if face.method == "fit" and (low or not face.mask.any()):
        reason = face.details.get("reason") or (
            f"ring fit quality {face.quality:.2f} < min_quality {opts['min_quality']}"
        )
        msg = f"no breech face found in scan {scan_name(scan)}: {reason}"
        if strict:
            raise PreprocessError(msg + " (strict=True; without it the scan is kept, flagged)")
        log.warning("%s; processed over all its measured points, flagged", msg)
        flags.append(_flag("breech_face_not_found", f"{reason}; all measured points kept"))
        mask = scan.mask
    else:
        mask = face.mask if face.mask.any() else scan.mask
        if low or face.details.get("note"):
            # an already cut scan (or the file's ROI) keeps its region: the ring fit is
            # geometry, reported, never a reason to drop usable evidence
            note = face.details.get("note") or "the region is far from an annulus"
            flags.append(
                _flag(
                    "ring_irregular",
                    f"breech-face region kept as cut ({face.method}); ring fit quality "
                    f"{face.quality:.2f}: {note}",
                )
            )
    meta = scan.with_history("find_breech_face", **face.as_dict())
    work = scan.replace(meta=meta)
    origin = (0, 0)
    if opts["crop"]:
        pad = 2 + math.ceil(opts["trim_um"] / min(scan.spacing_um))
        cropped = _crop(work, mask, pad)
        work, origin = cropped.scan, cropped.origin_px
    else:
        work = work.replace(heights=np.where(mask, work.heights, np.nan), mask=mask)
    if opts["despike"]:
        work = remove_spikes(work, threshold=opts["spike_threshold"])
    work = level(work, method=opts["level_method"], order=opts["level_order"])
    if refilter == "auto":
        # an input already cut to its breech face and free of form was band-passed by
        # whoever cut it: filtering it again would only eat its longest wavelengths and
        # its edges. Cut but with form left (a raw export masked to its ROI): filter.
        refilter = not (face.method == "existing" and state.filtered)
    short_um = opts["short_um"] if refilter else None
    long_um = opts["long_um"] if refilter else None
    if short_um is not None:
        work = bandpass(work, short_um=short_um, long_um=None, convention=opts["convention"])
    # The ISO low-pass at 16 µm already band-limits far below the new Nyquist (32 %
    # transmission at 12.5 µm): a second anti-aliasing Gaussian would only cost time.
    work = resample(work, spacing_um=opts["spacing_um"], anti_aliasing=short_um is None)
    if long_um is not None:
        work = bandpass(work, short_um=None, long_um=long_um, convention=opts["convention"])
    changed = (
        short_um is not None
        or long_um is not None
        or not work.meta["history"][-1].get("skipped", False)
    )
    if opts["trim_um"] and changed:
        work = trim_edges(work, width_um=opts["trim_um"])
    if work.n_valid == 0:
        raise PreprocessError(
            f"scan {scan_name(scan)}: nothing usable left after preprocessing "
            f"({scan.n_valid} measured points in, {face.method} breech face)"
        )
    area_mm2 = work.area_mm2
    if area_mm2 < MIN_AREA_MM2:
        flags.append(_small_area_flag(area_mm2))
    for f in flags:
        log.info("%s: flagged %s: %s", scan_name(scan), f["code"], f["message"])
    dy, dx = scan.spacing_um
    prepared = {
        "ok": not any(f["code"] == "breech_face_not_found" for f in flags),
        "quality": round(float(face.quality), 4),
        "reason": "; ".join(f["message"] for f in flags),
        "flags": flags,
        "state": state.as_dict(),
        "filtered": bool(refilter),
        "area_mm2": round(area_mm2, 4),
        "spacing_um": work.spacing_um,
        "origin_um": (origin[0] * dy, origin[1] * dx),
        "options": {k: opts[k] for k in DEFAULTS},
        "breech_face": face.as_dict(),
    }
    prepared["fingerprint"] = data_fingerprint(work.heights, work.mask)
    meta = dict(work.meta)
    meta["prepared"] = prepared
    return work.replace(meta=meta)


def _flag(code: str, message: str) -> dict[str, str]:
    """One entry of ``meta["prepared"]["flags"]``."""
    return {"code": code, "message": message}


def _small_area_flag(area_mm2: float) -> dict[str, str]:
    return _flag(
        "small_area",
        f"{area_mm2:.2f} mm² of usable breech face, less than {MIN_AREA_MM2:g} mm²: "
        "its comparisons cannot yield a lead",
    )


def flags_of(scan: Scan) -> list[dict[str, str]]:
    """What a user of the scan should know: the flags `preprocess` gave it
    (``meta["prepared"]["flags"]``), and ``small_area`` whenever its usable area is below
    `MIN_AREA_MM2`, even if it was prepared elsewhere (a crop of a prepared scan, a
    simulated one). [] when none.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocessing import flags_of
    >>> z = np.random.default_rng(0).normal(size=(64, 64))
    >>> [f["code"] for f in flags_of(bl.preprocess(bl.Scan(z, spacing_um=6.25)))]
    ['ring_irregular', 'small_area']
    >>> [f["code"] for f in flags_of(bl.Scan(z, spacing_um=6.25))]  # never prepared
    ['small_area']
    """
    prepared = scan.meta.get("prepared")
    flags = prepared.get("flags") if isinstance(prepared, Mapping) else None
    out = [dict(f) for f in flags] if isinstance(flags, list) else []
    if scan.area_mm2 < MIN_AREA_MM2 and not any(f.get("code") == "small_area" for f in out):
        out.append(_small_area_flag(scan.area_mm2))
    return out


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SELF = object()  # cache value: "the scan itself" (a value never refers to its key)


def _claims_prepared(scan: Scan) -> str:
    """ "made" when `preprocess` made exactly these data (its fingerprint matches), "claims"
    when the scan only says it is prepared, "" when it does not."""
    prepared = scan.meta.get("prepared")
    # a scan `preprocess` made says so whether or not it found a ring (``ok``)
    if isinstance(prepared, Mapping) and (prepared.get("ok") or "flags" in prepared):
        if prepared.get("fingerprint") == data_fingerprint(scan.heights, scan.mask):
            return "made"
        spacing = prepared.get("spacing_um")
        try:
            same = spacing is None or np.allclose(spacing, scan.spacing_um, rtol=1e-6)
        except (TypeError, ValueError):
            same = False
        return "claims" if same else ""
    sim = scan.meta.get("simulation")
    return "claims" if isinstance(sim, Mapping) and sim.get("raw") is False else ""


def _claim_checked(scan: Scan) -> Scan:
    """``scan`` with its checked claim recorded in ``meta["prepared"]``, fingerprint
    included, so that a copy (the scan stored and read back, or sent to another process)
    is recognised without a second check, and never prepared a second time."""
    claimed = scan.meta.get("prepared")
    prepared = dict(claimed) if isinstance(claimed, Mapping) else {}
    prepared.setdefault("ok", True)
    prepared["flags"] = list(prepared.get("flags") or [])
    prepared["spacing_um"] = scan.spacing_um
    prepared["claim_checked"] = "claimed prepared; surface_state finds it cut, filtered, square"
    prepared["fingerprint"] = data_fingerprint(scan.heights, scan.mask)
    meta = dict(scan.meta)
    meta["prepared"] = prepared
    return scan.replace(meta=meta)


def prepare_if_needed(scan: Scan, **options: Any) -> Scan:
    """Return ``scan`` when it is already prepared, else ``preprocess(scan, **options)``.

    A scan counts as prepared when `preprocess` made exactly these data (the fingerprint
    it records in ``meta["prepared"]`` matches the heights), or when it says it is
    prepared (``meta["prepared"]`` at its present spacing, or a prepared-like simulated
    scan) *and* its data agree: square pixels and `surface_state` finds it cut and free of
    form; the scan returned then records the check (``meta["prepared"]`` with a
    fingerprint), so its copies need no second one. A claim alone (e.g. read back from a
    file and edited since) is not trusted. Anything else goes through the default chain
    (`preprocess`, non-strict), logged and flagged ``auto_prepared``. The decision is
    cached per scan object, so a scan compared many times is checked and prepared once.

    Used by `balllink.compare`, `balllink.compare_many`, `balllink.embed`,
    `balllink.CasingIndex` and the lead database, so results do not depend on whether the
    caller remembered to prepare.

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from balllink.preprocessing import prepare_if_needed, flags_of
    >>> z = np.random.default_rng(0).normal(size=(320, 320))
    >>> prep = prepare_if_needed(bl.Scan(z, spacing_um=6.25))
    >>> "auto_prepared" in [f["code"] for f in flags_of(prep)]
    True
    >>> prepare_if_needed(prep) is prep
    True
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"prepare_if_needed: expected a balllink.Scan, got {type(scan).__name__}")
    key = tuple(sorted(options.items()))
    try:
        cached = _CHECKED.get(scan, {}).get(key)
    except TypeError:  # unhashable option values: no cache
        cached, key = None, None
    if cached is not None:
        return scan if cached is _SELF else cached
    dy, dx = scan.spacing_um
    square = abs(dy - dx) <= 1e-6 * max(dy, dx)
    claim = _claims_prepared(scan)
    if claim == "made":
        out = scan
    elif claim and square and scan.n_valid and surface_state(scan).filtered:
        out = _claim_checked(scan)
    else:
        why = "claims to be prepared but its data disagree" if claim else "not prepared"
        log.info(
            "%s: %s; preparing it with the default chain (balllink.preprocess)",
            scan_name(scan),
            why,
        )
        out = preprocess(scan, **options)
        prepared = dict(out.meta["prepared"])
        prepared["flags"] = [
            *prepared["flags"],
            _flag("auto_prepared", f"{why}: prepared with the default chain on use"),
        ]
        meta = dict(out.meta)
        meta["prepared"] = prepared
        out = out.replace(meta=meta)
    if key is not None:
        _CHECKED.setdefault(scan, {})[key] = _SELF if out is scan else out
        if out is not scan:
            _CHECKED.setdefault(out, {})[key] = _SELF
    return out
