"""``main.xml`` of X3P files: defused parsing, element lookup, and the repairs of real exports.

Elements are matched by local name (namespace-agnostic). ``main.xml`` is parsed with defusedxml
with DTDs forbidden (no DOCTYPE, no entity expansion, no external entity). Deviations are
repaired before x3pio reads the file, each recorded in the quirks: the root element
``<ISO5436>`` of older x3ptools, a ``Revision`` x3pio refuses (``ISO5436-2000``,
``ISO5436–2000`` with an en dash...), an empty ``<Offset/>``, elements out of place in
``<Axes>`` (``<Origin>``); integer data types of incremental X/Y axes are ignored (noted).
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from xml.etree import ElementTree as ET  # nosec B405 - only to serialise a defused tree

import x3pio
from defusedxml import ElementTree as DefusedET
from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from ._x3p_mask import parse_colour
from ._zip import Failure

__all__ = [
    "child",
    "iso_date",
    "local_name",
    "mask_hints",
    "parse_xml",
    "repair_axes",
    "repair_revision",
    "repair_root",
    "text_of",
]

_AXES_CHILDREN = ("CX", "CY", "CZ", "Rotation")
_REVISION_2000 = x3pio.Revision.ISO5436_2000.value
_REVISION_AMD1 = x3pio.Revision.ISO25178_72_2017_DAM1.value


def local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def child(element: ET.Element | None, path: str) -> ET.Element | None:
    for name in path.split("/"):
        if element is None:
            return None
        element = next((c for c in element if local_name(c.tag) == name), None)
    return element


def text_of(element: ET.Element | None, path: str = "") -> str | None:
    found = child(element, path) if path else element
    if found is None:
        return None
    return (found.text or "").strip()


def parse_xml(data: bytes, fail: Failure) -> ET.Element:
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


def iso_date(text: str | None) -> str | None:
    """The date as written, normalised to ISO 8601 when it parses (no time-zone change)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text


def mask_hints(
    root: ET.Element,
) -> tuple[tuple[int, int, int] | None, list[tuple[tuple[int, int, int] | None, str]]]:
    """``Record3/Mask`` of main.xml (x3ptools): the background colour and the annotations."""
    mask = child(root, "Record3/Mask")
    if mask is None:
        return None, []
    background = parse_colour(text_of(mask, "Background"))
    names = []
    annotations = child(mask, "Annotations")
    for annotation in annotations if annotations is not None else ():
        if local_name(annotation.tag) != "Annotation":
            continue
        colour_text = annotation.get("color") or annotation.get("colour") or ""
        names.append((parse_colour(colour_text), (annotation.text or "").strip()))
    return background, names


# ---------------------------------------------------------------------------------------------
# Repairs of main.xml
# ---------------------------------------------------------------------------------------------


def repair_root(root: ET.Element, quirks: list[str], fail: Failure) -> bool:
    """Accept ``<ISO5436>`` (older x3ptools) as ``<ISO5436_2>``; return whether renamed."""
    name = local_name(root.tag)
    if name == "ISO5436_2":
        return False
    if re.fullmatch(r"iso[ _-]?5436([ _-]?2)?", name, re.IGNORECASE):
        namespace = root.tag[: -len(name)] if str(root.tag).startswith("{") else ""
        root.tag = namespace + "ISO5436_2"
        quirks.append(f"main.xml root element <{name}> read as <ISO5436_2>")
        return True
    raise fail(f"main.xml has the root element <{name}>, not <ISO5436_2>")


def repair_revision(root: ET.Element, quirks: list[str]) -> bool:
    """Make the Revision one of the standard's two texts; return whether it was changed.

    Any other spelling is noted, also one x3pio would read (an en dash, "ISO5436 – 2000").
    """
    element = child(root, "Record1/Revision")
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


def repair_axes(root: ET.Element, quirks: list[str]) -> bool:
    """Empty offsets, foreign elements in <Axes>; return whether main.xml was changed."""
    axes = child(root, "Record1/Axes")
    if axes is None:
        return False
    changed = False
    for element in list(axes):
        name = local_name(element.tag)
        if name not in _AXES_CHILDREN:
            axes.remove(element)
            text = (element.text or "").strip()
            shown = f"<{name}>{text[:40]}</{name}>" if text else f"<{name}>"
            quirks.append(f"non-standard element {shown} in Record1/Axes ignored")
            changed = True
    for name in ("CX", "CY", "CZ"):
        axis = child(axes, name)
        offset = child(axis, "Offset")
        if offset is not None and not (offset.text or "").strip():
            offset.text = "0"
            quirks.append(f"{name} has an empty <Offset>; read as 0")
            changed = True
        kind = (text_of(axis, "AxisType") or "I").upper()
        data_type = (text_of(axis, "DataType") or "").upper()
        if name != "CZ" and kind == "I" and data_type in ("I", "L"):
            quirks.append(
                f"{name} is incremental but declares the integer DataType {data_type!r}; "
                "ignored (an incremental axis stores no values)"
            )
    return changed
