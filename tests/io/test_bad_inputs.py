"""Crafted bad inputs: every one is refused quickly with `ScanFormatError` naming the file.

Each case builds its file in ``tmp_path`` (X3P through the builders of ``x3p_files``) and
calls `read_scan`; the refusal must be the documented error type (`ScanFormatError`, or
`ValueError` for a bad argument of the caller), its message must name the file, and it must
come within a second (a refusal-latency guard: a bomb or an absurd header is refused from its
declared sizes, never by decoding). CSV rows are not read by `balllink.io`; the CLI's tests
cover them. A few inputs that look bad but are documented as read (a wrong checksum, a
negative increment, a 1x1 image...) are checked at the end.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from x3p_files import build_x3p, grid_x3p, main_xml, png_bytes

from balllink.errors import ScanFormatError
from balllink.io import ChecksumWarning, read_scan, write_scan

Z = np.random.default_rng(1).normal(0, 3e-6, (5, 7))  # metres: a small valid X3P grid
Case = Callable[[Path], "tuple[Path, dict[str, Any]]"]


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def _data(z: np.ndarray = Z) -> bytes:
    return np.ascontiguousarray(z, "<f8").tobytes()


def _x3p(tmp: Path, *, data: bytes | None = None, files=None, checksum="ok", **xml) -> Path:
    """An X3P of `Z` (5 rows x 7 columns, float64) with main.xml options changed."""
    xml.setdefault("size", (7, 5, 1))
    body = {"bindata/data.bin": _data() if data is None else data}
    body.update(files or {})
    return build_x3p(tmp / "bad.x3p", main_xml(**xml), body, checksum=checksum)


def _zip(tmp: Path, name: str, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    path = tmp / name
    with zipfile.ZipFile(path, "w", method) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path


def _patch_central(path: Path, member: str, *, size: int | None = None, flag=None, method=None):
    """Rewrite fields of ``member``'s local and central zip headers in place."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    for signature, size_at, flag_at, method_at in (
        (b"PK\x01\x02", 24, 8, 10),
        (b"PK\x03\x04", 22, 6, 8),
    ):
        start = 0
        while (at := raw.find(signature, start)) >= 0:
            start = at + 4
            name_at = at + (46 if signature == b"PK\x01\x02" else 30)
            if raw[name_at : name_at + len(name)] != name:
                continue
            if size is not None:
                raw[at + size_at : at + size_at + 4] = struct.pack("<I", size)
            if flag is not None:
                raw[at + flag_at : at + flag_at + 2] = struct.pack("<H", flag)
            if method is not None:
                raw[at + method_at : at + method_at + 2] = struct.pack("<H", method)
    path.write_bytes(bytes(raw))
    return path


def _npy(array: np.ndarray, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], descr="<f4", payload=b"\x00" * 16) -> bytes:
    """A .npy whose header declares ``shape`` over a tiny payload."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _npz(tmp: Path, **arrays: Any) -> Path:
    """An .npz of the given arrays (bytes values are written as raw .npy members)."""
    members = {
        f"{key}.npy": value if isinstance(value, bytes) else _npy(np.asarray(value))
        for key, value in arrays.items()
    }
    return _zip(tmp, "bad.npz", members)


H = np.random.default_rng(2).normal(0, 1, (6, 8)).astype(np.float32)


def _own_npz(tmp: Path, **changes: Any) -> Path:
    """balllink's own .npz format with arrays replaced (None drops one)."""
    arrays: dict[str, Any] = {
        "format": np.asarray("balllink-scan-2"),
        "heights": H,
        "mask": np.ones(H.shape, bool),
        "spacing_um": np.asarray([6.25, 6.25]),
        "meta_json": np.asarray("{}"),
    }
    arrays.update(changes)
    return _npz(tmp, **{k: v for k, v in arrays.items() if v is not None})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (8-bit grey) over a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _tiff_declaring(width: int, height: int, *, compression=1, payload=b"") -> bytes:
    """A little-endian TIFF whose one IFD declares ``width`` x ``height`` 8-bit grey pixels in
    one strip holding ``payload`` (compressed with TIFF ``compression``: 1 none, 8 deflate)."""
    entries = [
        (256, 4, width),  # ImageWidth (LONG)
        (257, 4, height),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, compression),  # Compression
        (262, 3, 1),  # Photometric: min-is-black
        (273, 4, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the IFD
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip
        (279, 4, len(payload) if compression != 1 else width * height & 0xFFFFFFFF),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + payload


def _tiff(array: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _file(name: str, content: bytes, **kwargs: Any) -> Case:
    def build(tmp: Path) -> tuple[Path, dict[str, Any]]:
        path = tmp / name
        path.write_bytes(content)
        return path, kwargs

    return build


def _x(**options: Any) -> Case:
    """An X3P case: `_x3p` with ``options``."""
    return lambda tmp: (_x3p(tmp, **options), {})


def _with(builder: Callable[[Path], Path], **kwargs: Any) -> Case:
    return lambda tmp: (builder(tmp), kwargs)


def _truncated(builder: Callable[[Path], Path], keep: float) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = builder(tmp)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * keep)])
        return path

    return build


