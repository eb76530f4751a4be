"""Property-based fuzzing of the readers: damaged files give a `Scan` or `ScanFormatError`.

Valid X3P, .npz (balllink's own and the plain layout), .npy, PNG and TIFF files are damaged by
random byte edits, insertions, deletions and truncations (hypothesis). `read_scan` must either
return a sound `Scan` (2-D float32 heights with a finite value, a positive finite spacing) or
raise `ScanFormatError` naming the file; no other exception, no hang (each example has a
deadline). Zip containers and PNG chunks carry CRCs that stop most raw edits at the door, so
the contents are also fuzzed *inside* a correctly rebuilt container (main.xml, data.bin, the
.npy members, PNG chunks with their CRCs recomputed), which reaches the parsers behind it.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from x3p_files import main_xml, png_bytes

import balllink as bl
from balllink.errors import ScanFormatError
from balllink.io import ChecksumWarning, read_scan

#: Examples per test; ``BALLLINK_FUZZ_EXAMPLES=5000`` for a longer hunt outside ``make test``.
FUZZ = settings(
    max_examples=int(os.environ.get("BALLLINK_FUZZ_EXAMPLES", "150")),
    deadline=5000,  # ms per example: a generous guard against a hang, not a benchmark
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

RNG = np.random.default_rng(12)
Z_M = RNG.normal(0, 3e-6, (6, 9))  # metres
DATA = np.ascontiguousarray(Z_M, "<f8").tobytes()
MAIN = main_xml(size=(9, 6, 1)).encode()
H = RNG.normal(0, 2, (6, 9)).astype(np.float32)


def _x3p_bytes(main: bytes = MAIN, data: bytes = DATA) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.xml", main)
        archive.writestr("bindata/data.bin", data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _own_npz_bytes(tmp: Path) -> bytes:
    scan = bl.Scan(H, spacing_um=(6.25, 5.0), meta={"case": "fuzz"}, source="fuzz.x3p")
    bl.write_scan(scan, tmp / "own.npz")
    return (tmp / "own.npz").read_bytes()


PLAIN_NPZ_MEMBERS = {
    "heights.npy": _npy(H),
    "spacing_um.npy": _npy(np.asarray([6.25, 6.25])),
    "mask.npy": _npy(np.abs(H) < 3),
}
PNG = png_bytes((RNG.random((12, 10)) * 255).astype(np.uint8))
PNG16 = png_bytes((RNG.random((12, 10)) * 60000).astype(np.uint16))


def _tiff_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


TIFF = _tiff_bytes((RNG.random((12, 10)) * 60000).astype(np.uint16))
TIFF_RGB = _tiff_bytes((RNG.random((8, 7, 3)) * 255).astype(np.uint8), photometric="rgb")


# ---------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------


@st.composite
def _damaged(draw, base: bytes) -> bytes:
    """``base`` with 1 to 6 random edits: byte changes, insertions, deletions, a truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        kind = draw(st.sampled_from(["set", "set", "insert", "delete", "truncate", "int"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        else:  # an integer field set to an extreme value (sizes, offsets, counts)
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000]))
            data[at : at + 4] = struct.pack("<I", value)
    return bytes(data)


def _with_crc(chunks: bytes) -> bytes:
    """A PNG's chunks with every CRC recomputed (so that damage reaches the decoder)."""
    out, at = bytearray(chunks[:8]), 8
    while at + 8 <= len(chunks):
        (length,) = struct.unpack(">I", chunks[at : at + 4])
        kind = chunks[at + 4 : at + 8]
        body = chunks[at + 8 : at + 8 + length]
        out += chunks[at : at + 8] + body + struct.pack(">I", zlib.crc32(kind + body))
        at += 12 + length
    return bytes(out + chunks[at:])


# ---------------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------------


