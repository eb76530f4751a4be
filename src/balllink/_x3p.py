"""X3P (ISO 25178-72) containers for `balllink.io`: guarded reading, repair, writing.

x3pio decodes and encodes the data. This module stands in front of it and deals with what real
exports and hostile files do:

* the zip is opened by us first: the declared uncompressed sizes are checked against
  `MAX_UNCOMPRESSED_BYTES` before anything is decompressed, and every read is capped at the
  declared size (a zip bomb or a truncated archive is refused within milliseconds); the
  content may sit in a folder of the zip, beside ``__MACOSX/``, ``._*`` and ``.DS_Store`` junk;
* ``main.xml`` is parsed with defusedxml with DTDs forbidden (no DOCTYPE, no entity expansion,
  no external entity);
* the declared grid is checked against the data file before x3pio reads it (empty grid, data
  shorter or longer than the grid, a grid larger than the limit);
* the checksums are verified here, so that a mismatch is reported (``meta["checksum"]``) and a
  warning given instead of an exception;
* deviations of ``main.xml`` are repaired before x3pio reads it (each one recorded in the
  quirks): the root element ``<ISO5436>`` of older x3ptools, a ``Revision`` x3pio refuses
  (``ISO5436-2000``, ``ISO5436–2000`` with an en dash...), an empty ``<Offset/>``, elements
  out of place in ``<Axes>`` (``<Origin>``); integer data types of incremental X/Y axes are
  ignored (noted);
* ``+Inf``, ``-Inf`` and huge sentinels (``|z| >= 1e15``, such as ±3.4e38 or 1e30) are
  invalid points (NaN), before the units are judged; increments written in micrometres instead
  of metres are detected by magnitude; a negative lateral increment is turned positive by
  reversing that axis of the array;
* ``bindata/mask.png`` is decoded by `balllink._x3p_mask` (annotation or region-of-interest
  mask, see there).
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import md5
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree import ElementTree as ET  # nosec B405 - only to serialise a defused tree

import numpy as np
import x3pio
from defusedxml import ElementTree as DefusedET
from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from ._files import jsonable
from ._x3p_mask import (
    add_annotation_mask,
    encode_annotations,
    encode_roi_png,
    find_mask_member,
    parse_colour,
    read_masks,
)
from .errors import ScanFormatError

__all__ = [
    "MAX_UNCOMPRESSED_BYTES",
    "ChecksumWarning",
    "X3pContent",
    "read_x3p",
    "x3p_bytes",
]

logger = logging.getLogger(__name__)

#: Largest total uncompressed size of the members of a container that is read (bytes).
MAX_UNCOMPRESSED_BYTES = 1 << 30
#: Largest number of members in a container.
MAX_MEMBERS = 4096
#: Largest ``main.xml`` (bytes); a DataList of a 1000 x 1000 grid fits.
MAX_XML_BYTES = 64 << 20
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

_JUNK = re.compile(r"(^|/)(__macosx/|\._[^/]*$|\.ds_store$|thumbs\.db$|desktop\.ini$)", re.I)
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_Z_ITEMSIZE = {"I": 2, "L": 4, "F": 4, "D": 8}
_Z_TYPE_NAME = {"I": "int16", "L": "int32", "F": "float32", "D": "float64"}
_AXES_CHILDREN = ("CX", "CY", "CZ", "Rotation")
_REVISION_2000 = x3pio.Revision.ISO5436_2000.value
_REVISION_AMD1 = x3pio.Revision.ISO25178_72_2017_DAM1.value


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


class _Failure:
    """Raises `ScanFormatError` naming the file."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, what: str) -> ScanFormatError:
        return ScanFormatError(f"{self.label}: {what}")


# ---------------------------------------------------------------------------------------------
# XML helpers (namespace-agnostic: elements are matched by local name)
# ---------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(element: ET.Element | None, path: str) -> ET.Element | None:
    for name in path.split("/"):
        if element is None:
            return None
        element = next((c for c in element if _local(c.tag) == name), None)
    return element


def _text(element: ET.Element | None, path: str = "") -> str | None:
    found = _child(element, path) if path else element
    if found is None:
        return None
    return (found.text or "").strip()


