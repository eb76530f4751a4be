"""Arrays as scans: ``.npy`` and ``.npz`` files, and balllink's one ``.npz`` scan format.

balllink's own format (`NPZ_FORMAT`), written by `write_scan` and used by the lead database
for its stored prepared scans, is a compressed ``.npz`` holding:

``format``
    The text ``"balllink-scan-2"``: the file is balllink's own, read back as written.
``heights``
    float32 µm, 2-D, NaN (or ±Inf) where nothing was measured, exactly ``Scan.heights``.
``mask``
    bool, the grid's shape, exactly ``Scan.mask``.
``spacing_um``
    float64 ``(dy, dx)``.
``meta_json``
    ``json.dumps(jsonable(scan.meta), allow_nan=True)``: every entry of ``meta`` that has a
    JSON form (`balllink._files.jsonable`: NaN and ±Inf kept, tuples as lists, arrays left out).
``source``
    ``Scan.source`` (absent when it is None).
``file_mask``
    bool, the grid's shape: ``meta["file_mask"]`` when it is such an array (present only then).
``annotations``, ``annotation_names``
    bool ``(n, rows, cols)`` and ``n`` names: the annotations written (present only when any).

Reading it back gives the scan bit for bit: heights, mask, spacing, ``meta`` (its JSON form,
with ``file_mask`` and ``annotations`` put back as arrays) and source. Nothing is guessed for
such a file: no sentinel, no fill value, no region of interest applied (`OwnScan`).

Two older layouts are still read: the layout `write_scan` wrote before (no ``format``;
``heights``, ``spacing_um``, optional ``mask`` as the region of interest, annotations,
``meta_json``: read like any foreign .npz, `FileContent`), and the lead database's own
``"balllink-prepared-scan-1"`` (`LEGACY_DB_FORMAT`: ``mask`` packed with ``np.packbits``
beside ``shape``, ``meta`` as JSON text, ``source`` empty for None), so that databases
stored by earlier versions still open.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import jsonable
from .._scan import Scan
from ..errors import ScanFormatError
from ._content import FileContent, fail
from ._zip import Failure, open_zip, read_member, zip_members

__all__ = [
    "LEGACY_DB_FORMAT",
    "NPZ_FORMAT",
    "OwnScan",
    "load_npy",
    "npz_bytes",
    "read_npy",
    "read_npz",
]

#: Format tag of balllink's .npz scan files (the ``format`` array).
NPZ_FORMAT = "balllink-scan-2"
#: Format tag of the prepared scans stored by the lead database before `NPZ_FORMAT`.
LEGACY_DB_FORMAT = "balllink-prepared-scan-1"


@dataclass
class OwnScan:
    """A scan file balllink wrote: everything exactly as stored, nothing guessed."""

    heights: np.ndarray
    mask: np.ndarray
    spacing_um: tuple[float, float]
    meta: dict[str, Any]
    source: str | None
    format: str
    annotations: dict[str, np.ndarray] = field(default_factory=dict)


#: The dtype kinds `load_npy` is asked for, in words.
_KIND_NAMES = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float", "U": "text"}


def load_npy(
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
        raise fail(path, f"{what} is not a valid .npy array: {error!r}") from None
    if dtype.hasobject or dtype.kind not in kinds:
        expected = ", ".join(_KIND_NAMES.get(kind, kind) for kind in kinds)
        raise fail(path, f"{what} has the dtype {dtype}, expected one of: {expected}")
    if any(n < 0 for n in shape):
        raise fail(path, f"{what} declares the shape {shape}, with a negative dimension")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    needed = count * dtype.itemsize
    left = available - (stream.tell() - start)
    if needed != left:
        which = "shorter" if left < needed else "longer"
        raise fail(
            path,
            f"{what} declares shape {shape} of {dtype} ({needed} bytes) but holds {left}: the "
            f"data is {which} than the declared grid",
        )
    data = stream.read(needed)
    if len(data) != needed:
        raise fail(path, f"{what} is truncated")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(
        shape, order="F" if fortran else "C"
    )


def grid_of(array: np.ndarray, what: str, path: Path) -> np.ndarray:
    if array.ndim != 2:
        raise fail(path, f"{what} must be a 2-D grid of heights, got shape {array.shape}")
    if array.size == 0:
        raise fail(path, f"the grid is empty: {what} has shape {array.shape}")
    return array


def read_npy(path: Path, limit: int) -> FileContent:
    size = path.stat().st_size
    if size > limit:
        raise fail(path, f"{size} bytes, more than the limit of {limit}")
    with open(path, "rb") as stream:
        heights = grid_of(load_npy(stream, size, "the array", path), "the array", path)
    return FileContent(heights, None, format="npy")


@dataclass
class _Members:
    """The arrays of an open .npz (name without ``.npy`` -> zip entry), loaded on demand."""

    archive: Any  # zipfile.ZipFile
    arrays: dict[str, Any]  # name -> zipfile.ZipInfo
    failure: Failure
    path: Path

    def load(self, key: str, kinds: str) -> np.ndarray:
        raw = read_member(self.archive, self.arrays[key], self.failure)
        return load_npy(io.BytesIO(raw), len(raw), f"'{key}'", self.path, kinds=kinds)

    def text(self, key: str) -> str:
        values = self.load(key, "U").reshape(-1)
        if values.size != 1:
            raise fail(self.path, f"'{key}' must hold one text, got {values.size} values")
        return str(values[0])


def read_npz(path: Path, limit: int) -> FileContent | OwnScan:
    """An .npz scan: balllink's own format (`OwnScan`) or a foreign layout (`FileContent`)."""
    failure = Failure(str(path))
    with open(path, "rb") as stream, open_zip(stream, failure) as archive:
        entries = zip_members(archive, failure, limit)
        arrays = {name[: -len(".npy")]: info for name, info in entries.items()}
        members = _Members(archive, arrays, failure, path)
        tag = None
        if "format" in arrays:
            try:
                tag = members.text("format")
            except ScanFormatError:  # not a text: a foreign array that happens to be so named
                tag = None
        if tag == NPZ_FORMAT:
            return _own_format(members, path)
        if tag == LEGACY_DB_FORMAT:
            return _legacy_db_format(members, path)
        if tag is not None and tag.startswith("balllink-"):
            raise fail(
                path,
                f"written in the balllink format {tag!r}, which this version does not read "
                f"(it reads {NPZ_FORMAT!r} and {LEGACY_DB_FORMAT!r}); a newer balllink wrote it",
            )
        return _old_layout(members, path)


