"""Reading X3P (ISO 25178-72) files for `balllink.io`: guarded, repaired, in micrometres.

x3pio decodes the data. The modules beside this one stand in front of it and deal with what
real exports and hostile files do:

* `balllink.io._zip`: the zip is opened by us first: the declared uncompressed sizes are
  checked against `MAX_UNCOMPRESSED_BYTES` before anything is decompressed, and every read is
  capped at the declared size (a zip bomb or a truncated archive is refused within
  milliseconds); the content may sit in a folder of the zip, beside ``__MACOSX/``, ``._*``
  and ``.DS_Store`` junk;
* `balllink.io._x3p_xml`: ``main.xml`` is parsed with defusedxml with DTDs forbidden (no
  DOCTYPE, no entity expansion, no external entity); deviations of ``main.xml`` are repaired
  before x3pio reads it (each one recorded in the quirks): the root element ``<ISO5436>`` of
  older x3ptools, a ``Revision`` x3pio refuses (``ISO5436-2000``, ``ISO5436–2000`` with an
  en dash...), an empty ``<Offset/>``, elements out of place in ``<Axes>`` (``<Origin>``);
  integer data types of incremental X/Y axes are ignored (noted);
* `balllink.io._x3p_container`: the declared grid is checked against the data file before
  x3pio reads it (empty grid, data shorter or longer than the grid, a grid larger than the
  limit); the checksums are verified there, so that a mismatch is reported
  (``meta["checksum"]``) and a warning given here instead of an exception;
* here: ``+Inf``, ``-Inf`` and huge sentinels (``|z| >= 1e15``, such as ±3.4e38 or 1e30) are
  invalid points (NaN), before the units are judged; increments written in micrometres
  instead of metres are detected by magnitude (not in files balllink wrote); a negative
  lateral increment is turned positive by reversing that axis of the array;
* `balllink.io._x3p_mask`: ``bindata/mask.png`` is decoded (annotation or
  region-of-interest mask, see there).

Writing is `balllink.io._x3p_write`.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET  # nosec B405 - only to serialise a defused tree

import numpy as np
import x3pio

from ._x3p_container import Z_TYPE_NAME, Container, open_container
from ._x3p_mask import read_masks
from ._x3p_xml import child, iso_date, mask_hints, text_of
from ._zip import MAX_UNCOMPRESSED_BYTES, Failure

__all__ = [
    "MASK_URI",
    "META_URI",
    "SENTINEL_MAGNITUDE",
    "ChecksumWarning",
    "X3pContent",
    "read_x3p",
]

#: A lateral increment at or above this is taken as micrometres (1 mm per pixel in metres is
#: not a breech-face scan; 0.001 µm per pixel is not either).
LATERAL_UM_THRESHOLD = 1e-3
#: A robust height range (0.5 to 99.5 percentile) at or above this is taken as micrometres
#: (1 cm of relief in metres is not a primer surface; 0.01 µm over a whole scan is not either).
Z_UM_THRESHOLD = 1e-2
#: A stored height at least this large (in the file's unit, metres or micrometres) is an
#: invalid-point sentinel such as 3.4e38 (float32 maximum) or 1e30, not a measurement.
SENTINEL_MAGNITUDE = 1e15

#: VendorSpecificIDs of the files balllink adds to the X3P files it writes (Amd 1:2020 places
#: them at ``balllink\\meta.json`` and ``balllink\\mask.png`` in the container).
META_URI = "http://balllink/meta.json"
MASK_URI = "http://balllink/mask.png"


class ChecksumWarning(UserWarning):
    """An X3P file has a missing or wrong MD5 checksum; it was read anyway."""


@dataclass
class X3pContent:
    """What `read_x3p` found: heights in µm (float32), spacing, ROI, annotations, meta, quirks."""

    heights_um: np.ndarray
    spacing_um: tuple[float, float]
    file_mask: np.ndarray | None
    meta: dict[str, Any]
    quirks: list[str] = field(default_factory=list)
    checksum: str = "ok"
    annotations: dict[str, np.ndarray] = field(default_factory=dict)


def _parse(container: Container, fail: Failure) -> x3pio.Surface:
    """x3pio on the container rebuilt in memory (repaired main.xml, junk and folders gone)."""
    main = container.main
    if container.changed:
        main = ET.tostring(container.root, encoding="utf-8", xml_declaration=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as rebuilt:
        rebuilt.writestr("main.xml", main)
        for name, content in {**container.payloads, **container.extra}.items():
            rebuilt.writestr(name, content)
    try:
        parsed = x3pio.X3pFile.loads(buffer.getvalue(), verify=False)
    except x3pio.X3pError as error:
        raise fail(f"x3pio cannot read it: {error}") from None
    if not isinstance(parsed, x3pio.Surface):
        kind = type(parsed).__name__.lower()
        raise fail(f"holds a {kind} (FeatureType {container.feature}), not a surface on a grid")
    return parsed


def _invalid_points(z: np.ndarray, infinite: tuple[int, int], quirks: list[str]) -> None:
    """+Inf, -Inf and huge sentinels are invalid points: NaN in place, each kind noted."""
    for label, count in zip(("+Inf", "-Inf"), infinite):
        if count:
            quirks.append(f"{count} point(s) hold {label}: invalid-point marker, read as NaN")
    with np.errstate(invalid="ignore"):
        huge = np.isfinite(z) & (np.abs(z) >= SENTINEL_MAGNITUDE)
    count = int(np.count_nonzero(huge))
    if count:
        shown = ", ".join(f"{v:g}" for v in np.unique(z[huge])[:3])
        quirks.append(
            f"{count} point(s) hold the sentinel {shown} (|z| >= {SENTINEL_MAGNITUDE:g}): "
            "invalid-point marker, read as NaN"
        )
    z[~np.isfinite(z) | huge] = np.nan


def _to_micrometres(
    z: np.ndarray, header: x3pio.Header, own_file: bool, quirks: list[str]
) -> tuple[tuple[float, float], np.ndarray]:
    """Spacing ``(dy, dx)`` and heights in µm; units judged by magnitude except in own files."""
    spacing = []
    lateral_in_um = False
    for axis_name, axis in (("y", header.y), ("x", header.x)):
        increment = abs(float(axis.increment))
        if increment >= LATERAL_UM_THRESHOLD and not own_file:
            quirks.append(f"{axis_name} increment {increment:g} written in micrometres, not metres")
            spacing.append(increment)
            lateral_in_um = True
        else:
            spacing.append(increment * 1e6)
    factor = 1e6
    if not own_file:
        values = z[np.isfinite(z)]
        step = max(1, values.size // 200_000)
        low, high = np.percentile(values[::step], [0.5, 99.5])
        z_range = float(high - low)
        if z_range >= Z_UM_THRESHOLD or (z_range == 0 and lateral_in_um):
            quirks.append(f"heights written in micrometres, not metres (range {z_range:g})")
            factor = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        heights = (z * factor).astype(np.float32)
    heights[~np.isfinite(heights)] = np.nan
    dy, dx = (float(f"{s:.12g}") for s in spacing)
    return (dy, dx), heights


def _own_meta(extensions: Any, quirks: list[str]) -> dict[str, Any]:
    if META_URI not in extensions:
        return {}
    try:
        payload = json.loads((extensions[META_URI] or b"").decode("utf-8"))
    except (ValueError, UnicodeDecodeError, x3pio.X3pError) as error:
        quirks.append(f"balllink meta.json unreadable ({error}); ignored")
        return {}
    return payload if isinstance(payload, dict) else {}


def _metadata(
    parsed: x3pio.Surface, container: Container, stored: dict[str, Any]
) -> dict[str, Any]:
    metadata = parsed.metadata
    header = parsed.header
    record2 = child(container.root, "Record2")
    instrument = None
    x3p_meta: dict[str, Any] = {
        "revision": container.revision,
        "z_data_type": Z_TYPE_NAME[container.z_type],
        "increments": [float(header.x.increment), float(header.y.increment)],
        "z_increment": float(header.z.increment),
        "layers": len(parsed.layers),
        "extensions": list(parsed.extensions),
    }
    if container.origin is not None:
        x3p_meta["origin"] = container.origin
    if metadata is not None:
        parts = metadata.instrument
        instrument = " ".join(p for p in (parts.manufacturer, parts.model) if p) or None
        x3p_meta.update(
            manufacturer=parts.manufacturer,
            model=parts.model,
            serial=parts.serial,
            version=parts.version,
            calibration_date=iso_date(text_of(record2, "CalibrationDate")),
            probing_type=(
                metadata.probing_system.type.value if metadata.probing_system.type else None
            ),
            probing_identification=metadata.probing_system.identification,
        )
    meta: dict[str, Any] = {
        "instrument": instrument,
        "date": iso_date(text_of(record2, "Date")),
        "creator": metadata.creator if metadata is not None else None,
        "comment": metadata.comment if metadata is not None else None,
    }
    own_meta = stored.get("meta")
    if isinstance(own_meta, dict):
        meta.update(own_meta)
    meta["x3p"] = x3p_meta
    return meta


def _masks(
    container: Container,
    parsed: x3pio.Surface,
    stored: dict[str, Any],
    shape: tuple[int, int],
    quirks: list[str],
    x3p_meta: dict[str, Any],
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The region of interest (None unless one is stored) and the named annotations."""
    own_png = None
    if MASK_URI in parsed.extensions:
        try:
            own_png = parsed.extensions[MASK_URI] or b""
        except x3pio.X3pError:
            own_png = b""
    own = stored.get("mask") if isinstance(stored.get("mask"), dict) else {}
    background, names = mask_hints(container.root)
    member = container.mask_member
    read = read_masks(
        shape,
        own_png=own_png,
        own_colours=own.get("roi") if isinstance(own.get("roi"), list) else None,
        png=None if member is None else container.extra.get(member, b""),
        label=container.prefix + (member or ""),
        background=background,
        names=names,
    )
    quirks += read.quirks
    x3p_meta.update(read.described)
    return read.roi, read.annotations