def _valid_x3p(tmp: Path) -> Path:
    return grid_x3p(tmp / "ok.x3p", Z)


def _zip_bomb_x3p(tmp: Path) -> Path:
    """data.bin's zip entry declares 4 GB - 1 uncompressed (the grid is tiny)."""
    return _patch_central(_x3p(tmp), "bindata/data.bin", size=0xFFFFFFFF)


def _encrypted_x3p(tmp: Path) -> Path:
    return _patch_central(_x3p(tmp), "bindata/data.bin", flag=1)


def _unknown_compression_x3p(tmp: Path) -> Path:
    return _patch_central(_x3p(tmp), "bindata/data.bin", method=99)


def _bad_crc_x3p(tmp: Path) -> Path:
    """A stored (uncompressed) data.bin with one byte changed after the CRC was written."""
    xml = main_xml(size=(7, 5, 1))
    path = _zip(
        tmp, "bad.x3p", {"main.xml": xml.encode(), "bindata/data.bin": _data()}, zipfile.ZIP_STORED
    )
    raw = bytearray(path.read_bytes())
    at = raw.find(_data()[:16])
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def _too_many_members_x3p(tmp: Path) -> Path:
    xml = main_xml(size=(7, 5, 1)).encode()
    members = {"main.xml": xml, "bindata/data.bin": _data()}
    members.update({f"junk/{i}.txt": b"" for i in range(4100)})
    return _zip(tmp, "bad.x3p", members, zipfile.ZIP_STORED)


def _nested_zip_x3p(tmp: Path) -> Path:
    inner = _x3p(tmp).read_bytes()
    return _zip(tmp, "outer.x3p", {"inner.x3p": inner})


def _two_mains_x3p(tmp: Path) -> Path:
    xml = main_xml(size=(7, 5, 1)).encode()
    return _zip(
        tmp, "bad.x3p", {"a/main.xml": xml, "b/main.xml": xml, "a/bindata/data.bin": _data()}
    )


def _traversal_member_x3p(tmp: Path) -> Path:
    """The data file exists only under a member name that climbs out of the zip."""
    xml = main_xml(size=(7, 5, 1), link="../data.bin").encode()
    return _zip(tmp, "bad.x3p", {"main.xml": xml, "../data.bin": _data()})


def _main_not_utf8(tmp: Path) -> Path:
    return build_x3p(tmp / "bad.x3p", b"\xff\xfe<\x00\x00garbage\x80\x81", {})


def _dir(tmp: Path) -> Path:
    path = tmp / "folder.x3p"
    path.mkdir()
    return path


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 or "")) * 10}">' for i in range(1, 10))
    + "]>"
)
XXE = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def _rgba_transparent() -> np.ndarray:
    rgba = np.full((6, 5, 4), 200, np.uint8)
    rgba[..., 3] = 0
    return rgba


def _tiff_multichannel() -> bytes:
    return _tiff(np.zeros((4, 5, 6), np.uint8), photometric="minisblack", planarconfig="contig")


VALID_PNG = png_bytes(np.arange(48, dtype=np.uint8).reshape(6, 8))
VALID_TIFF = _tiff(np.arange(48, dtype=np.uint16).reshape(6, 8))
S = {"spacing_um": 2.0}