def _need(members: _Members, keys: tuple[str, ...], tag: str) -> None:
    missing = [key for key in keys if key not in members.arrays]
    if missing:
        raise fail(members.path, f"a {tag!r} scan file lacks the array(s) {missing}")


def _own_spacing(values: np.ndarray, path: Path) -> tuple[float, float]:
    values = values.astype(np.float64).ravel()
    if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise fail(path, f"'spacing_um' must hold (dy, dx), positive and finite, got {values}")
    return float(values[0]), float(values[1])


def _own_meta(text: str, key: str, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise fail(path, f"'{key}' is not JSON ({error}); the file is damaged") from None
    if not isinstance(meta, dict):
        raise fail(path, f"'{key}' must be a JSON object, got {type(meta).__name__}")
    return meta


def _same_shape(array: np.ndarray, heights: np.ndarray, key: str, path: Path) -> np.ndarray:
    if array.shape != heights.shape:
        raise fail(path, f"'{key}' has shape {array.shape}, 'heights' has {heights.shape}")
    return np.ascontiguousarray(array, dtype=bool)


def _own_format(members: _Members, path: Path) -> OwnScan:
    _need(members, ("heights", "mask", "spacing_um", "meta_json"), NPZ_FORMAT)
    heights = grid_of(members.load("heights", "f"), "'heights'", path)
    mask = _same_shape(members.load("mask", "b"), heights, "mask", path)
    spacing = _own_spacing(members.load("spacing_um", "f"), path)
    meta = _own_meta(members.text("meta_json"), "meta_json", path)
    source = members.text("source") if "source" in members.arrays else None
    if "file_mask" in members.arrays:
        meta["file_mask"] = _same_shape(members.load("file_mask", "b"), heights, "file_mask", path)
    loaded = {
        key: members.load(key, kinds)
        for key, kinds in (("annotations", "b"), ("annotation_names", "U"))
        if key in members.arrays
    }
    annotations = _npz_annotations(loaded, heights.shape, path)
    if loaded:
        meta["annotations"] = dict(annotations)
    return OwnScan(heights, mask, spacing, meta, source, NPZ_FORMAT, annotations)


def _legacy_db_format(members: _Members, path: Path) -> OwnScan:
    keys = ("heights", "mask", "shape", "spacing_um", "meta", "source")
    _need(members, keys, LEGACY_DB_FORMAT)
    heights = grid_of(members.load("heights", "f"), "'heights'", path)
    shape = tuple(int(v) for v in members.load("shape", "iu").ravel())
    if shape != heights.shape:
        raise fail(path, f"'shape' says {shape}, 'heights' has {heights.shape}")
    packed = members.load("mask", "u").ravel()
    count = heights.size
    if packed.dtype != np.uint8 or packed.size != (count + 7) // 8:
        raise fail(
            path, f"'mask' holds {packed.size} packed bytes, the grid needs {(count + 7) // 8}"
        )
    mask = np.unpackbits(packed, count=count).astype(bool).reshape(heights.shape)
    spacing = _own_spacing(members.load("spacing_um", "f"), path)
    meta = _own_meta(members.text("meta"), "meta", path)
    source = members.text("source") or None
    return OwnScan(heights, mask, spacing, meta, source, LEGACY_DB_FORMAT)


def _old_layout(members: _Members, path: Path) -> FileContent:
    """The layout `write_scan` wrote before the format tag (and any .npz a user makes)."""
    arrays = members.arrays
    if "heights" not in arrays:
        raise fail(
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
            loaded[key] = members.load(key, kinds)
    stored: dict[str, Any] = {}
    quirks: list[str] = []
    if "meta_json" in arrays:
        text = members.load("meta_json", "U")
        try:
            value = json.loads(str(text.reshape(-1)[0]))
            stored = value if isinstance(value, dict) else {}
        except (ValueError, IndexError) as error:
            quirks.append(f"meta_json unreadable ({error}); ignored")
    heights = grid_of(loaded["heights"], "'heights'", path)
    spacing = None
    if "spacing_um" in loaded:
        values = loaded["spacing_um"].astype(np.float64).ravel()
        if values.size not in (1, 2):
            raise fail(path, f"'spacing_um' must hold (dy, dx) or one value, got {values}")
        spacing = (float(values[0]), float(values[-1]))
    file_mask = None
    if "mask" in loaded:
        file_mask = loaded["mask"].astype(bool)
        if file_mask.shape != heights.shape:
            raise fail(path, f"'mask' has shape {file_mask.shape}, 'heights' has {heights.shape}")
    annotations = _npz_annotations(loaded, heights.shape, path)
    return FileContent(
        heights, spacing, file_mask, stored, quirks, format="npz", annotations=annotations
    )


def _npz_annotations(
    loaded: dict[str, np.ndarray], shape: tuple[int, ...], path: Path
) -> dict[str, np.ndarray]:
    if "annotations" not in loaded and "annotation_names" not in loaded:
        return {}
    regions = loaded.get("annotations", np.zeros((0, *shape), bool))
    names = [str(n) for n in loaded.get("annotation_names", np.zeros(0, "U1")).reshape(-1)]
    if regions.ndim != 3 or regions.shape[1:] != shape or regions.shape[0] != len(names):
        raise fail(
            path,
            f"'annotations' has shape {regions.shape} for {len(names)} 'annotation_names'; "
            f"expected ({len(names)}, {shape[0]}, {shape[1]})",
        )
    if len(set(names)) != len(names):
        raise fail(path, f"'annotation_names' repeats a name: {names}")
    return {name: np.ascontiguousarray(r, dtype=bool) for name, r in zip(names, regions)}


def npz_bytes(scan: Scan, annotations: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of ``scan`` in balllink's .npz format (see the module documentation).

    ``annotations`` are checked regions of the grid's shape (``{}`` for none).

    Examples
    --------
    >>> import tempfile
    >>> scan = Scan(np.arange(6.0).reshape(2, 3), spacing_um=6.25, meta={"depth": np.nan},
    ...             source="casing-1.x3p")
    >>> path = Path(tempfile.mkdtemp()) / "s.npz"
    >>> _ = path.write_bytes(npz_bytes(scan, {}))
    >>> back = read_npz(path, 1 << 20)
    >>> back.format, back.source, back.meta, back.spacing_um
    ('balllink-scan-2', 'casing-1.x3p', {'depth': nan}, (6.25, 6.25))
    >>> bool(np.array_equal(back.heights, scan.heights) and np.array_equal(back.mask, scan.mask))
    True
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(NPZ_FORMAT),
        "heights": np.ascontiguousarray(scan.heights, dtype=np.float32),
        "mask": np.ascontiguousarray(scan.mask, dtype=bool),
        "spacing_um": np.asarray(scan.spacing_um, dtype=np.float64),
        "meta_json": np.asarray(json.dumps(jsonable(scan.meta), allow_nan=True)),
    }
    if scan.source is not None:
        arrays["source"] = np.asarray(scan.source)
    file_mask = scan.meta.get("file_mask")
    if isinstance(file_mask, np.ndarray) and file_mask.shape == scan.shape:
        arrays["file_mask"] = np.ascontiguousarray(file_mask, dtype=bool)
    if annotations:
        arrays["annotations"] = np.stack([np.asarray(r, bool) for r in annotations.values()])
        arrays["annotation_names"] = np.asarray(list(annotations), dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
