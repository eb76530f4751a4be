"""`read_scan`: the format of a file, its reader, then the finishing common to all formats.

The readers are `balllink.io._x3p_read` (X3P), `balllink.io._arrays` (.npy, .npz) and
`balllink.io._images` (PNG, TIFF); they hand over what the file holds. Here the spacing is
settled, invalid markers and fill values of foreign files are read as not measured, the
region of interest and the annotation choice are applied and ``meta`` is completed (see the
`balllink.io` documentation). A file in balllink's own .npz format is given back exactly as
written (`_finish_own`): nothing is guessed for it.
"""

from __future__ import annotations

import errno
import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .._files import file_sha256
from .._scan import HANDEDNESS, Scan
from ._arrays import OwnScan, read_npy, read_npz
from ._content import READER_KEYS, FileContent, fail
from ._images import read_image
from ._x3p_read import SENTINEL_MAGNITUDE, read_x3p
from ._zip import MAX_UNCOMPRESSED_BYTES

__all__ = ["FILL_MIN_PIXELS", "MAX_FILE_BYTES", "SUPPORTED_SUFFIXES", "read_scan"]

logger = logging.getLogger(__name__)

#: Suffixes `read_scan` knows; `write_scan` writes ``.x3p`` and ``.npz``.
SUPPORTED_SUFFIXES = (".x3p", ".npy", ".npz", ".png", ".tif", ".tiff")
_SUPPORTED_TEXT = (
    ".x3p (ISO 25178-72), .npy, .npz (heights + spacing_um), .png, .tif/.tiff (images)"
)
#: Largest file `read_scan` opens (bytes).
MAX_FILE_BYTES = 2 << 30
#: Default of ``read_scan(handedness=...)``: what balllink's own metadata in the file says.
_FROM_FILE = "file"


class _Selection(NamedTuple):
    """Annotation names the caller chose: ``keep`` (None: all) and ``exclude``."""

    keep: list[str] | None = None
    exclude: list[str] | None = None


_NO_SELECTION = _Selection()


def _kind(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".x3p":
        return "x3p"
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if suffix in (".png", ".tif", ".tiff"):
        return "image"
    # Unknown suffix: look at the content.
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head[:4] in (
        b"II*\x00",
        b"MM\x00*",
        b"II+\x00",
        b"MM\x00+",
    ):
        return "image"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n.replace("\\", "/").lower() for n in archive.namelist()]
        except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile):
            names = []
        if any(n == "main.xml" or n.endswith("/main.xml") for n in names):
            return "x3p"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
    raise fail(
        path,
        f"unsupported file type {suffix or '(no suffix)'!r}: content not recognised. "
        f"balllink reads {_SUPPORTED_TEXT}",
    )