def _parse_xml(data: bytes, fail: _Failure) -> ET.Element:
    try:
        return DefusedET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DTDForbidden:
        if re.search(rb"<!ENTITY[^>]*\b(SYSTEM|PUBLIC)\b", data):
            detail = "it declares an external entity"
        elif b"<!ENTITY" in data:
            detail = "it declares entities: entity expansion"
        else:
            detail = "X3P does not use DTDs"
        raise fail(
            f"main.xml has a DOCTYPE; refused because DTDs allow entity expansion and external "
            f"entities ({detail})"
        ) from None
    except EntitiesForbidden:
        raise fail("main.xml declares entities (entity expansion); refused") from None
    except ExternalReferenceForbidden:
        raise fail("main.xml refers to an external entity; refused") from None
    except (ET.ParseError, DefusedXmlException, ValueError, LookupError) as error:
        raise fail(f"main.xml is not well-formed XML: {error}") from None


def _iso_date(text: str | None) -> str | None:
    """The date as written, normalised to ISO 8601 when it parses (no time-zone change)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text


# ---------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------


def _open_zip(stream: io.BufferedReader, fail: _Failure) -> zipfile.ZipFile:
    head = stream.read(4)
    stream.seek(0)
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as error:
        if head.startswith(b"PK"):
            raise fail(
                f"truncated or damaged zip archive ({error}); the end of the file "
                "(zip central directory) is missing or unreadable"
            ) from None
        raise fail(
            f"not a zip archive (it starts with {head!r}); .x3p and .npz files are zip containers"
        ) from None


def _index(archive: zipfile.ZipFile, fail: _Failure, limit: int) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise fail(f"the zip holds {len(infos)} members, more than the limit {MAX_MEMBERS}")
    total = sum(info.file_size for info in infos)
    if total > limit:
        biggest = max(infos, key=lambda info: info.file_size)
        raise fail(
            f"the zip declares {total} bytes uncompressed ({biggest.filename!r}: "
            f"{biggest.file_size}), more than the limit of {limit} bytes; refused "
            "(zip bomb or not a scan)"
        )
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename.replace("\\", "/")
        if info.is_dir() or name.endswith("/") or _JUNK.search(name):
            continue
        members[name] = info
    return members


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, fail: _Failure, cap: int | None = None
) -> bytes:
    cap = info.file_size if cap is None else min(cap, info.file_size)
    if info.file_size > cap:
        raise fail(f"member {info.filename!r} declares {info.file_size} bytes, above {cap}")
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
    ) as e:
        raise fail(f"member {info.filename!r} is damaged, truncated or encrypted: {e}") from None
    if len(data) != info.file_size:
        raise fail(
            f"member {info.filename!r} holds {len(data)} bytes, not the {info.file_size} "
            "its zip entry declares"
        )
    return data


def _member_name(link: str | None) -> str | None:
    """A link of main.xml as a member path, or None if it leaves the container."""
    if not link:
        return None
    text = link.strip().replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _find_main(members: dict[str, zipfile.ZipInfo], fail: _Failure) -> tuple[str, list[str]]:
    """Return the folder prefix holding main.xml and the quirks of finding it."""
    quirks: list[str] = []
    if "main.xml" in members:
        return "", quirks
    lower = {name.lower(): name for name in members}
    if "main.xml" in lower:
        quirks.append(f"main.xml is named {lower['main.xml']!r}")
        members["main.xml"] = members.pop(lower["main.xml"])
        return "", quirks
    nested = [n for n in members if n.lower().endswith("/main.xml")]
    if len(nested) == 1:
        prefix = nested[0][: -len("main.xml")]
        quirks.append(f"content packed in the folder {prefix!r} instead of the zip root")
        if not nested[0].endswith("/main.xml"):
            members[prefix + "main.xml"] = members.pop(nested[0])
        return prefix, quirks
    listing = ", ".join(sorted(members)[:8]) or "nothing"
    if nested:
        raise fail(f"the zip holds {len(nested)} main.xml files ({listing}); which is the scan?")
    raise fail(f"the zip holds no main.xml, so it is not an X3P file (it holds {listing})")


def _mask_hints(
    root: ET.Element,
) -> tuple[tuple[int, int, int] | None, list[tuple[tuple[int, int, int] | None, str]]]:
    """``Record3/Mask`` of main.xml (x3ptools): the background colour and the annotations."""
    mask = _child(root, "Record3/Mask")
    if mask is None:
        return None, []
    background = parse_colour(_text(mask, "Background"))
    names = []
    annotations = _child(mask, "Annotations")
    for annotation in annotations if annotations is not None else ():
        if _local(annotation.tag) != "Annotation":
            continue
        colour_text = annotation.get("color") or annotation.get("colour") or ""
        names.append((parse_colour(colour_text), (annotation.text or "").strip()))
    return background, names


# ---------------------------------------------------------------------------------------------
# Repairs of main.xml
# ---------------------------------------------------------------------------------------------


def _repair_root(root: ET.Element, quirks: list[str], fail: _Failure) -> bool:
    """Accept ``<ISO5436>`` (older x3ptools) as ``<ISO5436_2>``; return whether renamed."""
    name = _local(root.tag)
    if name == "ISO5436_2":
        return False
    if re.fullmatch(r"iso[ _-]?5436([ _-]?2)?", name, re.IGNORECASE):
        namespace = root.tag[: -len(name)] if str(root.tag).startswith("{") else ""
        root.tag = namespace + "ISO5436_2"
        quirks.append(f"main.xml root element <{name}> read as <ISO5436_2>")
        return True
    raise fail(f"main.xml has the root element <{name}>, not <ISO5436_2>")


def _repair_revision(root: ET.Element, quirks: list[str]) -> bool:
    """Make the Revision one of the standard's two texts; return whether it was changed.

    Any other spelling is noted, also one x3pio would read (an en dash, "ISO5436 – 2000").
    """
    element = _child(root, "Record1/Revision")
    if element is None:
        return False
    text = (element.text or "").strip()
    if text in (_REVISION_2000, _REVISION_AMD1):
        return False
    squeezed = re.sub(r"[\s_\-\u2010-\u2015\u2212]", "", text).lower()
    if "25178" in squeezed:
        new = _REVISION_AMD1
    else:
        new = _REVISION_2000
        if not ("5436" in squeezed and "2000" in squeezed):
            warnings.warn(
                f"unknown X3P revision {text!r}, read as {new!r}", UserWarning, stacklevel=5
            )
    element.text = new
    quirks.append(f"revision {text!r} read as {new!r}")
    return True


def _repair_axes(root: ET.Element, quirks: list[str]) -> bool:
    """Empty offsets, foreign elements in <Axes>; return whether main.xml was changed."""
    axes = _child(root, "Record1/Axes")
    if axes is None:
        return False
    changed = False
    for element in list(axes):
        name = _local(element.tag)
        if name not in _AXES_CHILDREN:
            axes.remove(element)
            text = (element.text or "").strip()
            shown = f"<{name}>{text[:40]}</{name}>" if text else f"<{name}>"
            quirks.append(f"non-standard element {shown} in Record1/Axes ignored")
            changed = True
    for name in ("CX", "CY", "CZ"):
        axis = _child(axes, name)
        offset = _child(axis, "Offset")
        if offset is not None and not (offset.text or "").strip():
            offset.text = "0"
            quirks.append(f"{name} has an empty <Offset>; read as 0")
            changed = True
        kind = (_text(axis, "AxisType") or "I").upper()
        data_type = (_text(axis, "DataType") or "").upper()
        if name != "CZ" and kind == "I" and data_type in ("I", "L"):
            quirks.append(
                f"{name} is incremental but declares the integer DataType {data_type!r}; "
                "ignored (an incremental axis stores no values)"
            )
    return changed


def _checksum_status(
    members: dict[str, zipfile.ZipInfo],
    archive: zipfile.ZipFile,
    prefix: str,
    root: ET.Element,
    main: bytes,
    payloads: dict[str, bytes],
    links: dict[str, tuple[str, str | None]],
    fail: _Failure,
) -> tuple[str, list[str], list[str]]:
    """Verify the MD5 checksums; return (status, mismatched, missing)."""
    mismatched: list[str] = []
    missing: list[str] = []
    record4 = _text(root, "Record4/ChecksumFile")
    name = _member_name(record4 or "md5checksum.hex")
    info = members.get(prefix + name) if name else None
    stored = None
    if info is not None and info.file_size <= 4096:
        tokens = _read_member(archive, info, fail).decode("utf-8-sig", "replace").split()
        stored = tokens[0].lower() if tokens and _MD5.match(tokens[0]) else None
    if stored is None:
        missing.append("main.xml")
    elif stored != md5(main, usedforsecurity=False).hexdigest():
        mismatched.append("main.xml")
    for member, (digest_name, digest) in links.items():
        if digest is None or not _MD5.match(digest):
            missing.append(digest_name)
        elif digest.lower() != md5(payloads[member], usedforsecurity=False).hexdigest():
            mismatched.append(digest_name)
    status = "mismatch" if mismatched else ("missing" if missing else "ok")
    return status, mismatched, missing


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass
class _Container:
    """The checked content of a container, main.xml repaired, ready for x3pio."""

    root: ET.Element
    main: bytes
    revision: str | None  # as written, before repair
    origin: str | None  # <Origin> found in <Axes> (removed for x3pio)
    changed: bool
    feature: str
    z_type: str
    grid: str
    prefix: str
    payloads: dict[str, bytes]
    extra: dict[str, bytes]
    mask_member: str | None
    infinite: tuple[int, int]  # stored +Inf and -Inf values (x3pio makes them NaN)
    status: str
    mismatched: list[str]
    missing: list[str]


def _open_container(path: Path, limit: int, fail: _Failure, quirks: list[str]) -> _Container:
    with open(path, "rb") as stream, _open_zip(stream, fail) as archive:
        members = _index(archive, fail, limit)
        prefix, found = _find_main(members, fail)
        quirks += found
        main_info = members[prefix + "main.xml"]
        main = _read_member(archive, main_info, fail, cap=MAX_XML_BYTES)
        root = _parse_xml(main, fail)

        renamed = _repair_root(root, quirks, fail)
        if not str(root.tag).startswith("{"):
            quirks.append("main.xml root element has no namespace")
        feature = (_text(root, "Record1/FeatureType") or "").upper()
        if feature == "PCL" or _child(root, "Record3/ListDimension") is not None:
            raise fail("holds a point cloud (ListDimension), not a surface on a grid")
        for axis in ("CX", "CY"):
            kind = (_text(root, f"Record1/Axes/{axis}/AxisType") or "I").upper()
            if kind != "I":
                raise fail(f"axis {axis} is absolute (irregular grid); only regular grids read")
        z_type = (_text(root, "Record1/Axes/CZ/DataType") or "").upper()
        if z_type not in _Z_ITEMSIZE:
            raise fail(f"CZ has the DataType {z_type or 'none'!r}; expected I, L, F or D")

        sizes = []
        for name in ("SizeX", "SizeY", "SizeZ"):
            text = _text(root, f"Record3/MatrixDimension/{name}")
            if text is None:
                raise fail(f"main.xml has no Record3/MatrixDimension/{name}")
            try:
                sizes.append(int(text))
            except ValueError:
                raise fail(f"{name} is not a whole number: {text!r}") from None
        size_x, size_y, size_z = sizes
        grid = f"{size_x}x{size_y}x{size_z} (SizeX x SizeY x SizeZ)"
        count = size_x * size_y * size_z
        if min(sizes) < 0:
            raise fail(f"negative grid size {grid}")
        if count == 0:
            raise fail(f"the grid is empty: {grid}")
        needed = count * _Z_ITEMSIZE[z_type]
        if count * 8 > limit:  # decoded as float64 by x3pio
            raise fail(
                f"the grid {grid} has {count} points, {count * 8} bytes decoded, more than the "
                f"limit of {limit} bytes"
            )

        payloads: dict[str, bytes] = {}
        links: dict[str, tuple[str, str | None]] = {}
        infinite = [0, 0]  # +Inf, -Inf stored
        link = _child(root, "Record3/DataLink")
        if link is not None:
            data_name = _member_name(_text(link, "PointDataLink"))
            if data_name is None:
                raise fail("the PointDataLink of main.xml does not name a file in the container")
            info = members.get(prefix + data_name)
            if info is None:
                raise fail(f"the data file {data_name!r} named by main.xml is missing")
            if info.file_size != needed:
                which = "shorter" if info.file_size < needed else "longer"
                raise fail(
                    f"the data file {data_name!r} holds {info.file_size} bytes but the grid "
                    f"{grid} of {_Z_TYPE_NAME[z_type]} needs {needed}: the data is {which} "
                    "than the declared grid"
                )
            payloads[data_name] = _read_member(archive, info, fail)
            links[data_name] = (data_name, _text(link, "MD5ChecksumPointData"))
            if z_type in ("F", "D"):  # x3pio turns them into NaN without a word: count here
                stored = np.frombuffer(payloads[data_name], "<f4" if z_type == "F" else "<f8")
                infinite = [int(np.isposinf(stored).sum()), int(np.isneginf(stored).sum())]
            valid_text = _text(link, "ValidPointsLink")
            if valid_text:
                valid_name = _member_name(valid_text)
                info = members.get(prefix + valid_name) if valid_name else None
                if info is None or valid_name is None:
                    raise fail(f"the validity file {valid_text!r} named by main.xml is missing")
                if info.file_size != (count + 7) // 8:
                    raise fail(
                        f"the validity file {valid_name!r} holds {info.file_size} bytes, the "
                        f"grid {grid} needs {(count + 7) // 8}"
                    )
                payloads[valid_name] = _read_member(archive, info, fail)
                links[valid_name] = (valid_name, _text(link, "MD5ChecksumValidPoints"))
        else:
            data_list = _child(root, "Record3/DataList")
            if data_list is None:
                raise fail("main.xml has neither a DataLink nor a DataList: no data")
            datums = [(e.text or "").strip() for e in data_list if _local(e.tag) == "Datum"]
            n_datums = len(datums)
            infinite = [
                sum(1 for d in datums if re.fullmatch(rf"{sign}inf(inity)?", d, re.I))
                for sign in (r"\+?", "-")
            ]
            if n_datums != count:
                which = "shorter" if n_datums < count else "longer"
                raise fail(
                    f"the DataList holds {n_datums} values but the grid {grid} needs {count}: "
                    f"the data is {which} than the declared grid"
                )

        status, mismatched, missing = _checksum_status(
            members, archive, prefix, root, main, payloads, links, fail
        )

        # Everything else x3pio may need (vendor files); all sizes are already bounded.
        extra: dict[str, bytes] = {}
        for name, info in members.items():
            if not name.startswith(prefix):
                continue
            local = name[len(prefix) :]
            if local == "main.xml" or local in payloads:
                continue
            extra[local] = _read_member(archive, info, fail)
        mask_member = find_mask_member(list(members), prefix)

    revision = _text(root, "Record1/Revision")
    origin = _text(root, "Record1/Axes/Origin")  # x3ptools writes "NW"; not trusted
    changed = _repair_revision(root, quirks) | _repair_axes(root, quirks) | renamed
    return _Container(
        root=root,
        main=main,
        revision=revision,
        origin=origin,
        changed=changed,
        feature=feature,
        z_type=z_type,
        grid=grid,
        prefix=prefix,
        payloads=payloads,
        extra=extra,
        mask_member=mask_member[len(prefix) :] if mask_member else None,
        infinite=(infinite[0], infinite[1]),
        status=status,
        mismatched=mismatched,
        missing=missing,
    )


def _parse(container: _Container, fail: _Failure) -> x3pio.Surface:
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
    parsed: x3pio.Surface, container: _Container, stored: dict[str, Any]
) -> dict[str, Any]:
    metadata = parsed.metadata
    header = parsed.header
    record2 = _child(container.root, "Record2")
    instrument = None
    x3p_meta: dict[str, Any] = {
        "revision": container.revision,
        "z_data_type": _Z_TYPE_NAME[container.z_type],
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
            calibration_date=_iso_date(_text(record2, "CalibrationDate")),
            probing_type=(
                metadata.probing_system.type.value if metadata.probing_system.type else None
            ),
            probing_identification=metadata.probing_system.identification,
        )
    meta: dict[str, Any] = {
        "instrument": instrument,
        "date": _iso_date(_text(record2, "Date")),
        "creator": metadata.creator if metadata is not None else None,
        "comment": metadata.comment if metadata is not None else None,
    }
    own_meta = stored.get("meta")
    if isinstance(own_meta, dict):
        meta.update(own_meta)
    meta["x3p"] = x3p_meta
    return meta


def _masks(
    container: _Container,
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
    background, names = _mask_hints(container.root)
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
    fail = _Failure(str(path))
    quirks: list[str] = []
    container = _open_container(path, limit, fail, quirks)
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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

#: Keys of ``meta`` that the reader derives from the file; not stored in meta.json.
READER_KEYS = frozenset(
    {
        "format",
        "quirks",
        "checksum",
        "file_mask",
        "mask_applied",
        "annotations",
        "source_sha256",
        "x3p",
    }
)


def _metadata_for(meta: dict[str, Any]) -> x3pio.Metadata:
    detail = meta.get("x3p") if isinstance(meta.get("x3p"), dict) else {}

    def date_of(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return None
        return None

    manufacturer = str(detail.get("manufacturer") or "")
    model = str(detail.get("model") or "")
    instrument = meta.get("instrument")
    if instrument and " ".join(p for p in (manufacturer, model) if p) != instrument:
        manufacturer, model = str(instrument), ""
    try:
        probing = x3pio.ProbingType(detail.get("probing_type"))
    except ValueError:
        probing = x3pio.ProbingType.SOFTWARE
    comment = meta.get("comment")
    creator = meta.get("creator")
    return x3pio.Metadata(
        date=date_of(meta.get("date")) or datetime.now(UTC),
        creator=str(creator) if creator else None,
        instrument=x3pio.Instrument(
            manufacturer, model, str(detail.get("serial") or ""), str(detail.get("version") or "")
        ),
        calibration_date=date_of(detail.get("calibration_date")),
        probing_system=x3pio.ProbingSystem(
            probing, str(detail.get("probing_identification") or "")
        ),
        comment=str(comment) if comment is not None else None,
    )


def x3p_bytes(
    heights_um: np.ndarray,
    spacing_um: tuple[float, float],
    mask: np.ndarray | None,
    meta: dict[str, Any],
    label: str,
    annotations: dict[str, np.ndarray] | None = None,
) -> bytes:
    """Encode a scan as X3P bytes (see `balllink.io.write_scan` for the layout).

    Raises ValueError for annotations that cannot be written (see `encode_annotations`).
    """
    dy, dx = spacing_um
    mask_png = mask_xml = None
    if annotations:  # checked before anything is written
        mask_png, mask_xml = encode_annotations(annotations, heights_um.shape, label=label)
    kept = jsonable({key: value for key, value in meta.items() if key not in READER_KEYS})
    for key in meta:
        if key not in READER_KEYS and str(key) not in kept:
            logger.debug("write_scan %s: meta[%r] has no JSON form; not stored", label, key)
    payload: dict[str, Any] = {"balllink_meta_version": 1, "meta": kept}
    try:
        surface = x3pio.Surface.from_array(
            np.where(np.isfinite(heights_um), heights_um, np.nan).astype(np.float64) * 1e-6,
            x_scale=dx * 1e-6,
            y_scale=dy * 1e-6,
            z_type=x3pio.DataType.FLOAT32,
            z_scale=1e-6,
            metadata=_metadata_for(meta),
        )
        if mask is not None:
            surface.extensions[MASK_URI] = encode_roi_png(mask)
            payload["mask"] = {"roi": ["#ffffff"], "background": "#000000"}
        surface.extensions[META_URI] = json.dumps(payload, allow_nan=True).encode("utf-8")
        data = surface.dumps()
    except x3pio.X3pError as error:
        raise ScanFormatError(f"{label}: cannot write X3P: {error}") from None
    if mask_png is not None and mask_xml is not None:
        data = add_annotation_mask(data, mask_png, mask_xml)
    return data
