"""Reading and writing scans: X3P (ISO 25178-72), .npy/.npz, PNG/TIFF images.

`read_scan` returns a `Scan` with heights in micrometres (float32, NaN = not measured) and the
lateral spacing ``(dy, dx)`` in µm per pixel; metres are turned into micrometres here, once.

Formats (chosen by suffix; a file with another suffix is recognised by its first bytes):

``.x3p``
    ISO 25178-72 through x3pio, hardened against hostile files and tolerant of the deviations
    real exports have (see `balllink._x3p`): revisions such as ``ISO5436-2000``, a root element
    without namespace, increments or heights written in micrometres instead of metres (decided by
    magnitude and recorded in ``meta["quirks"]``), a missing or wrong checksum (a
    `ChecksumWarning`, ``meta["checksum"]``), float32, float64 and integer data with a Z
    increment, and the region of interest ``bindata/mask.png`` of x3ptools/CSAFE files.
``.npy``
    A 2-D array of heights in micrometres; ``spacing_um`` must be given.
``.npz``
    Arrays ``heights`` (µm, 2-D) and ``spacing_um`` (``(dy, dx)`` or one value), optional
    ``mask`` (bool, True = usable: the file's region of interest) and ``meta_json`` (a JSON
    object merged into ``meta``). `write_scan` writes this layout.
``.png``, ``.tif``, ``.tiff``
    8- or 16-bit (or float TIFF) intensity images, such as photographs of a breech face.
    ``heights`` are the grey levels as float32 *in the image's own units*, not micrometres;
    colour images are reduced to luminance (ITU-R BT.601 weights) and pixels with alpha 0 are
    NaN. ``spacing_um`` must be given; ``meta["format"]`` is ``"image"``.

Region of interest. A mask stored in the file (``mask.png`` in X3P, ``mask`` in .npz) is
always returned as ``meta["file_mask"]`` (bool, the grid's shape). With ``apply_mask=True``
(default) the heights outside it are set to NaN, so ``scan.mask`` (the finite points) is the
ROI; with ``apply_mask=False`` the heights keep their values and ``scan.mask`` is the finite
points only.

``meta`` keys always present: ``format`` (``"x3p"``, ``"npy"``, ``"npz"`` or ``"image"``),
``instrument``, ``date`` (ISO 8601 text as written in the file), ``creator``, ``comment``,
``quirks`` (list of str), ``checksum`` (``"ok"``, ``"mismatch"`` or ``"missing"``; formats
without checksums say ``"missing"`` without a warning), ``file_mask``, ``mask_applied``,
``source_sha256`` (SHA-256 of the file bytes, for duplicate detection). X3P files add
``meta["x3p"]`` (revision, data type, increments as written, instrument serial/version,
calibration date, probing system, vendor extension IDs, mask decoding).

Every damaged, hostile or empty file raises `ScanFormatError` naming the file and the problem,
after reading at most `MAX_UNCOMPRESSED_BYTES` (see `balllink._x3p`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from . import _x3p
from ._scan import Scan
from ._x3p import ChecksumWarning
from .errors import ScanFormatError

__all__ = [
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


@dataclass
class _Read:
    heights: np.ndarray
    spacing_um: tuple[float, float] | None
    file_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    quirks: list[str] = field(default_factory=list)
    checksum: str = "missing"
    format: str = ""


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
        for key, kinds in (("heights", "biuf"), ("spacing_um", "iuf"), ("mask", "biu")):
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
    return _Read(heights, spacing, file_mask, stored, quirks, format="npz")


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


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def read_scan(
    path: str | os.PathLike[str],
    *,
    apply_mask: bool = True,
    spacing_um: float | tuple[float, float] | None = None,
) -> Scan:
    """Read a scan file into a `Scan` (heights float32 µm, spacing µm per pixel).

    Parameters
    ----------
    path : str or path-like
        An ``.x3p``, ``.npy``, ``.npz``, ``.png`` or ``.tif``/``.tiff`` file (another suffix
        is recognised by content). See the module documentation for each format.
    apply_mask : bool, default True
        Set the heights outside the region of interest stored in the file (X3P
        ``bindata/mask.png``, npz ``mask``) to NaN. With False they keep their values; the ROI
        is in ``meta["file_mask"]`` either way.
    spacing_um : float or (dy, dx), optional
        Lateral spacing in µm per pixel. Required for ``.npy`` and images, which carry none;
        for other formats it replaces the file's spacing (recorded in ``meta["quirks"]``).

    Returns
    -------
    Scan
        ``meta`` holds ``format``, ``instrument``, ``date``, ``creator``, ``comment``,
        ``quirks``, ``checksum``, ``file_mask``, ``mask_applied``, ``source_sha256`` and
        whatever else the file carries.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ScanFormatError
        If the file is unsupported, damaged, hostile (zip bomb, DTD/entities), empty, holds
        no finite height, or lacks a required spacing; the message names the file.

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
    >>> scan.shape, scan.spacing_um, scan.meta["format"]
    ((3, 4), (6.25, 6.25), 'npy')
    """
    path = Path(os.fspath(path))
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
        )
    elif kind == "npy":
        read = _read_npy(path, limit)
    elif kind == "npz":
        read = _read_npz(path, limit)
    else:
        read = _read_image(path, limit)
    return _finish(path, read, apply_mask=apply_mask, spacing_um=spacing_um)


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


def _finish(path: Path, read: _Read, *, apply_mask: bool, spacing_um: Any) -> Scan:
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

    heights = np.array(read.heights, dtype=np.float32, order="C", copy=True)
    finite = np.isfinite(heights)
    if not finite.all():
        heights[~finite] = np.nan
    if not finite.any():
        raise _fail(path, f"the grid {heights.shape} holds no finite height value")

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

    meta: dict[str, Any] = {
        "format": read.format,
        "instrument": None,
        "date": None,
        "creator": None,
        "comment": None,
    }
    meta.update({k: v for k, v in read.meta.items() if k not in _x3p.READER_KEYS or k == "x3p"})
    meta.update(
        quirks=quirks,
        checksum=read.checksum,
        file_mask=file_mask,
        mask_applied=applied,
        source_sha256=_sha256(path),
    )
    for quirk in quirks:
        logger.info("%s: %s", path, quirk)
    return Scan(heights, spacing, None, meta, source=str(path))


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_scan(scan: Scan, path: str | os.PathLike[str]) -> None:
    """Write a scan as X3P (``.x3p``) or as ``.npz``; `read_scan` reads it back.

    X3P layout (ISO 25178-72 Amd 1:2020, written by x3pio, valid checksums): heights as
    float32 with a Z increment of 1e-6 m, so the stored numbers are the float32 micrometres
    exactly and a round trip is bit-exact; NaN for points not measured; lateral increments in
    metres; ``Record2`` from ``meta`` (``date``, ``creator``, ``comment``, ``instrument`` and
    the instrument details of ``meta["x3p"]``; the probing type is ``Software`` unless known).
    Two vendor files (``VendorSpecificID`` ``http://balllink/...``): ``meta.json`` holds every
    JSON-serialisable entry of ``meta`` (arrays are left out, tuples become lists) and is merged
    back on reading; ``mask.png`` holds ``scan.mask`` (white = usable, black = not) when it is
    stricter than the finite heights, and is read back as the file's region of interest.

    ``.npz`` layout: ``heights`` (float32 µm), ``spacing_um`` (dy, dx), ``mask`` when stricter
    than the finite heights, ``meta_json``.

    The file is written to a temporary name and moved into place.

    Parameters
    ----------
    scan : Scan
        The scan to write.
    path : str or path-like
        Destination ending in ``.x3p`` or ``.npz``.

    Raises
    ------
    ScanFormatError
        For another suffix, or metadata X3P cannot hold; the message names the file.

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
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"write_scan needs a balllink Scan, got {type(scan).__name__}")
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    mask = None if np.array_equal(scan.mask, np.isfinite(scan.heights)) else scan.mask
    if suffix == ".x3p":
        data = _x3p.x3p_bytes(scan.heights, scan.spacing_um, mask, scan.meta, str(path))
    elif suffix == ".npz":
        kept = {}
        for key, value in scan.meta.items():
            if key not in _x3p.READER_KEYS:
                ok, converted = _x3p.jsonable(value)
                if ok:
                    kept[key] = converted
        arrays: dict[str, np.ndarray] = {
            "heights": np.asarray(scan.heights, dtype=np.float32),
            "spacing_um": np.asarray(scan.spacing_um, dtype=np.float64),
            "meta_json": np.asarray(json.dumps(kept, allow_nan=True)),
        }
        if mask is not None:
            arrays["mask"] = np.asarray(mask, dtype=bool)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
    else:
        raise _fail(path, f"write_scan writes .x3p or .npz, not {suffix or '(no suffix)'!r}")
    _atomic_write(path, data)