def read_scan(
    path: str | os.PathLike[str],
    *,
    apply_mask: bool = True,
    spacing_um: float | tuple[float, float] | None = None,
    exclude: str | Iterable[str] | None = None,
    keep: str | Iterable[str] | None = None,
    handedness: str | None = _FROM_FILE,
) -> Scan:
    """Read a scan file into a `Scan` (heights float32 µm, spacing µm per pixel).

    Parameters
    ----------
    path : str or path-like
        An ``.x3p``, ``.npy``, ``.npz``, ``.png`` or ``.tif``/``.tiff`` file (another suffix
        is recognised by content). See the module documentation for each format.
    apply_mask : bool, default True
        Set the heights outside the region of interest stored in the file to NaN. With False
        they keep their values; the ROI is in ``meta["file_mask"]`` either way. A region of
        interest is: a black/white X3P ``bindata/mask.png`` without ``<Background>`` (white =
        usable, as CSAFE's raw TopMatch exports), an annotation whose name says it is the usable
        region ("breech face", "ROI", "usable", "valid"), the mask balllink wrote, or the npz
        ``mask``. An *annotation mask* (x3ptools/FiX3P: ``Record3/Mask`` with a
        ``<Background>`` colour, default ``#cd7f32``, and named ``<Annotations>``) is not one:
        its regions are marks drawn on the surface ("break-off", "no striae"...), reported in
        ``meta["annotations"]`` and left in the heights (``meta["file_mask"]`` is None).
    spacing_um : float or (dy, dx), optional
        Lateral spacing in µm per pixel. Required for ``.npy`` and images, which carry none;
        for other formats it replaces the file's spacing (recorded in ``meta["quirks"]``).
    exclude : str or list of str, optional
        Names of annotations (keys of ``meta["annotations"]``) whose regions are set to NaN,
        whatever ``apply_mask`` says.
    keep : str or list of str, optional
        Names of annotations whose regions are the only ones kept (the rest is set to NaN);
        applied before ``exclude``.
    handedness : {"viewed", "mirrored", None}, optional
        What the caller knows of the orientation of the array; replaces what the file says
        (a difference is recorded in the quirks). ``None`` means unknown. By default
        (``"file"``) only balllink's own metadata in the file (X3P ``meta.json``, npz
        ``meta_json``, written by `write_scan`) is trusted; nothing else is, since X3P does
        not pin down whether row 0 is the top or the bottom.

    Returns
    -------
    Scan
        ``meta`` holds ``format``, ``instrument``, ``date``, ``creator``, ``comment``,
        ``quirks``, ``checksum``, ``file_mask``, ``mask_applied``, ``annotations``,
        ``handedness``, ``source_sha256`` and whatever else the file carries (see the
        `balllink.io` documentation). A file in balllink's own .npz format gives back the
        scan as it was written: its ``meta``, mask and ``source`` exactly, ``apply_mask``
        unused; only ``spacing_um``, ``handedness``, ``keep`` and ``exclude`` change it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ScanFormatError
        If the file is unsupported, damaged, hostile (zip bomb, DTD/entities), empty, holds
        no finite height, or lacks a required spacing; the message names the file.
    ValueError
        If ``exclude`` or ``keep`` name an annotation the file does not have (the message
        lists the ones it has), or ``handedness`` is not one of the values above.

    Warns
    -----
    ChecksumWarning
        When an X3P checksum is wrong or missing (the file is read anyway).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import balllink as bl
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(folder / "z.npy", np.arange(12.0).reshape(3, 4))
    >>> scan = bl.read_scan(folder / "z.npy", spacing_um=6.25)
    >>> scan.shape, scan.spacing_um, scan.meta["format"], scan.meta["handedness"]
    ((3, 4), (6.25, 6.25), 'npy', None)
    """
    path = Path(os.fspath(path))
    if handedness != _FROM_FILE and handedness is not None and handedness not in HANDEDNESS:
        raise ValueError(
            f"handedness must be 'viewed', 'mirrored' or None (unknown), got {handedness!r} "
            f"(reading {path})"
        )
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "scan file not found", str(path))
    if path.is_dir():
        raise fail(path, "is a directory, not a scan file")
    size = path.stat().st_size
    if size == 0:
        raise fail(path, "the file is empty")
    if size > MAX_FILE_BYTES:
        raise fail(path, f"{size} bytes, more than the limit of {MAX_FILE_BYTES}")
    with open(path, "rb") as stream:
        head = stream.read(8)
    kind = _kind(path, head)
    limit = MAX_UNCOMPRESSED_BYTES
    logger.debug("read_scan %s as %s", path, kind)

    if kind == "x3p":
        content = read_x3p(path, limit=limit)
        read = FileContent(
            content.heights_um,
            content.spacing_um,
            content.file_mask,
            content.meta,
            content.quirks,
            content.checksum,
            "x3p",
            content.annotations,
        )
    elif kind == "npy":
        read = read_npy(path, limit)
    elif kind == "npz":
        read = read_npz(path, limit)
    else:
        read = read_image(path, limit)
    selection = _Selection(_names(keep, "keep", path), _names(exclude, "exclude", path))
    if isinstance(read, OwnScan):
        return _finish_own(
            path, read, spacing_um=spacing_um, selection=selection, handedness=handedness
        )
    return _finish(
        path,
        read,
        apply_mask=apply_mask,
        spacing_um=spacing_um,
        selection=selection,
        handedness=handedness,
    )


def _names(value: str | Iterable[str] | None, what: str, path: Path) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"{what} must be annotation names (str), got {value!r} (reading {path})")
    if what == "keep" and not names:
        raise ValueError(f"keep=[] would keep nothing; name an annotation (reading {path})")
    return names


def _spacing_pair(value: Any, path: Path) -> tuple[float, float]:
    try:
        if np.isscalar(value):
            pair = (float(value), float(value))
        else:
            dy, dx = (float(v) for v in value)
            pair = (dy, dx)
    except (TypeError, ValueError):
        raise ValueError(
            f"spacing_um must be (dy, dx) in micrometres, got {value!r} (reading {path})"
        ) from None
    if not all(np.isfinite(pair)) or min(pair) <= 0:
        raise ValueError(f"spacing_um must be positive and finite, got {pair} (reading {path})")
    return pair


