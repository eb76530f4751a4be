"""Files of the lead database: content-hashed prepared scans and the write lock.

Every file is written with `balllink._files.atomic_write` (a temporary name in the same
folder, flushed to disk, then renamed over its final name), so a reader (or a process
restarted after a crash) sees either the whole old file or the whole new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ._files import atomic_write, jsonable
from ._scan import Scan
from .errors import DatabaseError

__all__ = ["WriteLock", "load_scan", "save_scan", "scan_sha256"]

_FORMAT = "balllink-prepared-scan-1"


def scan_sha256(scan: Scan) -> str:
    """Content hash of a scan: grid, spacing, heights and mask bytes.

    Examples
    --------
    >>> import numpy as np
    >>> a = Scan(np.zeros((3, 3)), spacing_um=6.25)
    >>> scan_sha256(a) == scan_sha256(Scan(np.zeros((3, 3)), spacing_um=6.25))
    True
    """
    h = hashlib.sha256(_FORMAT.encode())
    h.update(np.asarray(scan.shape, dtype=np.int64).tobytes())
    h.update(np.asarray(scan.spacing_um, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(scan.heights).tobytes())
    h.update(np.packbits(scan.mask).tobytes())
    return h.hexdigest()


def save_scan(scan: Scan, folder: Path, digest: str) -> str:
    """Store a prepared scan as compressed ``.npz`` under its content hash (idempotent).

    Returns the path relative to ``folder``.
    """
    rel = f"{digest[:2]}/{digest}.npz"
    path = Path(folder) / rel
    if path.exists():
        return rel
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        format=np.array(_FORMAT),
        heights=scan.heights,
        mask=np.packbits(scan.mask),
        shape=np.asarray(scan.shape, dtype=np.int64),
        spacing_um=np.asarray(scan.spacing_um, dtype=np.float64),
        meta=np.array(json.dumps(jsonable(scan.meta))),
        source=np.array(scan.source or ""),
    )
    atomic_write(path, buf.getvalue())
    return rel


def load_scan(path: Path) -> Scan:
    """Read a stored prepared scan back; `DatabaseError` naming the file when damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != _FORMAT:
                raise ValueError(f"format {z['format']!s}, expected {_FORMAT}")
            shape = tuple(int(v) for v in z["shape"])
            mask = np.unpackbits(z["mask"], count=shape[0] * shape[1]).astype(bool)
            return Scan(
                z["heights"],
                spacing_um=tuple(float(v) for v in z["spacing_um"]),
                mask=mask.reshape(shape),
                meta=json.loads(str(z["meta"])),
                source=str(z["source"]) or None,
            )
    except FileNotFoundError:
        raise DatabaseError(f"stored scan {path} is missing") from None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DatabaseError(f"stored scan {path} is damaged: {exc}") from None


class WriteLock:
    """An advisory, process-wide exclusive lock on a file (``fcntl.flock``); re-entrant."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = None
        self._depth = 0

    def acquire(self, *, blocking: bool = True) -> bool:
        if self._depth:
            self._depth += 1
            return True
        fh = open(self.path, "a+b")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        self._depth = 1
        return True

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
