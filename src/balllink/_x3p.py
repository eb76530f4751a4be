"""X3P (ISO 25178-72) containers for `balllink.io`: guarded reading, repair, writing.

x3pio decodes and encodes the data. This module stands in front of it and deals with what real
exports and hostile files do:

* the zip is opened by us first: the declared uncompressed sizes are checked against
  `MAX_UNCOMPRESSED_BYTES` before anything is decompressed, and every read is capped at the
  declared size (a zip bomb or a truncated archive is refused within milliseconds);
* ``main.xml`` is parsed with defusedxml with DTDs forbidden (no DOCTYPE, no entity expansion,
  no external entity);
* the declared grid is checked against the data file before x3pio reads it (empty grid, data
  shorter or longer than the grid, a grid larger than the limit);
* the checksums are verified here, so that a mismatch is reported (``meta["checksum"]``) and a
  warning given instead of an exception;
* a ``Revision`` that x3pio refuses (``ISO5436-2000``) is repaired in ``main.xml``, and the
  container rebuilt in memory for x3pio;
* increments written in micrometres instead of metres are detected by magnitude;
* the region of interest ``bindata/mask.png`` of x3ptools / CSAFE files is decoded into a bool
  grid (see `decode_mask`).
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
from PIL import Image

from .errors import ScanFormatError

__all__ = [
    "MAX_UNCOMPRESSED_BYTES",
    "ChecksumWarning",
    "X3pContent",
    "decode_mask",
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

#: VendorSpecificIDs of the files balllink adds to the X3P files it writes (Amd 1:2020 places
#: them at ``balllink\\meta.json`` and ``balllink\\mask.png`` in the container).
META_URI = "http://balllink/meta.json"
MASK_URI = "http://balllink/mask.png"
#: Colour that x3ptools gives to a mask that nobody annotated: background.
X3PTOOLS_BACKGROUND = (0xCD, 0x7F, 0x32)
#: Words in the name of a mask annotation that mark it as the usable region.
_ROI_WORDS = re.compile(r"breech|\bbf\b|\broi\b|usable|valid|region of interest", re.IGNORECASE)

_JUNK = re.compile(r"(^|/)(__macosx/|\._[^/]*$|\.ds_store$|thumbs\.db$|desktop\.ini$)", re.I)
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_Z_ITEMSIZE = {"I": 2, "L": 4, "F": 4, "D": 8}
_Z_TYPE_NAME = {"I": "int16", "L": "int32", "F": "float32", "D": "float64"}
_REVISION_2000 = x3pio.Revision.ISO5436_2000.value
_REVISION_AMD1 = x3pio.Revision.ISO25178_72_2017_DAM1.value


class ChecksumWarning(UserWarning):
    """An X3P file has a missing or wrong MD5 checksum; it was read anyway."""


@dataclass
class X3pContent:
    """What `read_x3p` found: heights in µm (float32), spacing, ROI, metadata, quirks."""

    heights_um: np.ndarray
    spacing_um: tuple[float, float]
    file_mask: np.ndarray | None
    meta: dict[str, Any]
    quirks: list[str] = field(default_factory=list)
    checksum: str = "ok"


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
    nested = [n for n in members if n.lower().endswith("/main.xml") and n.count("/") == 1]
    if len(nested) == 1:
        prefix = nested[0][: -len("main.xml")]
        quirks.append(f"content packed in the folder {prefix!r} instead of the zip root")
        return prefix, quirks
    listing = ", ".join(sorted(members)[:8]) or "nothing"
    raise fail(f"the zip holds no main.xml, so it is not an X3P file (it holds {listing})")


# ---------------------------------------------------------------------------------------------
# Mask (region of interest) images
# ---------------------------------------------------------------------------------------------


def _hex(rgb: tuple[int, ...]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def _parse_colour(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", text.strip())
    if not match:
        return None
    value = match.group(1)
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def decode_mask(
    png: bytes,
    shape: tuple[int, int],
    *,
    background: tuple[int, int, int] | None = None,
    roi_colours: list[tuple[int, int, int]] | None = None,
    label: str = "mask.png",
) -> tuple[np.ndarray | None, dict[str, Any], list[str]]:
    """Turn a colour mask image into the bool region of interest on a ``shape`` grid.

    The image is a colour raster as x3ptools writes it: row ``i`` lies over data row ``i``
    (checked on the raw DFSC scans, where this orientation puts the ROI on the smooth breech
    face). Which colours are usable is decided in this order:

    1. ``roi_colours`` (annotations of ``main.xml`` naming the breech face, or the colour
       balllink wrote): usable = pixels of those colours;
    2. ``background`` (``Record3/Mask/Background`` of ``main.xml``): usable = every opaque
       pixel of another colour;
    3. otherwise transparent pixels (alpha 0) are background; the x3ptools default colour
       ``#cd7f32`` is background if present; else the colour that dominates the border of the
       image (a breech face never fills the corners of a scan) is background. A mask of a single
       opaque colour marks the whole grid.

    Returns ``(roi or None, description, quirks)``; ``None`` when the image cannot be used.
    """
    quirks: list[str] = []
    rows, cols = shape
    try:
        image = Image.open(io.BytesIO(png))
        width, height = image.size
        if width * height == 0:
            raise ValueError("the image is empty")
        if width * height > 64 * rows * cols or width * height > (1 << 28):
            raise ValueError(f"{width}x{height} pixels is far larger than the grid")
        image.load()
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            # A 16-bit or float mask: non-zero marks, as in a two-colour image.
            image = Image.fromarray(np.where(np.asarray(image) != 0, 255, 0).astype(np.uint8))
        image = image.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        message = f"{label} cannot be decoded ({error}); no ROI read"
        warnings.warn(message, UserWarning, stacklevel=4)
        return None, {}, [message]

    if (height, width) != (rows, cols):
        if abs((height / rows) / (width / cols) - 1) < 0.01:
            quirks.append(
                f"{label} is {height}x{width}, the grid {rows}x{cols}; resampled (nearest)"
            )
            image = image.resize((cols, rows), Image.Resampling.NEAREST)
        else:
            message = f"{label} is {height}x{width} but the grid is {rows}x{cols}; ROI ignored"
            warnings.warn(message, UserWarning, stacklevel=4)
            return None, {"size": [height, width]}, [message]

    rgba = np.asarray(image)
    codes = (
        rgba[..., 0].astype(np.uint32) << 16
        | rgba[..., 1].astype(np.uint32) << 8
        | rgba[..., 2].astype(np.uint32)
    )
    opaque = rgba[..., 3] != 0
    values, counts = np.unique(codes[opaque], return_counts=True)
    described: dict[str, Any] = {
        "colours": {_hex(_rgb(int(v))): int(c) for v, c in zip(values, counts)},
        "transparent": int((~opaque).sum()),
    }
    roi, rule = None, ""
    if roi_colours:
        roi = np.isin(codes, [_code(c) for c in roi_colours]) & opaque
        rule = "annotated ROI colour(s) " + ", ".join(_hex(c) for c in roi_colours)
        if not roi.any():
            quirks.append(f"{label}: no pixel has the annotated ROI colour; colour rules used")
            roi = None
    if roi is None:
        roi, rule = _roi_by_colour(codes, opaque, values, background)
    described["rule"] = rule
    return np.ascontiguousarray(roi), described, quirks


def _code(rgb: tuple[int, int, int]) -> int:
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def _rgb(code: int) -> tuple[int, int, int]:
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


def _roi_by_colour(
    codes: np.ndarray,
    opaque: np.ndarray,
    values: np.ndarray,
    background: tuple[int, int, int] | None,
) -> tuple[np.ndarray, str]:
    """Rules 2 and 3 of `decode_mask`: the ROI is every opaque colour but the background."""
    if background is not None:
        bg = _code(background)
        rule = f"every opaque colour but the background {_hex(background)} named in main.xml"
    elif values.size == 0:
        return np.zeros(codes.shape, dtype=bool), "fully transparent image: nothing usable"
    elif values.size == 1:
        if opaque.all():
            return opaque.copy(), "single colour: the whole grid is usable"
        return opaque.copy(), "single opaque colour on transparency: the opaque pixels"
    elif _code(X3PTOOLS_BACKGROUND) in values:
        bg = _code(X3PTOOLS_BACKGROUND)
        rule = f"every colour but the x3ptools default background {_hex(X3PTOOLS_BACKGROUND)}"
    else:
        edge = np.zeros(codes.shape, dtype=bool)
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
        border = codes[edge & opaque]
        if border.size == 0:
            border = codes[opaque]
        border_values, border_counts = np.unique(border, return_counts=True)
        bg = int(border_values[np.argmax(border_counts)])
        rule = f"every colour but {_hex(_rgb(bg))}, which dominates the image border"
    return (codes != bg) & opaque, rule


def _mask_hints(
    root: ET.Element, stored: dict[str, Any]
) -> tuple[tuple[int, int, int] | None, list[tuple[int, int, int]]]:
    """Background and ROI colours named in main.xml (x3ptools) or in balllink's meta.json."""
    mask = _child(root, "Record3/Mask")
    background = _parse_colour(_text(mask, "Background")) if mask is not None else None
    roi: list[tuple[int, int, int]] = []
    annotations = _child(mask, "Annotations") if mask is not None else None
    for annotation in annotations if annotations is not None else ():
        colour = _parse_colour(annotation.get("color") or annotation.get("colour"))
        if colour is not None and _ROI_WORDS.search(annotation.text or ""):
            roi.append(colour)
    own = stored.get("mask", {}) if isinstance(stored.get("mask"), dict) else {}
    if not roi and isinstance(own.get("roi"), list):
        roi = [c for c in (_parse_colour(str(t)) for t in own["roi"]) if c is not None]
    return background, roi


