"""Mask images of X3P files (``bindata/mask.png``): the two conventions, decoding, encoding.

The same file name carries two different things, told apart by ``main.xml`` and the image:

*Annotation mask* (x3ptools, FiX3P). ``Record3/Mask`` holds a ``<Background>`` colour (default
``#cd7f32``: nothing drawn there) and ``<Annotations>`` naming the other colours::

    <Mask><Background>#cd7f32</Background>
      <Annotations><Annotation color="#ff0000">break-off</Annotation></Annotations></Mask>

Annotated pixels are marks an examiner drew on the surface ("break-off", "no striae", "left
groove"...), mostly regions to leave out; they are *not* the usable region. They are returned as
named bool regions and never mask the heights, except an annotation whose name says that it is
the usable region (`is_roi_name`: "breech face", "ROI", "usable", "valid"...).

*Region-of-interest mask* (CSAFE raw TopMatch exports and similar). No ``<Background>``, no
annotation names, at most two opaque colours (not ``#cd7f32``): white on black (or the colour
that does not dominate the image border, or the opaque pixels on transparency) is usable.

balllink's own X3P files keep their region of interest in a vendor file (``balllink/mask.png``,
white = usable, described in ``balllink/meta.json``) and write annotations as x3ptools does.

Image row ``i`` lies over data row ``i`` (checked on the raw DFSC scans, where this orientation
puts the ROI on the smooth breech face).
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, ImageColor

__all__ = [
    "MASK_MEMBER",
    "X3PTOOLS_BACKGROUND",
    "DecodedMask",
    "add_annotation_mask",
    "decode_mask",
    "encode_annotations",
    "encode_roi_png",
    "find_mask_member",
    "is_roi_name",
    "parse_colour",
    "read_masks",
    "roi_from_colours",
]

#: Where x3ptools (and balllink, for annotations) put the mask image in the container.
MASK_MEMBER = "bindata/mask.png"

#: Colour that x3ptools gives to the pixels nobody annotated: background.
X3PTOOLS_BACKGROUND = (0xCD, 0x7F, 0x32)
#: An image with more distinct opaque colours than this is a picture, not a mask; at most this
#: many annotations are read, and at most `MAX_REGION_BYTES` of bool regions in all.
MAX_MASK_COLOURS = 64
MAX_REGION_BYTES = 1 << 30
#: Words in the name of an annotation that mark it as the usable region ...
_ROI_WORDS = re.compile(
    r"breech|\bbf\b|\broi\b|\busable\b|\bvalid\b|region of interest", re.IGNORECASE
)
#: ... unless the name also says the opposite.
_NOT_ROI = re.compile(
    r"\b(no|not|non|without|outside|exclude[ds]?|ignore[ds]?|damage[ds]?|defects?)\b"
    r"|\bun-?usable|\binvalid|artefact|artifact|scratch|debris|dirt",
    re.IGNORECASE,
)
_BLACK, _WHITE = 0x000000, 0xFFFFFF
#: Colours `encode_annotations` gives to annotations, in order (then a 5-level RGB grid).
_PALETTE = (
    0xFF0000, 0x0000FF, 0x00C000, 0xFFFF00, 0xFF00FF, 0x00FFFF, 0x800080, 0x008080,
    0x000080, 0x808000, 0x800000, 0xFF8000, 0x8000FF, 0x0080FF, 0xFF0080, 0x80FF00,
)  # fmt: skip


@dataclass
class DecodedMask:
    """What `decode_mask` found: the ROI (or None), named regions, description, quirks."""

    roi: np.ndarray | None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    described: dict[str, Any] = field(default_factory=dict)
    quirks: list[str] = field(default_factory=list)


def hex_colour(code: int) -> str:
    return f"#{code & 0xFFFFFF:06x}"


def _code(rgb: tuple[int, int, int]) -> int:
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def parse_colour(text: str | None) -> tuple[int, int, int] | None:
    """``#rrggbb``, ``#rrggbbaa`` (alpha dropped, as x3ptools writes) or a colour name."""
    if not text:
        return None
    text = text.strip()
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", text)
    if match:
        value = match.group(1)
        return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
    try:
        rgb = ImageColor.getrgb(text)  # "red", "rgb(255,0,0)"... (R's colour names mostly agree)
    except ValueError:
        return None
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def is_roi_name(name: str) -> bool:
    """Whether an annotation name says the region is the usable one ("Breech face impression")."""
    return bool(_ROI_WORDS.search(name)) and not _NOT_ROI.search(name)


