"""The casing index file: one ``.npz`` of named arrays, written atomically.

Members: ``meta`` (UTF-8 JSON: magic, format, descriptor version and dimension, the index
parameters), ``faiss`` (the serialised FAISS index, empty if none), ``casing_ids``,
``starts``, ``alive``, ``hand`` (absent in files written before handedness was kept) and
``pose``. `write_index_file` and `read_index_file` come in pairs; a round trip searches
identically.

The folder form (`write_index_dir` / `read_index_dir`) holds the same things as separate
files, so that a large index opens memory-mapped: ``meta.json``, ``faiss.index`` (FAISS's
own format, mapped with its ``IO_FLAG_MMAP``), and ``casing_ids.npy``, ``starts.npy``,
``alive.npy``, ``hand.npy``, ``pose.npy`` (mapped with ``numpy.load(mmap_mode="r")``).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import atomic_path
from ..errors import IndexFormatError
from ..features import DESCRIPTOR_DIM, DESCRIPTOR_VERSION
from ._casings import CasingTable
from ._faiss import deserialize, read_faiss, serialize, write_faiss

__all__ = [
    "IndexFile",
    "read_index",
    "read_index_dir",
    "read_index_file",
    "write_index_dir",
    "write_index_file",
]

_MAGIC = "balllink-casing-index"
_FORMAT = 1


class IndexFile(NamedTuple):
    """What a casing index file holds."""

    params: dict[str, Any]  #: `CasingIndex` parameters, ``factory`` included
    index: Any  #: the FAISS index, or None before the first add
    casings: CasingTable  #: ids, vector ranges, liveness, handedness and poses


#: Array members of an index, with the dtype each is kept in.
_ARRAYS = {
    "casing_ids": np.int64,
    "starts": np.int64,
    "alive": bool,
    "hand": np.int8,
    "pose": np.float16,
}
_DIR_FAISS = "faiss.index"
_DIR_META = "meta.json"


def _meta(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "magic": _MAGIC,
        "format": _FORMAT,
        "descriptor_version": DESCRIPTOR_VERSION,
        "descriptor_dim": DESCRIPTOR_DIM,
        "params": params,
    }


def write_index_file(path: str | os.PathLike, contents: IndexFile) -> None:
    """Write ``contents`` to ``path``, replacing it atomically (`_files.atomic_path`)."""
    meta = _meta(contents.params)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            faiss=serialize(contents.index),
            casing_ids=contents.casings.casing_ids,
            starts=contents.casings.starts,
            alive=contents.casings.alive,
            pose=contents.casings.pose,
            hand=contents.casings.hand,
        )


def _check_meta(path: Path, meta) -> None:
    if not isinstance(meta, dict) or meta.get("magic") != _MAGIC:
        raise IndexFormatError(f"{path}: not a balllink casing index (wrong magic)")
    if meta.get("format") != _FORMAT:
        raise IndexFormatError(
            f"{path}: casing index file format {meta.get('format')!r}, this balllink reads "
            f"{_FORMAT}"
        )
    if meta.get("descriptor_version") != DESCRIPTOR_VERSION:
        raise IndexFormatError(
            f"{path}: built with descriptor version {meta.get('descriptor_version')!r}, "
            f"this balllink computes {DESCRIPTOR_VERSION!r}; rebuild the index from the "
            "prepared scans"
        )


def _check_sizes(path: Path, index, casings: dict[str, np.ndarray]) -> None:
    n = len(casings["casing_ids"])
    starts = casings["starts"]
    nvec = int(starts[-1]) if len(starts) else -1
    if (
        len(starts) != n + 1
        or len(casings["alive"]) != n
        or len(casings["hand"]) != n
        or len(casings["pose"]) != nvec
        or (index is not None and index.d != DESCRIPTOR_DIM)
    ):
        raise IndexFormatError(f"{path}: inconsistent casing index (array sizes disagree)")


def read_index_file(path: str | os.PathLike) -> IndexFile:
    """Read and check a file written by `write_index_file`.

    Raises
    ------
    IndexFormatError
        Missing, truncated, not a balllink index, another file format or descriptor
        version, damaged arrays, or array sizes that disagree. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFormatError(f"{path}: cannot read casing index (no such file)")
    try:  # members are read one at a time: no second copy of a large index
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
        raise IndexFormatError(
            f"{path}: not a balllink casing index, or truncated ({type(exc).__name__}: {exc})"
        ) from None
    _check_meta(path, meta)
    try:
        index = deserialize(arrays["faiss"])
        casing_ids = arrays["casing_ids"].astype(np.int64)
        starts = arrays["starts"].astype(np.int64)
        alive = arrays["alive"].astype(bool)
        # files written before handedness was kept: every casing unknown
        hand = arrays.get("hand", np.zeros(len(alive), np.int8)).astype(np.int8)
        pose = arrays["pose"].astype(np.float16)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IndexFormatError(f"{path}: damaged casing index ({exc})") from None
    arrays = dict(casing_ids=casing_ids, starts=starts, alive=alive, hand=hand, pose=pose)
    _check_sizes(path, index, arrays)
    casings = CasingTable.from_arrays(casing_ids, starts, alive, hand, pose)
    return IndexFile(dict(meta.get("params", {})), index, casings)