def _find_mask_member(members: dict[str, zipfile.ZipInfo], prefix: str) -> str | None:
    names = [n for n in members if n.startswith(prefix)]
    for name in names:
        if name[len(prefix) :].lower() == "bindata/mask.png":
            return name
    by_base = [n for n in names if n.lower().rsplit("/", 1)[-1] == "mask.png"]
    if len(by_base) == 1:
        return by_base[0]
    pngs = [n for n in names if n.lower().endswith(".png")]
    return pngs[0] if len(pngs) == 1 else None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _repair_revision(root: ET.Element, quirks: list[str]) -> bool:
    """Make the Revision one that x3pio reads; return whether main.xml was changed."""
    element = _child(root, "Record1/Revision")
    if element is None:
        return False
    text = (element.text or "").strip()
    try:
        x3pio.Revision.resolve(text)
        return False
    except x3pio.X3pError:
        pass
    squeezed = re.sub(r"[\s_\-\u2010-\u2015\u2212]", "", text).lower()
    if "25178" in squeezed:
        new = _REVISION_AMD1
    else:
        new = _REVISION_2000
        if not ("5436" in squeezed and "2000" in squeezed):
            warnings.warn(
                f"unknown X3P revision {text!r}, read as {new!r}", UserWarning, stacklevel=4
            )
    element.text = new
    quirks.append(f"revision {text!r} read as {new!r}")
    return True


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