def _read_or_refuse(path: Path, content: bytes, **kwargs) -> None:
    path.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        try:
            scan = read_scan(path, **kwargs)
        except ScanFormatError as error:
            assert str(path) in str(error)
            return
    heights = scan.heights
    assert heights.ndim == 2 and heights.dtype == np.float32 and heights.size > 0
    assert np.isfinite(heights).any()
    assert all(np.isfinite(s) and s > 0 for s in scan.spacing_um)
    assert scan.mask.shape == heights.shape


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_undamaged_files_read(folder):
    """The bases of the fuzzing are valid files: damage, not the base, makes a refusal."""
    for name, content, kwargs in (
        ("a.x3p", _x3p_bytes(), {}),
        ("a.npz", _own_npz_bytes(folder), {}),
        ("b.npz", _zip_of(PLAIN_NPZ_MEMBERS), {}),
        ("a.npy", _npy(H), {"spacing_um": 1.0}),
        ("a.png", PNG, {"spacing_um": 1.0}),
        ("b.png", _with_crc(PNG16), {"spacing_um": 1.0}),
        ("a.tif", TIFF, {"spacing_um": 1.0}),
        ("b.tif", TIFF_RGB, {"spacing_um": 1.0}),
    ):
        path = folder / name
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChecksumWarning)
            assert read_scan(path, **kwargs).heights.shape[0] > 0


@FUZZ
@given(content=_damaged(_x3p_bytes()))
def test_x3p_damaged_bytes(folder, content):
    _read_or_refuse(folder / "f.x3p", content)


@FUZZ
@given(main=_damaged(MAIN))
def test_x3p_damaged_main_xml(folder, main):
    _read_or_refuse(folder / "m.x3p", _x3p_bytes(main=main))


@FUZZ
@given(data=_damaged(DATA))
def test_x3p_damaged_data_bin(folder, data):
    _read_or_refuse(folder / "d.x3p", _x3p_bytes(data=data))


@FUZZ
@given(data=st.data())
def test_own_npz_damaged_bytes(folder, data):
    content = data.draw(_damaged(_own_npz_bytes(folder)))
    _read_or_refuse(folder / "f.npz", content)


def test_a_member_header_flagging_a_name_utf8_wrongly_is_refused_by_name(folder):
    """Found by the fuzzer: a local header with the UTF-8 name flag over bytes that are not
    UTF-8 made zipfile raise UnicodeDecodeError from deep inside."""
    data = bytearray(_own_npz_bytes(folder))
    at = data.index(b"heights.npy") - 30  # its local header (its name follows 30 bytes)
    assert data[at : at + 4] == b"PK\x03\x04"
    flags = int.from_bytes(data[at + 6 : at + 8], "little") | 0x800  # names are UTF-8
    data[at + 6 : at + 8] = flags.to_bytes(2, "little")
    data[at + 30] = 0x9B  # the member's name, first byte: not UTF-8
    path = folder / "utf8.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ScanFormatError, match="damaged") as err:
        read_scan(path)
    assert str(path) in str(err.value)


@FUZZ
@given(member=st.sampled_from(sorted(PLAIN_NPZ_MEMBERS)), data=st.data())
def test_npz_damaged_member(folder, member, data):
    damaged = data.draw(_damaged(PLAIN_NPZ_MEMBERS[member]))
    _read_or_refuse(folder / "m.npz", _zip_of({**PLAIN_NPZ_MEMBERS, member: damaged}))


@FUZZ
@given(content=_damaged(_npy(H)))
def test_npy_damaged_bytes(folder, content):
    _read_or_refuse(folder / "f.npy", content, spacing_um=2.0)


@FUZZ
@given(content=_damaged(PNG))
def test_png_damaged_bytes(folder, content):
    _read_or_refuse(folder / "f.png", content, spacing_um=2.0)


@FUZZ
@given(content=_damaged(PNG16))
def test_png_damaged_chunks_with_valid_crcs(folder, content):
    _read_or_refuse(folder / "c.png", _with_crc(content), spacing_um=2.0)


@FUZZ
@given(content=_damaged(TIFF))
def test_tiff_damaged_bytes(folder, content):
    _read_or_refuse(folder / "f.tif", content, spacing_um=2.0)


@FUZZ
@given(content=_damaged(TIFF_RGB))
def test_rgb_tiff_damaged_bytes(folder, content):
    _read_or_refuse(folder / "r.tiff", content, spacing_um=2.0)