def _load(png: bytes, shape: tuple[int, int], label: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Decode to (24-bit colour codes, opaque) on the grid; raise ValueError when unusable."""
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
        raise ValueError(f"{label} cannot be decoded ({error}); mask ignored") from None
    if (height, width) != (rows, cols):
        if abs((height / rows) / (width / cols) - 1) >= 0.01:
            raise ValueError(
                f"{label} is {height}x{width} but the grid is {rows}x{cols}; mask ignored"
            )
        quirks.append(f"{label} is {height}x{width}, the grid {rows}x{cols}; resampled (nearest)")
        image = image.resize((cols, rows), Image.Resampling.NEAREST)
    rgba = np.asarray(image)
    codes = (
        rgba[..., 0].astype(np.uint32) << 16
        | rgba[..., 1].astype(np.uint32) << 8
        | rgba[..., 2].astype(np.uint32)
    )
    return codes, rgba[..., 3] != 0, quirks


def _unusable(message: str) -> DecodedMask:
    # _unusable < decode_mask < read_masks < _masks < read_x3p < read_scan < the caller
    warnings.warn(message, UserWarning, stacklevel=7)
    return DecodedMask(None, {}, {}, [message])


def roi_from_colours(
    png: bytes, shape: tuple[int, int], colours: list[tuple[int, int, int]], *, label: str
) -> DecodedMask:
    """The ROI of a mask whose usable colours are known (balllink's own ``mask.png``)."""
    try:
        codes, opaque, quirks = _load(png, shape, label)
    except ValueError as error:
        return _unusable(str(error))
    roi = np.isin(codes, [_code(c) for c in colours]) & opaque
    described = {
        "convention": "region of interest (balllink)",
        "rule": "usable colour(s) " + ", ".join(hex_colour(_code(c)) for c in colours),
    }
    if not roi.any():
        quirks.append(f"{label}: no pixel has the usable colour; no ROI read")
        return DecodedMask(None, {}, described, quirks)
    return DecodedMask(np.ascontiguousarray(roi), {}, described, quirks)


def decode_mask(
    png: bytes,
    shape: tuple[int, int],
    *,
    background: tuple[int, int, int] | None = None,
    names: Sequence[tuple[tuple[int, int, int] | None, str]] = (),
    label: str = "mask.png",
) -> DecodedMask:
    """Decode an x3ptools/CSAFE ``mask.png`` on a ``shape`` grid (see the module text).

    ``background`` and ``names`` (``(colour or None, name)`` per ``<Annotation>``) come from
    ``Record3/Mask`` of ``main.xml``. Returns the region of interest (``None`` unless the image
    is a region-of-interest mask or an annotation names the usable region) and the annotations
    as ``{name: bool region}``. An image that cannot be used gives a warning and nothing.
    """
    try:
        codes, opaque, quirks = _load(png, shape, label)
    except ValueError as error:
        return _unusable(str(error))
    values, counts = np.unique(codes[opaque], return_counts=True)
    described: dict[str, Any] = {
        "colours": {hex_colour(int(v)): int(c) for v, c in zip(values[:16], counts[:16])},
        "transparent": int((~opaque).sum()),
    }
    if values.size > MAX_MASK_COLOURS:
        return _unusable(
            f"{label} holds {values.size} colours: a picture, not a mask (at most "
            f"{MAX_MASK_COLOURS}); ignored"
        )
    named = [(c, n.strip()) for c, n in names if n and n.strip()]
    colourless = [name for colour, name in named if colour is None]
    if colourless:
        quirks.append(
            f"{label}: annotation(s) {colourless[:5]} have no colour that can be read; ignored"
        )
    named = [(c, n) for c, n in named if c is not None]
    present = {int(v) for v in values}
    if background is None and not named and _code(X3PTOOLS_BACKGROUND) not in present:
        if values.size <= 2:
            roi, rule = _binary_roi(codes, opaque, values)
            described.update(convention="region of interest", rule=rule)
            return DecodedMask(roi, {}, described, quirks)

    # Annotation mask: the background colour is unannotated, every other colour a region.
    named_codes = _codes(named)
    if background is not None:
        bg: int | None = _code(background)
    elif _code(X3PTOOLS_BACKGROUND) in present:
        bg = _code(X3PTOOLS_BACKGROUND)
    else:  # no <Background>: the most frequent colour nobody named
        others = [(c, int(v)) for v, c in zip(values, counts) if int(v) not in named_codes]
        bg = max(others)[1] if others else None
    regions: dict[str, np.ndarray] = {}
    most = max(1, min(MAX_MASK_COLOURS, MAX_REGION_BYTES // codes.size))
    candidates = [(name, _code(colour)) for colour, name in named] + [
        (f"unnamed {hex_colour(v)}", v) for v in sorted(present - named_codes)
    ]
    left_out = 0
    for name, value in candidates:
        if value == bg or name.lower() == "background":
            continue
        if name not in regions and len(regions) >= most:
            left_out += 1
            continue
        region = (codes == value) & opaque
        regions[name] = regions[name] | region if name in regions else region
    if left_out:
        quirks.append(f"{label}: {left_out} more annotation(s) than {most}; not read")
    regions = {name: np.ascontiguousarray(region) for name, region in regions.items()}
    roi_names = [name for name in regions if is_roi_name(name)]
    roi = None
    if roi_names:
        roi = np.logical_or.reduce([regions[name] for name in roi_names])
        if not roi.any():
            quirks.append(
                f"{label}: annotation(s) {roi_names} name the usable region but no pixel has "
                "their colour; no ROI read"
            )
            roi = None
    described.update(
        convention="annotations",
        background=hex_colour(bg) if bg is not None else None,
        annotations={name: int(region.sum()) for name, region in regions.items()},
        rule=(
            f"annotation(s) {roi_names} name the usable region"
            if roi is not None
            else "annotations are marks on the surface: the heights are not masked"
        ),
    )
    return DecodedMask(roi, regions, described, quirks)


def _codes(named: list[tuple[tuple[int, int, int] | None, str]]) -> set[int]:
    return {_code(c) for c, _ in named if c is not None}


def _binary_roi(
    codes: np.ndarray, opaque: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray | None, str]:
    if values.size == 0:
        return None, "fully transparent image: no region of interest"
    if values.size == 1:
        if opaque.all():
            return opaque.copy(), "single colour: the whole grid is usable"
        return opaque.copy(), "single opaque colour on transparency: the opaque pixels"
    if {int(v) for v in values} == {_BLACK, _WHITE}:
        return (codes == _WHITE) & opaque, "black and white: white is usable"
    edge = np.zeros(codes.shape, dtype=bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    border = codes[edge & opaque]
    border_values, border_counts = np.unique(border, return_counts=True)
    bg = int(border_values[np.argmax(border_counts)])
    return (codes != bg) & opaque, f"every colour but {hex_colour(bg)}, which dominates the border"


def find_mask_member(names: list[str], prefix: str) -> str | None:
    """The x3ptools mask image: ``bindata/mask.png``, else one ``*mask*.png`` or bindata PNG.

    balllink's own ROI file (``balllink/mask.png``) is read separately, never here.
    """
    local = {
        n[len(prefix) :]: n
        for n in names
        if n.startswith(prefix) and not n[len(prefix) :].lower().startswith("balllink/")
    }
    for name, member in local.items():
        if name.lower() == MASK_MEMBER:
            return member
    pngs = [n for n in local if n.lower().endswith(".png")]
    for candidates in (
        [n for n in pngs if "mask" in n.lower().rsplit("/", 1)[-1]],
        [n for n in pngs if n.lower().startswith("bindata/")],
    ):
        if len(candidates) == 1:
            return local[candidates[0]]
    return None


def read_masks(
    shape: tuple[int, int],
    *,
    own_png: bytes | None,
    own_colours: list[Any] | None,
    png: bytes | None,
    label: str,
    background: tuple[int, int, int] | None,
    names: Sequence[tuple[tuple[int, int, int] | None, str]],
) -> DecodedMask:
    """Both masks of an X3P file: balllink's own ROI and the x3ptools/CSAFE ``mask.png``.

    The ROI is the intersection of what each says is usable (``None`` when neither says);
    ``described`` has the keys ``balllink_mask`` and ``mask`` for ``meta["x3p"]``.
    """
    rois: list[np.ndarray] = []
    out = DecodedMask(None)
    if own_png is not None:  # white unless meta.json says otherwise
        colours = [parse_colour(str(text)) for text in own_colours or ["#ffffff"]]
        own = roi_from_colours(
            own_png, shape, [c for c in colours if c is not None], label="balllink/mask.png"
        )
        out.quirks += own.quirks
        out.described["balllink_mask"] = own.described
        if own.roi is not None:
            rois.append(own.roi)
    if png is not None:
        decoded = decode_mask(png, shape, background=background, names=names, label=label)
        out.quirks += decoded.quirks
        out.described["mask"] = {"member": label, **decoded.described}
        out.annotations = decoded.annotations
        if decoded.roi is not None:
            rois.append(decoded.roi)
    if rois:
        out.roi = np.ascontiguousarray(np.logical_and.reduce(rois))
    return out


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode_roi_png(mask: np.ndarray) -> bytes:
    """The ROI as an 8-bit greyscale PNG: 255 (white) usable, 0 (black) background."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _colours(count: int) -> list[int]:
    levels = (0, 0x40, 0x80, 0xC0, 0xFF)
    grid = [(r << 16) | (g << 8) | b for r in levels for g in levels for b in levels]
    taken = {_code(X3PTOOLS_BACKGROUND), _BLACK, _WHITE}
    out = [c for c in dict.fromkeys([*_PALETTE, *grid]) if c not in taken]
    if count > len(out):
        raise ValueError(f"at most {len(out)} annotations can be written, got {count}")
    return out[:count]


def encode_annotations(
    annotations: dict[str, np.ndarray], shape: tuple[int, int], *, label: str
) -> tuple[bytes, str]:
    """An x3ptools annotation mask: ``(mask.png bytes, <Mask> XML element text)``.

    ``#cd7f32`` where nothing is annotated, one colour per annotation. Raises ValueError for a
    name that is not text, a region of another shape, or regions that overlap (a pixel has one
    colour).
    """
    names = list(annotations)
    colours = _colours(len(names))
    image = np.empty((*shape, 3), dtype=np.uint8)
    image[...] = X3PTOOLS_BACKGROUND
    taken = np.zeros(shape, dtype=bool)
    for name, colour in zip(names, colours):
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(
                f"{label}: annotation names must be non-empty text without surrounding spaces, "
                f"got {name!r}"
            )
        if name.lower() == "background":
            raise ValueError(f"{label}: 'background' is the unannotated colour, not a name")
        if re.search(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", name):
            raise ValueError(f"{label}: annotation name {name!r} holds a character XML cannot")
        region = np.asarray(annotations[name])
        if region.shape != tuple(shape):
            raise ValueError(
                f"{label}: annotation {name!r} has shape {region.shape}, the scan {tuple(shape)}"
            )
        region = region.astype(bool)
        overlap = int((region & taken).sum())
        if overlap:
            raise ValueError(
                f"{label}: annotation {name!r} overlaps an earlier one at {overlap} pixels; "
                "mask.png holds one colour per pixel, so annotations must not overlap"
            )
        taken |= region
        image[region] = ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    entries = "".join(
        f"<Annotation color={quoteattr(hex_colour(colour))}>{escape(name)}</Annotation>"
        for name, colour in zip(names, colours)
    )
    xml = (
        f"<Mask><Background>{hex_colour(_code(X3PTOOLS_BACKGROUND))}</Background>"
        f"<Annotations>{entries}</Annotations></Mask>"
    )
    return buffer.getvalue(), xml


def add_annotation_mask(data: bytes, png: bytes, mask_xml: str) -> bytes:
    """Add ``bindata/mask.png`` and ``Record3/Mask`` to the X3P container bytes x3pio wrote.

    x3pio knows nothing of masks: ``<Mask>`` goes at the end of ``Record3`` (where x3ptools
    puts it) and the MD5 checksum of main.xml is computed again.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    main = source.read("main.xml")
    end = main.rfind(b"</Record3>")
    main = main[:end] + mask_xml.encode("utf-8") + main[end:]
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            if info.filename == "main.xml":
                content = main
            elif info.filename == "md5checksum.hex":
                content = f"{md5(main, usedforsecurity=False).hexdigest()} *main.xml\n".encode()
            else:
                content = source.read(info)
            out.writestr(info, content)
        out.writestr(MASK_MEMBER, png)
    return buffer.getvalue()