CASES: dict[str, Case] = {
    # --- X3P: the container -------------------------------------------------------------------
    "x3p-empty-file": _file("e.x3p", b""),
    "x3p-text-not-zip": _file("t.x3p", b"this is not a zip archive\n" * 10),
    "x3p-random-bytes": _file("r.x3p", np.random.default_rng(3).bytes(4096)),
    "x3p-zip-magic-only": _file("m.x3p", b"PK\x03\x04" + b"\x00" * 26),
    "x3p-truncated-half": _with(_truncated(_valid_x3p, 0.5)),
    "x3p-truncated-end-record": _with(_truncated(_valid_x3p, 0.98)),
    "x3p-truncated-to-header": _with(_truncated(_valid_x3p, 0.05)),
    "x3p-zip-bomb-declared-size": _with(_zip_bomb_x3p),
    "x3p-encrypted-member": _with(_encrypted_x3p),
    "x3p-unknown-compression": _with(_unknown_compression_x3p),
    "x3p-crc-mismatch": _with(_bad_crc_x3p),
    "x3p-too-many-members": _with(_too_many_members_x3p),
    "x3p-nested-zip": _with(_nested_zip_x3p),
    "x3p-two-main-xml": _with(_two_mains_x3p),
    "x3p-main-xml-missing": lambda tmp: (_zip(tmp, "n.x3p", {"bindata/data.bin": _data()}), {}),
    "x3p-empty-zip": lambda tmp: (_zip(tmp, "z.x3p", {}), {}),
    "x3p-directory": lambda tmp: (_dir(tmp), {}),
    # --- X3P: main.xml ------------------------------------------------------------------------
    "x3p-main-xml-empty": lambda tmp: (build_x3p(tmp / "b.x3p", b"", {}), {}),
    "x3p-main-xml-not-utf8": _with(_main_not_utf8),
    "x3p-xml-unclosed-tag": lambda tmp: (build_x3p(tmp / "b.x3p", main_xml()[:-40], {}), {}),
    "x3p-xml-billion-laughs": _x(prolog=BILLION_LAUGHS),
    "x3p-xml-external-entity": _x(prolog=XXE),
    "x3p-xml-doctype-only": _x(prolog="<!DOCTYPE p:ISO5436_2>"),
    "x3p-xml-wrong-root": lambda tmp: (build_x3p(tmp / "b.x3p", "<Scan><a/></Scan>", {}), {}),
    "x3p-point-cloud": lambda tmp: (
        build_x3p(tmp / "b.x3p", main_xml().replace("<FeatureType>SUR", "<FeatureType>PCL"), {}),
        {},
    ),
    "x3p-absolute-x-axis": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace("<AxisType>I</AxisType>", "<AxisType>A</AxisType>", 1),
            {"bindata/data.bin": _data()},
        ),
        {},
    ),
    "x3p-z-data-type-unknown": _x(z_type="Q"),
    "x3p-z-data-type-empty": _x(z_type=""),
    "x3p-z-float32-with-float64-data": _x(z_type="F", data=_data()[:-8]),
    # --- X3P: sizes and data ------------------------------------------------------------------
    "x3p-data-shorter": _x(data=_data()[:-8]),
    "x3p-data-longer": _x(data=_data() + b"\x00" * 8),
    "x3p-data-empty": _x(data=b""),
    "x3p-size-1e9-by-1e9": _x(size=(10**9, 10**9, 1)),
    "x3p-size-z-1e12": _x(size=(7, 5, 10**12)),
    "x3p-size-negative": _x(size=(-7, 5, 1)),
    "x3p-size-zero": _x(size=(0, 5, 1)),
    "x3p-size-not-a-number": _x(size=("seven", 5, 1)),
    "x3p-size-float-text": _x(size=("1e9", 5, 1)),
    "x3p-size-missing": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace("<SizeY>5</SizeY>", ""),
            {"bindata/data.bin": _data()},
        ),
        {},
    ),
    "x3p-increment-nan": _x(increment="NaN"),
    "x3p-increment-zero": _x(increment="0"),
    "x3p-increment-inf": _x(increment="INF"),
    "x3p-increment-not-a-number": _x(increment="six"),
    "x3p-all-nan-heights": _x(data=_data(np.full((5, 7), np.nan))),
    "x3p-all-inf-heights": _x(data=_data(np.full((5, 7), np.inf))),
    "x3p-link-missing-member": _x(link="bindata/other.bin"),
    "x3p-link-empty": _x(link=""),
    "x3p-link-path-traversal": _x(link="../../../etc/passwd"),
    "x3p-link-absolute-path": _x(link="/etc/passwd"),
    "x3p-link-url": _x(link="http://example.com/data.bin"),
    "x3p-member-path-traversal": _with(_traversal_member_x3p),
    "x3p-no-datalink-no-datalist": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace(
                "<DataLink><PointDataLink>bindata/data.bin</PointDataLink></DataLink>", ""
            ),
            {},
        ),
        {},
    ),
    "x3p-datalist-too-short": _x(size=(3, 2, 1), datalist=["1e-6"] * 5),
    "x3p-datalist-not-numbers": _x(size=(2, 1, 1), datalist=["abc", "def"]),
    "x3p-valid-bin-wrong-length": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace(
                "</PointDataLink>",
                "</PointDataLink><ValidPointsLink>bindata/valid.bin</ValidPointsLink>",
            ),
            {"bindata/data.bin": _data(), "bindata/valid.bin": b"\xff"},
        ),
        {},
    ),
    "x3p-valid-bin-missing": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace(
                "</PointDataLink>",
                "</PointDataLink><ValidPointsLink>bindata/valid.bin</ValidPointsLink>",
            ),
            {"bindata/data.bin": _data()},
        ),
        {},
    ),
    "x3p-valid-bin-all-invalid": lambda tmp: (
        build_x3p(
            tmp / "b.x3p",
            main_xml(size=(7, 5, 1)).replace(
                "</PointDataLink>",
                "</PointDataLink><ValidPointsLink>bindata/valid.bin</ValidPointsLink>",
            ),
            {"bindata/data.bin": _data(), "bindata/valid.bin": b"\x00" * 5},
        ),
        {},
    ),
    # --- npy / npz ----------------------------------------------------------------------------
    "npz-empty-file": _file("e.npz", b""),
    "npz-text-not-zip": _file("t.npz", b"heights,spacing\n1,2\n"),
    "npz-truncated": _with(_truncated(lambda tmp: _npz(tmp, heights=H, spacing_um=6.25), 0.6)),
    "npz-empty-zip": lambda tmp: (_zip(tmp, "z.npz", {}), {}),
    "npz-missing-heights": _with(lambda tmp: _npz(tmp, spacing_um=6.25)),
    "npz-heights-1d": _with(lambda tmp: _npz(tmp, heights=H.ravel(), spacing_um=6.25)),
    "npz-heights-3d": _with(lambda tmp: _npz(tmp, heights=H[None], spacing_um=6.25)),
    "npz-heights-0d": _with(lambda tmp: _npz(tmp, heights=np.float32(1), spacing_um=6.25)),
    "npz-heights-empty": _with(lambda tmp: _npz(tmp, heights=np.zeros((0, 8)), spacing_um=6.25)),
    "npz-heights-object-pickle": _with(
        lambda tmp: _npz(
            tmp, heights=_npy(np.array([[1, "a"]], dtype=object), True), spacing_um=6.25
        )
    ),
    "npz-heights-text": _with(lambda tmp: _npz(tmp, heights=np.full((3, 3), "x"), spacing_um=6.25)),
    "npz-heights-complex": _with(
        lambda tmp: _npz(tmp, heights=np.ones((3, 3), complex), spacing_um=6.25)
    ),
    "npz-heights-all-nan": _with(
        lambda tmp: _npz(tmp, heights=np.full((3, 3), np.nan), spacing_um=6.25)
    ),
    "npz-huge-shape-header": _with(
        lambda tmp: _npz(tmp, heights=_npy_header((10**9, 10**9)), spacing_um=6.25)
    ),
    "npz-negative-shape-header": _with(
        lambda tmp: _npz(tmp, heights=_npy_header((-4, 4)), spacing_um=6.25)
    ),
    "npz-header-garbage": _with(
        lambda tmp: _npz(
            tmp, heights=b"\x93NUMPY\x01\x00\x10\x00{not a dict}   \n", spacing_um=6.25
        )
    ),
    "npz-payload-short": _with(lambda tmp: _npz(tmp, heights=_npy(H)[:-10], spacing_um=6.25)),
    "npz-spacing-nan": _with(lambda tmp: _npz(tmp, heights=H, spacing_um=np.nan)),
    "npz-spacing-zero": _with(lambda tmp: _npz(tmp, heights=H, spacing_um=0.0)),
    "npz-spacing-negative": _with(lambda tmp: _npz(tmp, heights=H, spacing_um=[-1.0, 2.0])),
    "npz-spacing-three-values": _with(lambda tmp: _npz(tmp, heights=H, spacing_um=[1.0, 2, 3])),
    "npz-spacing-missing": _with(lambda tmp: _npz(tmp, heights=H)),
    "npz-mask-wrong-shape": _with(
        lambda tmp: _npz(tmp, heights=H, spacing_um=6.25, mask=np.ones((2, 2), bool))
    ),
    "npz-annotations-wrong-shape": _with(
        lambda tmp: _npz(
            tmp,
            heights=H,
            spacing_um=6.25,
            annotations=np.ones((1, 2, 2), bool),
            annotation_names=np.asarray(["a"]),
        )
    ),
    "npz-annotation-names-repeated": _with(
        lambda tmp: _npz(
            tmp,
            heights=H,
            spacing_um=6.25,
            annotations=np.ones((2, *H.shape), bool),
            annotation_names=np.asarray(["a", "a"]),
        )
    ),
    "npz-own-missing-mask": _with(lambda tmp: _own_npz(tmp, mask=None)),
    "npz-own-meta-not-json": _with(lambda tmp: _own_npz(tmp, meta_json=np.asarray("{oops"))),
    "npz-own-meta-not-object": _with(lambda tmp: _own_npz(tmp, meta_json=np.asarray("[1, 2]"))),
    "npz-own-spacing-nan": _with(lambda tmp: _own_npz(tmp, spacing_um=np.asarray([np.nan, 1.0]))),
    "npz-own-heights-int": _with(lambda tmp: _own_npz(tmp, heights=np.ones(H.shape, np.int32))),
    "npz-own-mask-wrong-shape": _with(lambda tmp: _own_npz(tmp, mask=np.ones((3, 3), bool))),
    "npz-newer-format-tag": _with(lambda tmp: _own_npz(tmp, format=np.asarray("balllink-scan-9"))),
    "npy-no-spacing": _file("a.npy", _npy(H)),
    "npy-object-pickle": _file("o.npy", _npy(np.array([[None]], dtype=object), True), **S),
    "npy-truncated": _file("t.npy", _npy(H)[:-7], **S),
    "npy-huge-shape-header": _file("h.npy", _npy_header((10**9, 10**9)), **S),
    # --- PNG / TIFF ---------------------------------------------------------------------------
    "png-empty-file": _file("e.png", b"", **S),
    "png-signature-only": _file("s.png", VALID_PNG[:8], **S),
    "png-truncated-half": _file("t.png", VALID_PNG[: len(VALID_PNG) // 2], **S),
    "png-truncated-in-ihdr": _file("t.png", VALID_PNG[:20], **S),
    "png-ihdr-crc-wrong": _file(
        "c.png", VALID_PNG[:29] + b"\x00\x00\x00\x00" + VALID_PNG[33:], **S
    ),
    "png-zero-size": _file("z.png", _png_declaring(0, 0), **S),
    "png-absurd-dimensions": _file("b.png", _png_declaring(10**6, 10**6), **S),
    "png-decompression-bomb-header": _file("b.png", _png_declaring(60000, 60000), **S),
    "png-no-spacing": _file("n.png", VALID_PNG),
    "png-spacing-nan": _file("n.png", VALID_PNG, spacing_um=float("nan")),
    "png-spacing-negative": _file("n.png", VALID_PNG, spacing_um=(-1.0, 2.0)),
    "png-rgba-all-transparent": _file("a.png", png_bytes(_rgba_transparent()), **S),
    "png-is-jpeg": _file("j.png", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64, **S),
    "png-is-gif": _file("g.png", b"GIF89a" + b"\x00" * 64, **S),
    "tiff-empty-file": _file("e.tif", b"", **S),
    "tiff-header-only": _file("h.tif", b"II*\x00", **S),
    "tiff-truncated-half": _file("t.tif", VALID_TIFF[: len(VALID_TIFF) // 2], **S),
    "tiff-bad-ifd-offset": _file("o.tif", b"II*\x00" + struct.pack("<I", 10**8), **S),
    "tiff-absurd-dimensions": _file("b.tiff", _tiff_declaring(10**6, 10**6), **S),
    "tiff-16000-square-no-data": _file("b.tif", _tiff_declaring(16000, 16000), **S),
    "tiff-16000-square-deflate-bomb": _file(
        "d.tif",
        _tiff_declaring(16000, 16000, compression=8, payload=zlib.compress(b"\7" * 999)),
        **S,
    ),
    "tiff-unknown-compression": _file(
        "u.tif", _tiff_declaring(4, 4, compression=60000, payload=b"\0" * 16), **S
    ),
    "png-8000-square-no-data": _file("b.png", _png_declaring(8000, 8000), **S),
    "tiff-zero-width": _file("z.tiff", _tiff_declaring(0, 5), **S),
    "tiff-no-spacing": _file("n.tif", VALID_TIFF),
    "tiff-complex-pixels": _file("c.tif", _tiff(np.ones((4, 4), np.complex64)), **S),
    "tiff-six-channels": _file("m.tif", _tiff_multichannel(), **S),
    "tiff-rgba-all-transparent": _file("a.tif", _tiff(_rgba_transparent(), photometric="rgb"), **S),
    "tiff-all-nan-float": _file("f.tif", _tiff(np.full((4, 4), np.nan, np.float32)), **S),
    # --- any suffix ---------------------------------------------------------------------------
    "unknown-suffix-text": _file("scan.dat", b"hello world\n", **S),
    "no-suffix-random": _file("scan", np.random.default_rng(4).bytes(512), **S),
    "unknown-suffix-csv": _file("scan.csv", b"x,y,z\n1,2,3\n", **S),
}


def test_at_least_sixty_crafted_inputs():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_refused_quickly_with_the_file_named(case, tmp_path):
    path, kwargs = CASES[case](tmp_path)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        with pytest.raises((ScanFormatError, ValueError)) as caught:
            read_scan(path, **kwargs)
    elapsed = time.perf_counter() - started
    assert type(caught.value) is ScanFormatError or (
        "spacing_um" in kwargs and type(caught.value) is ValueError
    ), f"{type(caught.value).__name__}: {caught.value}"
    assert str(path) in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert elapsed < 1.0, f"{case}: refused after {elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------
# Inputs that look bad but are documented as read
# ---------------------------------------------------------------------------------------------


def test_wrong_checksum_is_read_with_a_warning(tmp_path):
    digest = "0" * 32
    path = build_x3p(
        tmp_path / "c.x3p",
        main_xml(size=(7, 5, 1), data_md5=digest),
        {"bindata/data.bin": _data()},
        checksum="wrong",
    )
    with pytest.warns(ChecksumWarning, match="does not match"):
        scan = read_scan(path)
    assert scan.meta["checksum"] == "mismatch" and scan.shape == (5, 7)


def test_negative_increment_reverses_the_axis(tmp_path):
    path = _x3p(tmp_path, increment="-6.25e-06")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        scan = read_scan(path)
    assert scan.spacing_um == (6.25, 6.25)
    np.testing.assert_allclose(scan.heights, (Z[::-1, ::-1] * 1e6).astype(np.float32), rtol=1e-6)


def test_one_pixel_images_and_bit_depths_are_read(tmp_path):
    one = tmp_path / "one.png"
    one.write_bytes(png_bytes(np.array([[7]], np.uint8)))
    assert read_scan(one, spacing_um=1.0).heights.tolist() == [[7.0]]
    deep = tmp_path / "deep.png"
    Image.fromarray(np.array([[1000, 65535]], np.uint16)).save(deep)
    scan = read_scan(deep, spacing_um=1.0)
    assert scan.heights.tolist() == [[1000.0, 65535.0]] and scan.meta["image_bits"] == 16


def test_multi_page_tiff_reads_the_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    pages = np.stack([np.full((3, 4), 5, np.uint8), np.full((3, 4), 9, np.uint8)])
    tifffile.imwrite(path, pages, photometric="minisblack")
    scan = read_scan(path, spacing_um=1.0)
    assert np.all(scan.heights == 5) and any("2 pages" in q for q in scan.meta["quirks"])


def test_a_refused_file_is_left_as_it_was(tmp_path):
    path = _truncated(_valid_x3p, 0.5)(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ScanFormatError):
        read_scan(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_own_npz_round_trip_still_reads(tmp_path):
    """The builders make refusals from a file that reads: the unchanged own .npz is fine."""
    path = _own_npz(tmp_path)
    scan = read_scan(path)
    assert scan.shape == H.shape and scan.spacing_um == (6.25, 6.25)
    write_scan(scan, tmp_path / "again.npz")
    assert read_scan(tmp_path / "again.npz").shape == H.shape


def test_a_bad_spacing_stored_in_the_file_blames_the_file_not_the_caller(tmp_path):
    path = _npz(tmp_path, heights=H, spacing_um=np.nan)
    with pytest.raises(ScanFormatError, match="spacing stored in the file"):
        read_scan(path)
    assert read_scan(path, spacing_um=2.0).spacing_um == (2.0, 2.0)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("npz-own-heights-int", "int32, expected one of: float"),
        ("npz-negative-shape-header", "negative dimension"),
        ("npz-heights-object-pickle", "dtype object"),
    ],
)
def test_array_refusals_say_what_was_expected(case, expected, tmp_path):
    path, kwargs = CASES[case](tmp_path)
    with pytest.raises(ScanFormatError, match=expected):
        read_scan(path, **kwargs)