def _stored_spacing(value: Any, path: Path) -> tuple[float, float]:
    """The spacing a file stores: `ScanFormatError` naming the file when it is unusable (the
    file is at fault, not the caller's ``spacing_um``)."""
    try:
        return _spacing_pair(value, path)
    except ValueError:
        raise fail(
            path,
            f"the spacing stored in the file, {value}, is not a positive finite (dy, dx) in "
            "micrometres; pass the right one: read_scan(path, spacing_um=(dy, dx))",
        ) from None


def _region(
    path: Path, annotations: dict[str, np.ndarray], names: list[str], what: str
) -> np.ndarray:
    """The union of the named annotation regions; ValueError listing the names the file has."""
    unknown = [name for name in names if name not in annotations]
    if unknown:
        have = ", ".join(repr(name) for name in annotations) or "none"
        raise ValueError(
            f"{path}: {what}={unknown!r} names annotation(s) the file does not have; "
            f"its annotations: {have}"
        )
    return np.logical_or.reduce([np.asarray(annotations[name], bool) for name in names])


def _handedness(
    path: Path, requested: str | None, stored: dict[str, Any], quirks: list[str]
) -> str | None:
    """The handedness: the caller's, else balllink's own metadata, else None (unknown)."""
    in_file = stored.get("handedness")
    if in_file is not None and in_file not in HANDEDNESS:
        quirks.append(
            f"handedness {in_file!r} stored in the file is not 'viewed', 'mirrored' or null; "
            "read as unknown (None)"
        )
        in_file = None
    if requested == _FROM_FILE:
        return in_file
    if "handedness" in stored and requested != in_file:
        quirks.append(
            f"handedness {requested!r} given by the caller replaces the file's {in_file!r}"
        )
    return requested


#: Touching pixels of exactly one floating-point value that make a fill region: a measured
#: surface never repeats a float value over so many neighbours (exporters write 0, or the
#: data's minimum or maximum, where nothing was measured).
FILL_MIN_PIXELS = 200


def _float_source(read: FileContent) -> bool:
    """Heights stored as floating point (integer data and images repeat values legitimately)."""
    if read.format == "image":
        return False
    if read.format == "x3p":
        detail = read.meta.get("x3p") if isinstance(read.meta.get("x3p"), dict) else {}
        return str(detail.get("z_data_type", "")).startswith("float")
    return np.asarray(read.heights).dtype.kind == "f"


def _fill_regions(z: np.ndarray) -> tuple[float, np.ndarray] | None:
    """The fill value (0, the minimum or the maximum: one that stands in a patch of at least
    `FILL_MIN_PIXELS` touching pixels) and everywhere it stands; None when there is none, or
    when it covers
    (nearly) the whole grid: that is a flat surface, not a fill around a measurement."""
    finite = np.isfinite(z)
    values = z[finite]
    best = None
    for value in {0.0, float(values.min()), float(values.max())}:
        hit = finite & (z == np.float32(value))
        if np.count_nonzero(hit) < FILL_MIN_PIXELS:
            continue
        labels, n = ndi.label(hit)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        big = np.flatnonzero(sizes >= FILL_MIN_PIXELS)
        # a grid of one value (or nearly) is a flat surface, not a fill around a measurement
        if big.size and sizes[big].sum() < 0.95 * values.size:
            # the exporter's fill value, shown by its large patches, stands for "not measured"
            # wherever it occurs (small dropouts too)
            if best is None or hit.sum() > best[1].sum():
                best = (value, hit)
    return best


