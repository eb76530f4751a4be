"""The container of an X3P file, checked before x3pio reads it.

`open_container` finds ``main.xml`` (also in a folder of the zip), parses and repairs it
(`balllink.io._x3p_xml`), refuses point clouds and irregular axes, checks the declared grid
against the data file (empty grid, data shorter or longer than the grid, a grid larger than
the limit), counts stored ±Inf, verifies the MD5 checksums (a mismatch is reported, not
raised) and reads every member x3pio may need, all sizes bounded.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree as ET  # nosec B405 - only to serialise a defused tree

import numpy as np

from ._x3p_mask import find_mask_member
from ._x3p_xml import (
    child,
    local_name,
    parse_xml,
    repair_axes,
    repair_revision,
    repair_root,
    text_of,
)
from ._zip import Failure, open_zip, read_member, zip_members

__all__ = ["MAX_XML_BYTES", "Z_ITEMSIZE", "Z_TYPE_NAME", "Container", "open_container"]

#: Largest ``main.xml`` (bytes); a DataList of a 1000 x 1000 grid fits.
MAX_XML_BYTES = 64 << 20

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
Z_ITEMSIZE = {"I": 2, "L": 4, "F": 4, "D": 8}
Z_TYPE_NAME = {"I": "int16", "L": "int32", "F": "float32", "D": "float64"}


def member_name(link: str | None) -> str | None:
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


def find_main(members: dict[str, zipfile.ZipInfo], fail: Failure) -> tuple[str, list[str]]:
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


def checksum_status(
    members: dict[str, zipfile.ZipInfo],
    archive: zipfile.ZipFile,
    prefix: str,
    root: ET.Element,
    main: bytes,
    payloads: dict[str, bytes],
    links: dict[str, tuple[str, str | None]],
    fail: Failure,
) -> tuple[str, list[str], list[str]]:
    """Verify the MD5 checksums; return (status, mismatched, missing)."""
    mismatched: list[str] = []
    missing: list[str] = []
    record4 = text_of(root, "Record4/ChecksumFile")
    name = member_name(record4 or "md5checksum.hex")
    info = members.get(prefix + name) if name else None
    stored = None
    if info is not None and info.file_size <= 4096:
        tokens = read_member(archive, info, fail).decode("utf-8-sig", "replace").split()
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


@dataclass
class Container:
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


def open_container(path: Path, limit: int, fail: Failure, quirks: list[str]) -> Container:
    with open(path, "rb") as stream, open_zip(stream, fail) as archive:
        members = zip_members(archive, fail, limit)
        prefix, found = find_main(members, fail)
        quirks += found
        main_info = members[prefix + "main.xml"]
        main = read_member(archive, main_info, fail, cap=MAX_XML_BYTES)
        root = parse_xml(main, fail)

        renamed = repair_root(root, quirks, fail)
        if not str(root.tag).startswith("{"):
            quirks.append("main.xml root element has no namespace")
        feature = (text_of(root, "Record1/FeatureType") or "").upper()
        if feature == "PCL" or child(root, "Record3/ListDimension") is not None:
            raise fail("holds a point cloud (ListDimension), not a surface on a grid")
        for axis in ("CX", "CY"):
            kind = (text_of(root, f"Record1/Axes/{axis}/AxisType") or "I").upper()
            if kind != "I":
                raise fail(f"axis {axis} is absolute (irregular grid); only regular grids read")
        z_type = (text_of(root, "Record1/Axes/CZ/DataType") or "").upper()
        if z_type not in Z_ITEMSIZE:
            raise fail(f"CZ has the DataType {z_type or 'none'!r}; expected I, L, F or D")

        sizes = []
        for name in ("SizeX", "SizeY", "SizeZ"):
            text = text_of(root, f"Record3/MatrixDimension/{name}")
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
        needed = count * Z_ITEMSIZE[z_type]
        if count * 8 > limit:  # decoded as float64 by x3pio
            raise fail(
                f"the grid {grid} has {count} points, {count * 8} bytes decoded, more than the "
                f"limit of {limit} bytes"
            )

        payloads: dict[str, bytes] = {}
        links: dict[str, tuple[str, str | None]] = {}
        infinite = [0, 0]  # +Inf, -Inf stored
        link = child(root, "Record3/DataLink")
        if link is not None:
            data_name = member_name(text_of(link, "PointDataLink"))
            if data_name is None:
                raise fail("the PointDataLink of main.xml does not name a file in the container")
            info = members.get(prefix + data_name)
            if info is None:
                raise fail(f"the data file {data_name!r} named by main.xml is missing")
            if info.file_size != needed:
                which = "shorter" if info.file_size < needed else "longer"
                raise fail(
                    f"the data file {data_name!r} holds {info.file_size} bytes but the grid "
                    f"{grid} of {Z_TYPE_NAME[z_type]} needs {needed}: the data is {which} "
                    "than the declared grid"
                )
            payloads[data_name] = read_member(archive, info, fail)
            links[data_name] = (data_name, text_of(link, "MD5ChecksumPointData"))
            if z_type in ("F", "D"):  # x3pio turns them into NaN without a word: count here
                stored = np.frombuffer(payloads[data_name], "<f4" if z_type == "F" else "<f8")
                infinite = [int(np.isposinf(stored).sum()), int(np.isneginf(stored).sum())]
            valid_text = text_of(link, "ValidPointsLink")
            if valid_text:
                valid_name = member_name(valid_text)
                info = members.get(prefix + valid_name) if valid_name else None
                if info is None or valid_name is None:
                    raise fail(f"the validity file {valid_text!r} named by main.xml is missing")
                if info.file_size != (count + 7) // 8:
                    raise fail(
                        f"the validity file {valid_name!r} holds {info.file_size} bytes, the "
                        f"grid {grid} needs {(count + 7) // 8}"
                    )
                payloads[valid_name] = read_member(archive, info, fail)
                links[valid_name] = (valid_name, text_of(link, "MD5ChecksumValidPoints"))
        else:
            data_list = child(root, "Record3/DataList")
            if data_list is None:
                raise fail("main.xml has neither a DataLink nor a DataList: no data")
            datums = [(e.text or "").strip() for e in data_list if local_name(e.tag) == "Datum"]
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

        status, mismatched, missing = checksum_status(
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
            extra[local] = read_member(archive, info, fail)
        mask_member = find_mask_member(list(members), prefix)

    revision = text_of(root, "Record1/Revision")
    origin = text_of(root, "Record1/Axes/Origin")  # x3ptools writes "NW"; not trusted
    changed = repair_revision(root, quirks) | repair_axes(root, quirks) | renamed
    return Container(
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