def read_index(path: str | os.PathLike, *, mmap: bool = False) -> IndexFile:
    """`read_index_dir` for a folder, else `read_index_file` (which cannot map).

    Raises ValueError for ``mmap`` and a single file (the fix: save it as a folder).
    """
    if Path(path).is_dir():
        return read_index_dir(path, mmap=mmap)
    if mmap:
        raise ValueError(
            f"{path}: a single-file casing index cannot be memory-mapped; save it with "
            "save(path, directory=True) and load that folder"
        )
    return read_index_file(path)


def write_index_dir(path: str | os.PathLike, contents: IndexFile) -> None:
    """Write ``contents`` as the folder ``path``; an existing folder is replaced whole.

    The files go to a new sibling folder that is then renamed into place, so a crash
    leaves either the old folder or the new one (or, between the two renames, the old one
    under ``<name>.old-<pid>``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder; save the index elsewhere")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / _DIR_META).write_text(json.dumps(_meta(contents.params)))
    if contents.index is not None:
        write_faiss(contents.index, tmp / _DIR_FAISS)
    c = contents.casings
    values = dict(casing_ids=c.casing_ids, starts=c.starts, alive=c.alive, hand=c.hand, pose=c.pose)
    for name, dtype in _ARRAYS.items():
        np.save(tmp / f"{name}.npy", np.asarray(values[name], dtype=dtype))
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def read_index_dir(path: str | os.PathLike, *, mmap: bool = False) -> IndexFile:
    """Read and check a folder written by `write_index_dir`.

    ``mmap``: map the FAISS data and the side arrays read-only instead of reading them
    (the returned arrays are ``numpy.memmap`` views; the FAISS index cannot be changed).

    Raises
    ------
    IndexFormatError
        A missing or damaged member, another format or descriptor version, or array
        sizes that disagree. The message names the folder and the member.
    """
    path = Path(path)
    try:
        meta = json.loads((path / _DIR_META).read_text())
    except (OSError, ValueError) as exc:
        raise IndexFormatError(
            f"{path}: not a balllink casing index folder ({_DIR_META}: {exc})"
        ) from None
    _check_meta(path, meta)
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in _ARRAYS.items():
        member = path / f"{name}.npy"
        try:
            arr = np.load(member, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexFormatError(f"{member}: missing or damaged ({exc})") from None
        if arr.dtype != np.dtype(dtype):
            raise IndexFormatError(f"{member}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
        arrays[name] = arr
    index = None
    if (path / _DIR_FAISS).exists():
        try:
            index = read_faiss(path / _DIR_FAISS, mmap=mmap)
        except RuntimeError as exc:
            raise IndexFormatError(f"{path / _DIR_FAISS}: damaged FAISS index ({exc})") from None
    elif int(arrays["starts"][-1]) if len(arrays["starts"]) else 0:
        raise IndexFormatError(f"{path}: {_DIR_FAISS} is missing")
    _check_sizes(path, index, arrays)
    casings = CasingTable.from_arrays(*(arrays[name] for name in _ARRAYS))
    return IndexFile(dict(meta.get("params", {})), index, casings)
