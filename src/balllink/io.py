"""Reading and writing scans: X3P (ISO 25178-72), .npy/.npz, PNG/TIFF images.

`read_scan` returns a `Scan` with heights in micrometres (float32, NaN = not measured) and the
lateral spacing ``(dy, dx)`` in µm per pixel; metres are turned into micrometres here, once.

Formats (chosen by suffix; a file with another suffix is recognised by its first bytes):

``.x3p``
    ISO 25178-72 through x3pio, hardened against hostile files and tolerant of the deviations
    real exports have (see `balllink._x3p`; each repair is recorded in ``meta["quirks"]``): the
    root element ``<ISO5436>`` of older x3ptools; revisions such as ``ISO5436-2000`` or
    ``ISO5436–2000``; content in a folder of the zip beside ``__MACOSX/`` and ``.DS_Store``
    junk; an empty ``<Offset/>``; an ``<Origin>`` inside ``<Axes>``; integer data types on
    incremental X/Y axes; ``+Inf``, ``-Inf`` and huge sentinels (``|z| >= 1e15``) as invalid
    points (NaN); increments or heights written in micrometres instead of metres (decided by
    magnitude); a negative lateral increment (that axis of the array is reversed, so row ``i`` is
    at ``y = i * dy`` and column ``j`` at ``x = j * dx``); a missing or wrong checksum (a
    `ChecksumWarning`, ``meta["checksum"]``). Data in ``bindata/*.bin`` (float32, float64 and
    integer with a Z increment) or in ``main.xml`` (``DataList``, an empty ``Datum`` is NaN),
    with or without ``bindata/valid.bin`` (bit ``k % 8`` of byte ``k // 8``, least significant
    first, 1 = valid, as openGPS and x3pio read it). Point clouds and irregular (absolute) X/Y
    axes are refused. The mask image ``bindata/mask.png`` is read as described below.
``.npy``
    A 2-D array of heights in micrometres; ``spacing_um`` must be given.
``.npz``
    Arrays ``heights`` (µm, 2-D) and ``spacing_um`` (``(dy, dx)`` or one value), optional
    ``mask`` (bool, True = usable: the file's region of interest), ``annotations`` (bool,
    ``(n, rows, cols)``) with ``annotation_names`` (``n`` strings), and ``meta_json`` (a JSON
    object merged into ``meta``). `write_scan` writes this layout.
``.png``, ``.tif``, ``.tiff``
    8- or 16-bit (or float TIFF) intensity images, such as photographs of a breech face.
    ``heights`` are the grey levels as float32 *in the image's own units*, not micrometres;
    colour images are reduced to luminance (ITU-R BT.601 weights) and pixels with alpha 0 are
    NaN. ``spacing_um`` must be given; ``meta["format"]`` is ``"image"``.

Masks: two conventions.
    ``bindata/mask.png`` of an X3P file is either an *annotation mask* (x3ptools, FiX3P:
    ``Record3/Mask`` names a ``<Background>`` colour, default ``#cd7f32``, and
    ``<Annotations>``, such as ``<Annotation color="#ff0000">break-off</Annotation>``) or a
    *region-of-interest mask* (no ``<Background>``, no annotation names, two colours: white on
    black is usable, as in the CSAFE raw TopMatch exports). Annotations are marks drawn on the
    surface, mostly regions to leave out, never the usable area: they are returned in
    ``meta["annotations"]`` as ``{name: bool array of the grid's shape}`` (a colour without a
    name is called ``"unnamed #rrggbb"``) and do not mask the heights, unless the caller asks
    (``exclude=[names]`` sets those regions to NaN, ``keep=[names]`` keeps only those) or an
    annotation's name says it *is* the usable region ("breech face", "ROI", "usable", "valid").

Region of interest. A region-of-interest mask (the black/white convention, an annotation naming
the usable region, balllink's own mask of an X3P file it wrote, ``mask`` in .npz) is returned as
``meta["file_mask"]`` (bool, the grid's shape; otherwise None, so that `preprocess` does not
take annotations for the ROI). With ``apply_mask=True`` (default) the heights outside it are
set to NaN, so ``scan.mask`` (the finite points) is the ROI; with ``apply_mask=False`` the
heights keep their values and ``scan.mask`` is the finite points only.

Handedness. ``meta["handedness"]`` is ``None`` (unknown), ``"viewed"`` (the array shown with row
0 on top shows the casing head as seen looking at it) or ``"mirrored"``. X3P does not say
whether row 0 is the top or the bottom, and exporters differ, so it is None unless the caller
says (``read_scan(path, handedness="viewed")``) or balllink wrote the file (X3P ``meta.json``,
.npz ``meta_json``: `write_scan` stores ``meta["handedness"]``). Nothing else is trusted: not
an ``<Origin>`` element, not the instrument; a stored value other than the three is read as
None with a quirk.

``meta`` keys always present: ``format`` (``"x3p"``, ``"npy"``, ``"npz"`` or ``"image"``),
``instrument``, ``date`` (ISO 8601 text as written in the file), ``creator``, ``comment``,
``quirks`` (list of str: what was repaired or guessed), ``checksum`` (``"ok"``, ``"mismatch"``
or ``"missing"``; formats without checksums say ``"missing"`` without a warning),
``file_mask``, ``mask_applied``, ``annotations`` (dict, empty when none), ``handedness``,
``source_sha256`` (SHA-256 of the file bytes, for duplicate detection). X3P files add
``meta["x3p"]`` (revision, data type, increments as written, instrument serial/version,
calibration date, probing system, vendor extension IDs, an ``<Origin>`` found, mask decoding).
``read_scan(..., keep=..., exclude=...)`` adds ``meta["annotation_filter"]``.

Every damaged, hostile or empty file raises `ScanFormatError` naming the file and the problem,
after reading at most `MAX_UNCOMPRESSED_BYTES` (see `balllink._x3p`).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from . import _x3p
from ._files import atomic_write, file_sha256, jsonable
from ._scan import HANDEDNESS, Scan
from ._x3p import ChecksumWarning
from .errors import ScanFormatError

__all__ = [
    "FILL_MIN_PIXELS",
    "HANDEDNESS",
    "MAX_FILE_BYTES",
    "SUPPORTED_SUFFIXES",
    "ChecksumWarning",
    "read_scan",
    "write_scan",
]

logger = logging.getLogger(__name__)

#: Suffixes `read_scan` knows; `write_scan` writes ``.x3p`` and ``.npz``.
SUPPORTED_SUFFIXES = (".x3p", ".npy", ".npz", ".png", ".tif", ".tiff")
_SUPPORTED_TEXT = (
    ".x3p (ISO 25178-72), .npy, .npz (heights + spacing_um), .png, .tif/.tiff (images)"
)
#: Largest file `read_scan` opens (bytes).
MAX_FILE_BYTES = 2 << 30
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Values of ``meta["handedness"]`` besides None (unknown); see the module documentation.
#: Default of ``read_scan(handedness=...)``: what balllink's own metadata in the file says.
_FROM_FILE = "file"


@dataclass
class _Read:
    heights: np.ndarray
    spacing_um: tuple[float, float] | None
    file_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    quirks: list[str] = field(default_factory=list)
    checksum: str = "missing"
    format: str = ""
    annotations: dict[str, np.ndarray] = field(default_factory=dict)


def _fail(path: Path, what: str) -> ScanFormatError:
    return ScanFormatError(f"{path}: {what}")


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


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
    raise _fail(
        path,
        f"unsupported file type {suffix or '(no suffix)'!r}: content not recognised. "
        f"balllink reads {_SUPPORTED_TEXT}",
    )


# ---------------------------------------------------------------------------------------------
# .npy / .npz
# ---------------------------------------------------------------------------------------------


def _load_npy(
    stream: io.IOBase, available: int, what: str, path: Path, *, kinds: str = "biuf"
) -> np.ndarray:
    """Read one .npy payload after checking its header against the bytes available."""
    start = stream.tell()
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as error:  # numpy's header parser on untrusted bytes: any failure
        raise _fail(path, f"{what} is not a valid .npy array: {error!r}") from None
    if dtype.hasobject or dtype.kind not in kinds:
        raise _fail(path, f"{what} has the dtype {dtype}, expected a number type")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    needed = count * dtype.itemsize
    left = available - (stream.tell() - start)
    if needed != left:
        which = "shorter" if left < needed else "longer"
        raise _fail(
            path,
            f"{what} declares shape {shape} of {dtype} ({needed} bytes) but holds {left}: the "
            f"data is {which} than the declared grid",
        )
    data = stream.read(needed)
    if len(data) != needed:
        raise _fail(path, f"{what} is truncated")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(
        shape, order="F" if fortran else "C"
    )


def _grid(array: np.ndarray, what: str, path: Path) -> np.ndarray:
    if array.ndim != 2:
        raise _fail(path, f"{what} must be a 2-D grid of heights, got shape {array.shape}")
    if array.size == 0:
        raise _fail(path, f"the grid is empty: {what} has shape {array.shape}")
    return array


def _read_npy(path: Path, limit: int) -> _Read:
    size = path.stat().st_size
    if size > limit:
        raise _fail(path, f"{size} bytes, more than the limit of {limit}")
    with open(path, "rb") as stream:
        heights = _grid(_load_npy(stream, size, "the array", path), "the array", path)
    return _Read(heights, None, format="npy")


def _read_npz(path: Path, limit: int) -> _Read:
    fail = _x3p._Failure(str(path))
    with open(path, "rb") as stream, _x3p._open_zip(stream, fail) as archive:
        members = _x3p._index(archive, fail, limit)
        arrays = {name[: -len(".npy")]: info for name, info in members.items()}
        if "heights" not in arrays:
            raise _fail(
                path,
                "an .npz scan needs the arrays 'heights' (µm) and 'spacing_um'; found "
                + (", ".join(sorted(arrays)) or "nothing"),
            )
        loaded: dict[str, np.ndarray] = {}
        for key, kinds in (
            ("heights", "biuf"),
            ("spacing_um", "iuf"),
            ("mask", "biu"),
            ("annotations", "biu"),
            ("annotation_names", "U"),
        ):
            if key in arrays:
                raw = _x3p._read_member(archive, arrays[key], fail)
                loaded[key] = _load_npy(io.BytesIO(raw), len(raw), f"'{key}'", path, kinds=kinds)
        stored: dict[str, Any] = {}
        quirks: list[str] = []
        if "meta_json" in arrays:
            raw = _x3p._read_member(archive, arrays["meta_json"], fail)
            text = _load_npy(io.BytesIO(raw), len(raw), "'meta_json'", path, kinds="U")
            try:
                value = json.loads(str(text.reshape(-1)[0]))
                stored = value if isinstance(value, dict) else {}
            except (ValueError, IndexError) as error:
                quirks.append(f"meta_json unreadable ({error}); ignored")
    heights = _grid(loaded["heights"], "'heights'", path)
    spacing = None
    if "spacing_um" in loaded:
        values = loaded["spacing_um"].astype(np.float64).ravel()
        if values.size not in (1, 2):
            raise _fail(path, f"'spacing_um' must hold (dy, dx) or one value, got {values}")
        spacing = (float(values[0]), float(values[-1]))
    file_mask = None
    if "mask" in loaded:
        file_mask = loaded["mask"].astype(bool)
        if file_mask.shape != heights.shape:
            raise _fail(path, f"'mask' has shape {file_mask.shape}, 'heights' has {heights.shape}")
    annotations = _npz_annotations(loaded, heights.shape, path)
    return _Read(heights, spacing, file_mask, stored, quirks, format="npz", annotations=annotations)


def _npz_annotations(
    loaded: dict[str, np.ndarray], shape: tuple[int, ...], path: Path
) -> dict[str, np.ndarray]:
    if "annotations" not in loaded and "annotation_names" not in loaded:
        return {}
    regions = loaded.get("annotations", np.zeros((0, *shape), bool))
    names = [str(n) for n in loaded.get("annotation_names", np.zeros(0, "U1")).reshape(-1)]
    if regions.ndim != 3 or regions.shape[1:] != shape or regions.shape[0] != len(names):
        raise _fail(
            path,
            f"'annotations' has shape {regions.shape} for {len(names)} 'annotation_names'; "
            f"expected ({len(names)}, {shape[0]}, {shape[1]})",
        )
    if len(set(names)) != len(names):
        raise _fail(path, f"'annotation_names' repeats a name: {names}")
    return {name: np.ascontiguousarray(r, dtype=bool) for name, r in zip(names, regions)}


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def _from_channels(array: np.ndarray, quirks: list[str], path: Path) -> np.ndarray:
    """Grey levels of a 2-D image, or the luminance of a colour one; alpha 0 -> NaN."""
    if array.ndim == 2:
        return array.astype(np.float32)
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise _fail(path, f"not a 2-D intensity image: pixel array of shape {array.shape}")
    channels = array.shape[2]
    if channels in (3, 4):
        grey = array[..., :3].astype(np.float32) @ _LUMA
        quirks.append("colour image reduced to luminance (ITU-R BT.601)")
    else:
        grey = array[..., 0].astype(np.float32)
    if channels in (2, 4):
        transparent = array[..., -1] == 0
        if transparent.any():
            grey[transparent] = np.nan
            quirks.append("pixels with alpha 0 read as NaN")
    return grey


def _read_png(path: Path, limit: int) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    quirks: list[str] = []
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height == 0:
                raise _fail(path, f"the grid is empty: a {width}x{height} image")
            if width * height * 16 > limit:
                raise _fail(path, f"a {width}x{height} image is larger than the limit")
            image.load()
            mode = image.mode
            if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
                array = np.asarray(image)
            elif mode in ("LA", "La"):
                array = np.asarray(image.convert("LA"))
            else:
                array = np.asarray(image.convert("RGBA"))
    except ScanFormatError:
        raise
    except Exception as error:  # any decoder failure of Pillow: damaged or not an image
        raise _fail(path, f"cannot decode the image: {error}") from error
    if mode.startswith("I;16"):
        array = array.astype(np.uint16)
    bits = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "F": 32, "I": 32}.get(mode, 16)
    info = {"image_mode": mode, "image_bits": bits, "image_dtype": str(array.dtype)}
    return _from_channels(array, quirks, path), info, quirks


def _read_tiff(path: Path, limit: int) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    quirks: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise _fail(path, "the TIFF holds no image")
            page = tif.pages[0]
            shape, dtype = tuple(page.shape), np.dtype(page.dtype)
            count = int(np.prod(shape, dtype=np.int64)) if shape else 0
            if count == 0:
                raise _fail(path, f"the grid is empty: a TIFF page of shape {shape}")
            if count * max(dtype.itemsize, 4) > limit:
                raise _fail(path, f"a TIFF page of shape {shape} is larger than the limit")
            if len(tif.pages) > 1:
                quirks.append(f"{len(tif.pages)} pages; the first is read")
            array = page.asarray()
    except ScanFormatError:
        raise
    except Exception as error:  # any decoder failure of tifffile: damaged or not a TIFF
        raise _fail(path, f"cannot decode the TIFF: {error}") from error
    if array.dtype.kind not in "biuf":
        raise _fail(path, f"TIFF pixels of dtype {array.dtype} are not intensities")
    info = {"image_dtype": str(array.dtype), "image_bits": array.dtype.itemsize * 8}
    return _from_channels(array, quirks, path), info, quirks


def _read_image(path: Path, limit: int) -> _Read:
    with open(path, "rb") as stream:
        head = stream.read(8)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        heights, info, quirks = _read_png(path, limit)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        heights, info, quirks = _read_tiff(path, limit)
    else:
        raise _fail(path, f"not a PNG or TIFF image (it starts with {head[:8]!r})")
    return _Read(heights, None, None, info, quirks, format="image")


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


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
        ``handedness``, ``source_sha256`` and whatever else the file carries (see the module
        documentation).

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
        raise _fail(path, "is a directory, not a scan file")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "the file is empty")
    if size > MAX_FILE_BYTES:
        raise _fail(path, f"{size} bytes, more than the limit of {MAX_FILE_BYTES}")
    with open(path, "rb") as stream:
        head = stream.read(8)
    kind = _kind(path, head)
    limit = _x3p.MAX_UNCOMPRESSED_BYTES
    logger.debug("read_scan %s as %s", path, kind)

    if kind == "x3p":
        content = _x3p.read_x3p(path, limit=limit)
        read = _Read(
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
        read = _read_npy(path, limit)
    elif kind == "npz":
        read = _read_npz(path, limit)
    else:
        read = _read_image(path, limit)
    return _finish(
        path,
        read,
        apply_mask=apply_mask,
        spacing_um=spacing_um,
        selection=(_names(keep, "keep", path), _names(exclude, "exclude", path)),
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


def _float_source(read: _Read) -> bool:
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
    read: _Read,
    *,
    apply_mask: bool,
    spacing_um: Any,
    selection: tuple[list[str] | None, list[str] | None] = (None, None),
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
        spacing = _spacing_pair(read.spacing_um, path)
    else:
        what = "an image (PNG/TIFF)" if read.format == "image" else f"a .{read.format} file"
        raise _fail(
            path,
            f"{what} carries no lateral spacing; pass it: read_scan(path, spacing_um=(dy, dx)) "
            "in micrometres per pixel",
        )

    raw_heights = np.asarray(read.heights)
    heights = np.array(raw_heights, dtype=np.float32, order="C", copy=True)
    if read.format in ("npy", "npz") and raw_heights.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            huge = np.abs(raw_heights) >= _x3p.SENTINEL_MAGNITUDE
        if huge.any():  # ±3.4e38, 1e30...: "not measured" markers, as in X3P
            heights[huge] = np.nan
            quirks.append(
                f"{int(huge.sum())} point(s) hold a sentinel (|z| >= "
                f"{_x3p.SENTINEL_MAGNITUDE:g}): read as not measured"
            )
    finite = np.isfinite(heights)
    if not finite.all():
        heights[~finite] = np.nan
    if not finite.any():
        raise _fail(path, f"the grid {heights.shape} holds no finite height value")
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
            raise _fail(
                path,
                "the region of interest stored in the file leaves no finite height; "
                "read it with apply_mask=False to see the data",
            )
    keep, exclude = selection
    if keep is not None:
        heights[~_region(path, read.annotations, keep, "keep")] = np.nan
    if exclude:
        heights[_region(path, read.annotations, exclude, "exclude")] = np.nan
    if (keep is not None or exclude) and not np.isfinite(heights).any():
        raise _fail(path, f"keep={keep!r}, exclude={exclude!r} leave no finite height")

    meta: dict[str, Any] = {
        "format": read.format,
        "instrument": None,
        "date": None,
        "creator": None,
        "comment": None,
    }
    meta.update({k: v for k, v in read.meta.items() if k not in _x3p.READER_KEYS or k == "x3p"})
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


def _annotations_to_write(
    scan: Scan, annotations: Mapping[str, np.ndarray] | None, path: Path
) -> dict[str, np.ndarray]:
    if annotations is None:  # what the reader found, while it still fits the grid
        found = scan.meta.get("annotations")
        if not isinstance(found, Mapping) or not all(
            np.shape(region) == scan.shape for region in found.values()
        ):
            if found:
                logger.debug("write_scan %s: meta['annotations'] do not fit; not written", path)
            return {}
        annotations = found
    if not isinstance(annotations, Mapping):
        raise TypeError(
            f"annotations must be a dict {{name: bool array}}, got {type(annotations).__name__}"
        )
    out = {}
    for name, region in annotations.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(
                f"{path}: annotation names must be non-empty text without surrounding spaces, "
                f"got {name!r}"
            )
        region = np.asarray(region)
        if region.shape != scan.shape:
            raise ValueError(
                f"{path}: annotation {name!r} has shape {region.shape}, the scan {scan.shape}"
            )
        out[name] = region.astype(bool)
    return out


def write_scan(
    scan: Scan,
    path: str | os.PathLike[str],
    *,
    annotations: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a scan as X3P (``.x3p``) or as ``.npz``; `read_scan` reads it back.

    X3P layout (ISO 25178-72 Amd 1:2020, written by x3pio, valid checksums): heights as
    float32 with a Z increment of 1e-6 m, so the stored numbers are the float32 micrometres
    exactly and a round trip is bit-exact; NaN for points not measured; lateral increments in
    metres; ``Record2`` from ``meta`` (``date``, ``creator``, ``comment``, ``instrument`` and
    the instrument details of ``meta["x3p"]``; the probing type is ``Software`` unless known).
    Two vendor files (``VendorSpecificID`` ``http://balllink/...``): ``meta.json`` holds every
    JSON-serialisable entry of ``meta`` (arrays are left out, tuples become lists, NaN and Inf
    are kept, dates become ISO text) and is merged back on reading (``meta["handedness"]``
    among them); ``mask.png`` holds ``scan.mask`` (white = usable, black = not) when it is
    stricter than the finite heights, and is read back as the file's region of interest.
    Annotations are written as x3ptools does:
    ``bindata/mask.png`` (RGB, ``#cd7f32`` where nothing is annotated, one colour per
    annotation) and ``Record3/Mask`` with ``<Background>#cd7f32</Background>`` and
    ``<Annotations><Annotation color="#rrggbb">name</Annotation>...</Annotations>``.

    ``.npz`` layout: ``heights`` (float32 µm), ``spacing_um`` (dy, dx), ``mask`` when stricter
    than the finite heights, ``annotations`` (bool, ``(n, rows, cols)``) and
    ``annotation_names`` when there are annotations, ``meta_json``.

    The file is written to a temporary name, flushed to disk (fsync) and moved into place.

    Parameters
    ----------
    scan : Scan
        The scan to write.
    path : str or path-like
        Destination ending in ``.x3p`` or ``.npz``.
    annotations : dict of str to bool ndarray, optional
        Named regions of the grid's shape, marks on the surface (not the usable region; see
        `read_scan`). By default ``scan.meta["annotations"]`` (what `read_scan` found) when
        they still fit the grid; ``{}`` writes none. In X3P a pixel has one colour, so the
        regions must not overlap.

    Raises
    ------
    ScanFormatError
        For another suffix, or metadata X3P cannot hold; the message names the file.
    ValueError
        For annotations that cannot be written (another shape, overlapping regions, a name
        that is not text) or a ``meta["handedness"]`` other than ``"viewed"``,
        ``"mirrored"`` or None.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import balllink as bl
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> scan = bl.Scan(np.arange(12.0).reshape(3, 4), spacing_um=6.25, meta={"creator": "lab"})
    >>> bl.write_scan(scan, folder / "a.x3p")
    >>> back = bl.read_scan(folder / "a.x3p")
    >>> back.spacing_um, back.meta["creator"], back.meta["checksum"]
    ((6.25, 6.25), 'lab', 'ok')
    >>> bool(np.array_equal(back.heights, scan.heights))
    True
    >>> blob = np.zeros((3, 4), bool)
    >>> blob[0, :2] = True
    >>> bl.write_scan(scan, folder / "b.x3p", annotations={"break-off": blob})
    >>> list(bl.read_scan(folder / "b.x3p").meta["annotations"])
    ['break-off']
    >>> bl.read_scan(folder / "b.x3p", exclude=["break-off"]).n_valid
    10
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"write_scan needs a balllink Scan, got {type(scan).__name__}")
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    handedness = scan.meta.get("handedness")
    if handedness is not None and handedness not in HANDEDNESS:
        raise ValueError(
            f"{path}: meta['handedness'] must be 'viewed', 'mirrored' or None (unknown), "
            f"got {handedness!r}"
        )
    regions = _annotations_to_write(scan, annotations, path)
    mask = None if np.array_equal(scan.mask, np.isfinite(scan.heights)) else scan.mask
    if suffix == ".x3p":
        data = _x3p.x3p_bytes(
            scan.heights, scan.spacing_um, mask, scan.meta, str(path), annotations=regions
        )
    elif suffix == ".npz":
        kept = jsonable({k: v for k, v in scan.meta.items() if k not in _x3p.READER_KEYS})
        arrays: dict[str, np.ndarray] = {
            "heights": np.asarray(scan.heights, dtype=np.float32),
            "spacing_um": np.asarray(scan.spacing_um, dtype=np.float64),
            "meta_json": np.asarray(json.dumps(kept, allow_nan=True)),
        }
        if mask is not None:
            arrays["mask"] = np.asarray(mask, dtype=bool)
        if regions:
            arrays["annotations"] = np.stack(list(regions.values()))
            arrays["annotation_names"] = np.asarray(list(regions), dtype=str)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
    else:
        raise _fail(path, f"write_scan writes .x3p or .npz, not {suffix or '(no suffix)'!r}")
    atomic_write(path, data)