def _finish(
    path: Path,
    read: FileContent,
    *,
    apply_mask: bool,
    spacing_um: Any,
    selection: _Selection = _NO_SELECTION,
    handedness: str | None = _FROM_FILE,
) -> Scan:
    quirks = list(read.quirks)
    if spacing_um is not None:
        spacing = _spacing_pair(spacing_um, path)
        if read.spacing_um is not None and not np.allclose(spacing, read.spacing_um):
            quirks.append(
                f"spacing_um {spacing} given by the caller replaces the file's {read.spacing_um}"
            )
    elif read.spacing_um is not None:
        spacing = _stored_spacing(read.spacing_um, path)
    else:
        what = "an image (PNG/TIFF)" if read.format == "image" else f"a .{read.format} file"
        raise fail(
            path,
            f"{what} carries no lateral spacing; pass it: read_scan(path, spacing_um=(dy, dx)) "
            "in micrometres per pixel",
        )

    raw_heights = np.asarray(read.heights)
    heights = np.array(raw_heights, dtype=np.float32, order="C", copy=True)
    if read.format in ("npy", "npz") and raw_heights.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            huge = np.abs(raw_heights) >= SENTINEL_MAGNITUDE
        if huge.any():  # ±3.4e38, 1e30...: "not measured" markers, as in X3P
            heights[huge] = np.nan
            quirks.append(
                f"{int(huge.sum())} point(s) hold a sentinel (|z| >= "
                f"{SENTINEL_MAGNITUDE:g}): read as not measured"
            )
    finite = np.isfinite(heights)
    if not finite.all():
        heights[~finite] = np.nan
    if not finite.any():
        raise fail(path, f"the grid {heights.shape} holds no finite height value")
    if _float_source(read):
        filled = _fill_regions(heights)
        if filled is not None:
            value, region = filled
            heights[region] = np.nan
            quirks.append(
                f"{int(region.sum())} points hold exactly {value:g}, some in patches of "
                f"{FILL_MIN_PIXELS} or more touching pixels: a fill value for unmeasured "
                "points, read as not measured"
            )

    file_mask = read.file_mask
    applied = False
    if file_mask is not None and apply_mask:
        heights[~file_mask] = np.nan
        applied = True
        if not np.isfinite(heights).any():
            raise fail(
                path,
                "the region of interest stored in the file leaves no finite height; "
                "read it with apply_mask=False to see the data",
            )
    keep, exclude = selection.keep, selection.exclude
    if keep is not None:
        heights[~_region(path, read.annotations, keep, "keep")] = np.nan
    if exclude:
        heights[_region(path, read.annotations, exclude, "exclude")] = np.nan
    if (keep is not None or exclude) and not np.isfinite(heights).any():
        raise fail(path, f"keep={keep!r}, exclude={exclude!r} leave no finite height")

    meta: dict[str, Any] = {
        "format": read.format,
        "instrument": None,
        "date": None,
        "creator": None,
        "comment": None,
    }
    meta.update({k: v for k, v in read.meta.items() if k not in READER_KEYS or k == "x3p"})
    if keep is not None or exclude:
        meta["annotation_filter"] = {"keep": keep, "exclude": exclude or []}
    meta.update(
        quirks=quirks,
        checksum=read.checksum,
        file_mask=file_mask,
        mask_applied=applied,
        annotations=dict(read.annotations),
        handedness=_handedness(path, handedness, read.meta, quirks),
        source_sha256=file_sha256(path),
    )
    for quirk in quirks:
        logger.info("%s: %s", path, quirk)
    return Scan(heights, spacing, None, meta, source=str(path))


def _finish_own(
    path: Path,
    own: OwnScan,
    *,
    spacing_um: Any,
    selection: _Selection,
    handedness: str | None,
) -> Scan:
    """A file balllink wrote: the scan as written; only what the caller asks is changed.

    Heights, mask, spacing, ``meta`` and source come back exactly (no sentinel, fill value
    or region of interest is guessed or applied; ``apply_mask`` has nothing to do). The
    caller's ``spacing_um``, ``handedness``, ``keep`` and ``exclude`` apply as for any file,
    each change noted in ``meta["quirks"]``; a stored handedness other than the three
    values is read as None (unknown), also noted.
    """
    meta = dict(own.meta)
    notes: list[str] = []
    spacing = own.spacing_um
    if spacing_um is not None:
        given = _spacing_pair(spacing_um, path)
        if not np.allclose(given, spacing):
            notes.append(f"spacing_um {given} given by the caller replaces the file's {spacing}")
        spacing = given
    chosen = _handedness(path, handedness, meta, notes)
    if handedness != _FROM_FILE or chosen != meta.get("handedness"):
        meta["handedness"] = chosen
    heights = own.heights
    keep, exclude = selection.keep, selection.exclude
    if keep is not None or exclude:
        heights = np.array(heights, dtype=np.float32, order="C", copy=True)
        if keep is not None:
            heights[~_region(path, own.annotations, keep, "keep")] = np.nan
        if exclude:
            heights[_region(path, own.annotations, exclude, "exclude")] = np.nan
        meta["annotation_filter"] = {"keep": keep, "exclude": exclude or []}
    if not np.isfinite(heights).any():
        raise fail(path, f"the grid {heights.shape} holds no finite height value")
    if notes:
        quirks = meta.get("quirks")
        meta["quirks"] = (list(quirks) if isinstance(quirks, list) else []) + notes
        for note in notes:
            logger.info("%s: %s", path, note)
    return Scan(heights, spacing, own.mask, meta, source=own.source)
