"""The casing index file: one ``.npz`` of named arrays, written atomically.

Members: ``meta`` (UTF-8 JSON: magic, format, descriptor version and dimension, the index
parameters), ``faiss`` (the serialised FAISS index, empty if none), ``casing_ids``,
``starts``, ``alive``, ``hand`` (absent in files written before handedness was kept) and
``pose``. `write_index_file` and `read_index_file` come in pairs; a round trip searches
identically.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import atomic_path
from ..errors import IndexFormatError
from ..features import DESCRIPTOR_DIM, DESCRIPTOR_VERSION
from ._casings import CasingTable
from ._faiss import deserialize, serialize

__all__ = ["IndexFile", "read_index_file", "write_index_file"]

_MAGIC = "balllink-casing-index"
_FORMAT = 1


class IndexFile(NamedTuple):
    """What a casing index file holds."""

    params: dict[str, Any]  #: `CasingIndex` parameters, ``factory`` included
    index: Any  #: the FAISS index, or None before the first add
    casings: CasingTable  #: ids, vector ranges, liveness, handedness and poses


def write_index_file(path: str | os.PathLike, contents: IndexFile) -> None:
    """Write ``contents`` to ``path``, replacing it atomically (`_files.atomic_path`)."""
    meta = {
        "magic": _MAGIC,
        "format": _FORMAT,
        "descriptor_version": DESCRIPTOR_VERSION,
        "descriptor_dim": DESCRIPTOR_DIM,
        "params": contents.params,
    }
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
    n = len(casing_ids)
    nvec = int(starts[-1]) if len(starts) else -1
    if (
        len(starts) != n + 1
        or len(alive) != n
        or len(pose) != nvec
        or (index is not None and index.d != DESCRIPTOR_DIM)
    ):
        raise IndexFormatError(f"{path}: inconsistent casing index (array sizes disagree)")
    casings = CasingTable.from_arrays(casing_ids, starts, alive, hand, pose)
    return IndexFile(dict(meta.get("params", {})), index, casings)