def read_x3p(path: Path, *, limit: int | None = None) -> X3pContent:
    """Read an X3P file into heights in µm, spacing, ROI and metadata.

    Raises `ScanFormatError` naming ``path`` for every kind of damage; see the module text.
    """
    limit = MAX_UNCOMPRESSED_BYTES if limit is None else limit
    fail = _Failure(str(path))
    quirks: list[str] = []
    with open(path, "rb") as stream, _open_zip(stream, fail) as archive:
        members = _index(archive, fail, limit)
        prefix, found = _find_main(members, fail)
        quirks += found
        main_info = members[prefix + "main.xml"]
        main = _read_member(archive, main_info, fail, cap=MAX_XML_BYTES)
        root = _parse_xml(main, fail)

        root_name = _local(root.tag)
        if root_name != "ISO5436_2":
            raise fail(f"main.xml has the root element <{root_name}>, not <ISO5436_2>")
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
            n_datums = sum(1 for e in data_list if _local(e.tag) == "Datum")
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
        mask_member = _find_mask_member(members, prefix)

    revision_as_written = _text(root, "Record1/Revision")
    changed = _repair_revision(root, quirks)
    main_for_x3pio = ET.tostring(root, encoding="utf-8", xml_declaration=True) if changed else main
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as rebuilt:
        rebuilt.writestr("main.xml", main_for_x3pio)
        for name, content in {**payloads, **extra}.items():
            rebuilt.writestr(name, content)
    try:
        parsed = x3pio.X3pFile.loads(buffer.getvalue(), verify=False)
    except x3pio.X3pError as error:
        raise fail(f"x3pio cannot read it: {error}") from None
    del buffer
    if not isinstance(parsed, x3pio.Surface):
        kind = type(parsed).__name__.lower()
        raise fail(f"holds a {kind} (FeatureType {feature}), not a surface on a grid")

    if mismatched:
        warnings.warn(
            f"{path}: the MD5 checksum of {', '.join(mismatched)} does not match; the file was "
            "changed or damaged after it was written. Read anyway.",
            ChecksumWarning,
            stacklevel=3,
        )
    elif missing:
        warnings.warn(
            f"{path}: no MD5 checksum for {', '.join(missing)}; integrity not verified.",
            ChecksumWarning,
            stacklevel=3,
        )

    layers = parsed.layers
    if len(layers) > 1:
        quirks.append(f"{len(layers)} layers; the first is read")
    z = np.asarray(layers[0].z, dtype=np.float64)
    finite = np.isfinite(z)
    if not finite.any():
        raise fail(f"the grid {grid} holds no finite height value")

    # Files balllink wrote follow the standard (metres): no guessing for them.
    own_file = META_URI in parsed.extensions
    header = parsed.header
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
        values = z[finite]
        step = max(1, values.size // 200_000)
        low, high = np.percentile(values[::step], [0.5, 99.5])
        z_range = float(high - low)
        if z_range >= Z_UM_THRESHOLD or (z_range == 0 and lateral_in_um):
            quirks.append(f"heights written in micrometres, not metres (range {z_range:g})")
            factor = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        heights = (z * factor).astype(np.float32)
    heights[~np.isfinite(heights)] = np.nan

    # --- metadata ------------------------------------------------------------------------------
    stored: dict[str, Any] = {}
    extensions = parsed.extensions
    if META_URI in extensions:
        try:
            payload = json.loads((extensions[META_URI] or b"").decode("utf-8"))
            stored = payload if isinstance(payload, dict) else {}
        except (ValueError, UnicodeDecodeError, x3pio.X3pError) as error:
            quirks.append(f"balllink meta.json unreadable ({error}); ignored")

    metadata = parsed.metadata
    record2 = _child(root, "Record2")
    instrument = None
    x3p_meta: dict[str, Any] = {
        "revision": revision_as_written,
        "z_data_type": _Z_TYPE_NAME[z_type],
        "increments": [float(header.x.increment), float(header.y.increment)],
        "z_increment": float(header.z.increment),
        "layers": len(layers),
        "extensions": list(extensions),
    }
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

    # --- region of interest ---------------------------------------------------------------
    file_mask = None
    if mask_member is not None:
        background, roi_colours = _mask_hints(root, stored)
        png = extra.get(mask_member[len(prefix) :], b"")
        file_mask, described, mask_quirks = decode_mask(
            png,
            heights.shape,
            background=background,
            roi_colours=roi_colours,
            label=mask_member,
        )
        quirks += mask_quirks
        x3p_meta["mask"] = {"member": mask_member, **described}

    dy, dx = (float(f"{s:.12g}") for s in spacing)
    return X3pContent(heights, (dy, dx), file_mask, meta, quirks, status)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

#: Keys of ``meta`` that the reader derives from the file; not stored in meta.json.
READER_KEYS = frozenset(
    {"format", "quirks", "checksum", "file_mask", "mask_applied", "source_sha256", "x3p"}
)


def jsonable(value: Any) -> tuple[bool, Any]:
    """Return ``(True, value as JSON types)`` or ``(False, None)`` if it has no JSON form.

    Dicts keep their JSON-able entries (others are dropped); numpy scalars become Python
    numbers; tuples become lists; arrays are dropped.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return True, value
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        return True, value.item()
    if isinstance(value, datetime):
        return True, value.isoformat()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            ok, converted = jsonable(item)
            if ok and isinstance(key, str):
                out[key] = converted
        return True, out
    if isinstance(value, (list, tuple)):
        items = [jsonable(item) for item in value]
        if all(ok for ok, _ in items):
            return True, [converted for _, converted in items]
    return False, None


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


def encode_mask_png(mask: np.ndarray) -> bytes:
    """The ROI as an 8-bit greyscale PNG: 255 (white) usable, 0 (black) background."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def x3p_bytes(
    heights_um: np.ndarray,
    spacing_um: tuple[float, float],
    mask: np.ndarray | None,
    meta: dict[str, Any],
    label: str,
) -> bytes:
    """Encode a scan as X3P bytes (see `balllink.io.write_scan` for the layout)."""
    dy, dx = spacing_um
    kept = {}
    for key, value in meta.items():
        if key in READER_KEYS:
            continue
        ok, converted = jsonable(value)
        if ok:
            kept[key] = converted
        else:
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
            surface.extensions[MASK_URI] = encode_mask_png(mask)
            payload["mask"] = {"roi": ["#ffffff"], "background": "#000000"}
        surface.extensions[META_URI] = json.dumps(payload, allow_nan=True).encode("utf-8")
        return surface.dumps()
    except x3pio.X3pError as error:
        raise ScanFormatError(f"{label}: cannot write X3P: {error}") from None