def _positive_axes(
    header: x3pio.Header,
    heights: np.ndarray,
    roi: np.ndarray | None,
    annotations: dict[str, np.ndarray],
    quirks: list[str],
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """Reverse the rows (CY) or columns (CX) stored with a negative increment."""
    for name, axis, what, axis_index in (
        ("CY", header.y, "rows", 0),
        ("CX", header.x, "columns", 1),
    ):
        increment = float(axis.increment)
        if increment >= 0:
            continue
        quirks.append(
            f"{name} increment {increment:g} is negative (data stored in reverse); the {what} "
            "are reversed so that the increment is positive"
        )
        heights = np.ascontiguousarray(np.flip(heights, axis_index))
        roi = None if roi is None else np.ascontiguousarray(np.flip(roi, axis_index))
        annotations = {
            k: np.ascontiguousarray(np.flip(v, axis_index)) for k, v in annotations.items()
        }
    return heights, roi, annotations


def read_x3p(path: Path, *, limit: int | None = None) -> X3pContent:
    """Read an X3P file into heights in µm, spacing, ROI, annotations and metadata.

    Raises `ScanFormatError` naming ``path`` for every kind of damage; see the module text.
    """
    limit = MAX_UNCOMPRESSED_BYTES if limit is None else limit
    fail = Failure(str(path))
    quirks: list[str] = []
    container = open_container(path, limit, fail, quirks)
    parsed = _parse(container, fail)
    if container.mismatched:
        warnings.warn(
            f"{path}: the MD5 checksum of {', '.join(container.mismatched)} does not match; the "
            "file was changed or damaged after it was written. Read anyway.",
            ChecksumWarning,
            stacklevel=3,
        )
    elif container.missing:
        warnings.warn(
            f"{path}: no MD5 checksum for {', '.join(container.missing)}; integrity not verified.",
            ChecksumWarning,
            stacklevel=3,
        )

    layers = parsed.layers
    if len(layers) > 1:
        quirks.append(f"{len(layers)} layers; the first is read")
    z = np.asarray(layers[0].z, dtype=np.float64)
    if not z.flags.writeable:
        z = z.copy()
    _invalid_points(z, container.infinite, quirks)
    if not np.isfinite(z).any():
        raise fail(f"the grid {container.grid} holds no finite height value")
    # Files balllink wrote follow the standard (metres): no guessing for them.
    own_file = META_URI in parsed.extensions
    spacing, heights = _to_micrometres(z, parsed.header, own_file, quirks)
    del z
    stored = _own_meta(parsed.extensions, quirks)
    meta = _metadata(parsed, container, stored)
    roi, annotations = _masks(container, parsed, stored, heights.shape, quirks, meta["x3p"])
    heights, roi, annotations = _positive_axes(parsed.header, heights, roi, annotations, quirks)
    return X3pContent(heights, spacing, roi, meta, quirks, container.status, annotations)
