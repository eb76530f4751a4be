"""Files of the lead database: content-hashed prepared scans, their LRU cache, the write lock.

A stored scan is an ordinary balllink ``.npz`` scan file (`balllink.io.write_scan`, read
back with `balllink.io.read_scan`), named by its content hash: ``scans/ab/<sha256>.npz``.
The scan's own ``meta`` (JSON form) and ``source`` travel in ``meta["stored_scan"]`` of
the file, so that reading it back gives the scan as it was stored, bit for bit.
`write_scan` writes through `balllink._files.atomic_write` (a temporary name in the same
folder, flushed to disk, then renamed), so a reader, or a process restarted after a
crash, sees either the whole file or none.

The exhibit row keeps the file's SHA-256 and size (`ScanStore.file_record`), and a load
checks the scan read back against its content hash (the file name): a damaged file raises
`StoredScanError` naming the file and the exhibit, and `ScanStore.quarantine` moves it
to ``<db>/quarantine/`` (never deleted).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .._files import file_mode_in, file_sha256, jsonable, private_dir
from .._scan import HANDEDNESS, Scan
from ..errors import DatabaseError
from ..io import read_scan, write_scan

__all__ = [
    "ScanStore",
    "StoredScanError",
    "WriteLock",
    "load_scan",
    "save_scan",
    "scan_sha256",
    "stored_form",
]

#: Salt of the content hash (the name of the first store layout; kept so hashes never change).
_HASH_SALT = "balllink-prepared-scan-1"
#: The ``meta`` key of a stored file that holds the scan's own meta and source.
STORED_KEY = "stored_scan"
#: The bits of ``np.float32(np.nan)``: the NaN a scan file read back holds.
_NAN_BITS = np.float32(np.nan).view(np.uint32)


class StoredScanError(DatabaseError):
    """A stored scan is missing or damaged: ``path`` and ``exhibit_id`` (None when unknown)."""

    def __init__(self, message: str, path: Path, exhibit_id: int | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.exhibit_id = exhibit_id


def scan_sha256(scan: Scan) -> str:
    """Content hash of a scan: grid, spacing, heights and mask bytes.

    Examples
    --------
    >>> import numpy as np
    >>> a = Scan(np.zeros((3, 3)), spacing_um=6.25)
    >>> scan_sha256(a) == scan_sha256(Scan(np.zeros((3, 3)), spacing_um=6.25))
    True
    """
    h = hashlib.sha256(_HASH_SALT.encode())
    h.update(np.asarray(scan.shape, dtype=np.int64).tobytes())
    h.update(np.asarray(scan.spacing_um, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(scan.heights).tobytes())
    h.update(np.packbits(scan.mask).tobytes())
    return h.hexdigest()


def stored_form(scan: Scan) -> Scan:
    """The scan as the store keeps it: every non-finite height the one NaN the scan files
    hold (never a point of the mask, so nothing compared changes). Hash this form.

    Examples
    --------
    >>> z = np.array([[1.0, np.inf], [-np.nan, 2.0]], np.float32)
    >>> bits = stored_form(Scan(z, spacing_um=1.0)).heights.view(np.uint32)
    >>> bool((bits[~np.isfinite(z)] == np.float32(np.nan).view(np.uint32)).all())
    True
    """
    z = scan.heights
    bad = ~np.isfinite(z)
    if not bad.any() or (z[bad].view(np.uint32) == _NAN_BITS).all():
        return scan
    heights = np.array(z, dtype=np.float32)
    heights[bad] = np.float32(np.nan)
    return scan.replace(heights=heights, mask=scan.mask)


def save_scan(scan: Scan, folder: Path, digest: str) -> str:
    """Store a prepared scan as ``<digest[:2]>/<digest>.npz`` under ``folder`` (idempotent).

    Returns the path relative to ``folder``.
    """
    rel = f"{digest[:2]}/{digest}.npz"
    path = Path(folder) / rel
    if path.exists():
        return rel
    private_dir(path.parent, like=folder)  # scans/ab takes the mode of scans/
    handedness = scan.meta.get("handedness")
    meta = {
        "handedness": handedness if handedness in HANDEDNESS else None,
        STORED_KEY: {"meta": jsonable(scan.meta), "source": scan.source},
    }
    write_scan(scan.replace(meta=meta), path, annotations={})
    os.chmod(path, file_mode_in(path.parent))  # the folder's bits, not the umask's
    return rel


def load_scan(path: Path, expected: str | None = None, *, exhibit_id: int | None = None) -> Scan:
    """Read a stored prepared scan back; `StoredScanError` (a `DatabaseError`) naming the
    file (and exhibit) when it is missing, damaged, not read back exactly as written, or
    its content hash is not ``expected`` (default: the file name, when it is a hash)."""
    path = Path(path)
    who = "" if exhibit_id is None else f" of exhibit {exhibit_id}"
    try:
        read = read_scan(path, apply_mask=False)
    except FileNotFoundError:
        raise StoredScanError(f"stored scan {path}{who} is missing", path, exhibit_id) from None
    except Exception as exc:  # any damage (zip, npz, JSON, shape): never a traceback
        raise StoredScanError(
            f"stored scan {path}{who} is damaged: {exc}", path, exhibit_id
        ) from None
    if read.meta.get("quirks"):
        raise StoredScanError(
            f"stored scan {path}{who} was not read back as written: "
            + "; ".join(read.meta["quirks"]),
            path,
            exhibit_id,
        )
    if expected is None and len(path.stem) == 64:
        expected = path.stem
    if expected is not None and scan_sha256(read) != expected:
        raise StoredScanError(
            f"stored scan {path}{who} is damaged: its content does not match its hash",
            path,
            exhibit_id,
        )
    stored = read.meta.get(STORED_KEY)
    if isinstance(stored, dict):
        meta, source = stored.get("meta") or {}, stored.get("source")
    else:  # a file without the store's record: the reader's meta and source
        meta, source = read.meta, read.source
    return Scan(read.heights, read.spacing_um, read.mask, meta, source)


class ScanStore:
    """The stored scans of one database folder, with a bounded LRU cache by exhibit id."""

    def __init__(self, folder: Path, cache_size: int = 256):
        self.folder = Path(folder)
        self.folder.mkdir(exist_ok=True)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, Scan] = OrderedDict()

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def save(self, scan: Scan, digest: str) -> str:
        """Store ``scan`` under its content hash; the path relative to the folder."""
        return save_scan(scan, self.folder, digest)

    def cached(self, exhibit_id: int) -> Scan | None:
        scan = self._cache.get(exhibit_id)
        if scan is not None:
            self._cache.move_to_end(exhibit_id)
        return scan

    def load(self, exhibit_id: int, rel: str, expected: str | None = None) -> Scan:
        """The stored scan ``rel`` of an exhibit, from the cache when there; its content
        hash is checked against ``expected`` (`StoredScanError` when it differs)."""
        scan = self.cached(exhibit_id)
        if scan is None:
            scan = load_scan(self.path(rel), expected, exhibit_id=exhibit_id)
            self.remember(exhibit_id, scan)
        return scan

    def file_record(self, rel: str) -> tuple[str, int]:
        """SHA-256 and size of the stored file ``rel`` (kept with the exhibit)."""
        path = self.path(rel)
        return file_sha256(path), path.stat().st_size

    @property
    def quarantine_dir(self) -> Path:
        return self.folder.parent / "quarantine"

    def quarantine(self, rel: str) -> Path | None:
        """Move a damaged stored file to ``<db>/quarantine/`` (never deleted); its new path,
        None when there was nothing to move."""
        src = self.path(rel)
        if not src.exists():
            return None
        self.quarantine_dir.mkdir(exist_ok=True)
        dest = self.quarantine_dir / src.name
        n = 1
        while dest.exists():
            dest = self.quarantine_dir / f"{src.stem}.{n}{src.suffix}"
            n += 1
        os.replace(src, dest)
        return dest

    def remember(self, exhibit_id: int, scan: Scan) -> None:
        """Keep a prepared scan in the bounded LRU cache."""
        self._cache[exhibit_id] = scan
        self._cache.move_to_end(exhibit_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def files(self) -> list[Path]:
        """Every stored scan file (referenced by an exhibit or not)."""
        return list(self.folder.glob("*/*.npz"))

    def clean_temp(self) -> None:
        """Remove temporary files an interrupted write left."""
        for tmp in self.folder.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)


def _open_lock_file(path: Path):
    """The lock file, opened for writing; created with the permissions of its folder."""
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(handle, file_mode_in(path.parent))
    except FileExistsError:
        handle = os.open(path, os.O_RDWR)
    return os.fdopen(handle, "r+b")


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
        fh = _open_lock_file(self.path)
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
