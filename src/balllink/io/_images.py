"""Images as scans: PNG and TIFF intensity images (photographs of a breech face, say).

``heights`` are the grey levels as float32 *in the image's own units*, not micrometres; colour
images are reduced to luminance (ITU-R BT.601 weights) and pixels with alpha 0 are NaN. An
image carries no spacing: `read_scan` asks the caller for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tifffile
from PIL import Image

from ..errors import ScanFormatError
from ._content import FileContent, fail

__all__ = ["read_image"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class _Decoded(NamedTuple):
    grey: np.ndarray  # float32 grey levels or luminance, NaN where transparent
    info: dict[str, Any]  # image_mode, image_bits, image_dtype
    quirks: list[str]


def _from_channels(array: np.ndarray, quirks: list[str], path: Path) -> np.ndarray:
    """Grey levels of a 2-D image, or the luminance of a colour one; alpha 0 -> NaN."""
    if array.ndim == 2:
        return array.astype(np.float32)
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise fail(path, f"not a 2-D intensity image: pixel array of shape {array.shape}")
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


def _read_png(path: Path, limit: int) -> _Decoded:
    quirks: list[str] = []
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height == 0:
                raise fail(path, f"the grid is empty: a {width}x{height} image")
            if width * height * 16 > limit:
                raise fail(path, f"a {width}x{height} image is larger than the limit")
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
        raise fail(path, f"cannot decode the image: {error}") from error
    if mode.startswith("I;16"):
        array = array.astype(np.uint16)
    bits = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "F": 32, "I": 32}.get(mode, 16)
    info = {"image_mode": mode, "image_bits": bits, "image_dtype": str(array.dtype)}
    return _Decoded(_from_channels(array, quirks, path), info, quirks)


def _read_tiff(path: Path, limit: int) -> _Decoded:
    quirks: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise fail(path, "the TIFF holds no image")
            page = tif.pages[0]
            shape, dtype = tuple(page.shape), np.dtype(page.dtype)
            count = int(np.prod(shape, dtype=np.int64)) if shape else 0
            if count == 0:
                raise fail(path, f"the grid is empty: a TIFF page of shape {shape}")
            if count * max(dtype.itemsize, 4) > limit:
                raise fail(path, f"a TIFF page of shape {shape} is larger than the limit")
            if len(tif.pages) > 1:
                quirks.append(f"{len(tif.pages)} pages; the first is read")
            array = page.asarray()
    except ScanFormatError:
        raise
    except Exception as error:  # any decoder failure of tifffile: damaged or not a TIFF
        raise fail(path, f"cannot decode the TIFF: {error}") from error
    if array.dtype.kind not in "biuf":
        raise fail(path, f"TIFF pixels of dtype {array.dtype} are not intensities")
    info = {"image_dtype": str(array.dtype), "image_bits": array.dtype.itemsize * 8}
    return _Decoded(_from_channels(array, quirks, path), info, quirks)


def read_image(path: Path, limit: int) -> FileContent:
    """A PNG or TIFF (told apart by its first bytes) as grey levels, at most ``limit`` bytes."""
    with open(path, "rb") as stream:
        head = stream.read(8)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        heights, info, quirks = _read_png(path, limit)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        heights, info, quirks = _read_tiff(path, limit)
    else:
        raise fail(path, f"not a PNG or TIFF image (it starts with {head[:8]!r})")
    return FileContent(heights, None, None, info, quirks, format="image")
