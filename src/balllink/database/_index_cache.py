"""The candidate index of a database: a cache of the stored scans, kept on disk with a manifest.

``index.faiss`` (the index's own file), ``index.ids.npy`` (the exhibit ids it holds) and
``index.json`` (their SHA-256 and count) are saved atomically, the manifest last. On opening,
a missing, damaged or foreign trio is rebuilt from the stored scans (with a warning), and an
index older than the SQLite rows catches up: exhibits it lacks are added, extra ones removed.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._files import atomic_path, atomic_write, file_mode_in, file_sha256
from .._scan import Scan
from ..errors import DatabaseError
from ..index import CasingIndex
from ._exhibits import Exhibits
from ._schema import is_disk_full, now
from ._store import WriteLock

__all__ = ["IndexCache"]

log = logging.getLogger(__name__)

#: Exhibits stored without correlation are added to the index in batches of this size.
PENDING_BATCH = 1000


def _manifest_n(path: Path) -> int:
    """The number of casings a saved index manifest lists (0 when none or unreadable)."""
    try:
        return int(json.loads(path.read_text()).get("n", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


class IndexCache:
    """The candidate index of one database folder, opened on first use.

    ``index_class`` makes an empty index (``index_class()``) and reads one
    (``index_class.load(path)``); default `balllink.index.CasingIndex`.
    """

    def __init__(
        self,
        folder: Path,
        exhibits: Exhibits,
        lock: WriteLock,
        index_class=None,
        *,
        enforce_kind: bool = False,
    ):
        self.folder = Path(folder)
        self._enforce = bool(enforce_kind)  # a saved index of another kind is rebuilt
        self._exhibits = exhibits
        self._lock = lock
        self._cls = index_class if index_class is not None else CasingIndex
        self._index = None
        self.indexed: set[int] = set()
        self.dirty = False
        self.pending: list[tuple[int, Scan]] = []  # stored, not yet indexed (bulk loads)
        self.readonly = False  # True: kept in memory only, never saved

    @property
    def files(self) -> tuple[Path, Path, Path]:
        f = self.folder
        return f / "index.faiss", f / "index.ids.npy", f / "index.json"

    @property
    def index_class(self) -> type:
        """The class that makes and reads this database's index."""
        return self._cls

    @property
    def is_open(self) -> bool:
        return self._index is not None

    @property
    def needs_save(self) -> bool:
        return self.dirty or bool(self.pending)

    def get(self):
        """The index, opened (and brought up to date) on first use."""
        if self._index is None:
            self.pending.clear()  # the index opened from disk catches up from SQLite
            self._open()
        else:
            self.flush_pending()
            self._catch_up()
        return self._index

    def add(self, ids: Sequence[int], scans: Sequence[Scan] | None = None, *, batch=256):
        """Add exhibits (their stored scans unless given) to the open index."""
        for start in range(0, len(ids), batch):
            chunk = list(ids[start : start + batch])
            if scans is not None:
                preps = list(scans[start : start + batch])
            else:  # a damaged stored scan is quarantined and left out (warned)
                chunk, preps = self._exhibits.loadable(chunk)
            if not chunk:
                continue
            self._index.add(np.asarray(chunk, dtype=np.int64), preps)
            self.indexed.update(int(i) for i in chunk)
        self.dirty = True

    def add_new(self, exhibit_id: int, scan: Scan, *, now_: bool) -> None:
        """A newly stored exhibit: added at once (``now_``: the next ingest must find it)
        or with the next batch (bulk load: adding one casing copies the pose table)."""
        if self._index is None:
            return
        if now_:
            self.add([exhibit_id], [scan])
        else:
            self.pending.append((exhibit_id, scan))
            if len(self.pending) >= PENDING_BATCH:
                self.flush_pending()

    def flush_pending(self) -> None:
        if self.pending and self._index is not None:
            ids, scans = zip(*self.pending)
            self.pending.clear()
            self.add(list(ids), list(scans))

    def _open(self) -> None:
        data, ids_path, manifest_path = self.files
        n_exhibits = self._exhibits.count()
        try:
            if not manifest_path.exists():
                if n_exhibits == 0:
                    self._index, self.indexed = self._cls(), set()
                    return
                raise DatabaseError("the index manifest is missing")
            manifest = json.loads(manifest_path.read_text())
            for p, key in ((data, "sha256"), (ids_path, "ids_sha256")):
                if not p.exists():
                    raise DatabaseError(f"{p.name} is missing")
                if file_sha256(p) != manifest[key]:
                    raise DatabaseError(f"{p.name} does not match its manifest (damaged)")
            index = self._cls.load(str(data))
            ids = np.load(ids_path, allow_pickle=False)
            if len(index) != ids.size:
                raise DatabaseError(f"index holds {len(index)} casings, manifest {ids.size}")
            if self._enforce and not self._kind_matches(index):
                log.info(
                    "%s: the saved index is %s, the database keeps %s: rebuilding it",
                    self.folder, getattr(index, "factory_", type(index).__name__),
                    getattr(self._cls(), "factory_", self._cls),
                )  # fmt: skip
                self.rebuild()
                return
        except Exception as exc:  # any damage: the index is a cache, rebuild it
            msg = (
                f"{self.folder}: candidate index unusable ({exc}); rebuilding it from "
                f"{n_exhibits} stored scans"
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
            log.warning(msg)
            self.rebuild()
            return
        self._index, self.indexed = index, set(ids.tolist())
        self._catch_up()

    def _kind_matches(self, index) -> bool:
        """Whether a saved index is of the kind this database keeps (its factory)."""
        matches = getattr(self._cls, "matches", None)
        if matches is not None:
            return bool(matches(index))
        want = getattr(self._cls(), "factory_", None)
        return want is None or getattr(index, "factory_", None) == want

    def _catch_up(self) -> None:
        """Add exhibits the index lacks (committed after its last save); drop extras."""
        if self._exhibits.count() == len(self.indexed):
            return
        ids = set(self._exhibits.ids())
        extra = sorted(self.indexed - ids)
        missing = sorted(ids - self.indexed)
        if extra:
            self._index.remove(np.asarray(extra, dtype=np.int64))
            self.indexed -= set(extra)
        if missing:
            log.info("%s: adding %d exhibits to the index", self.folder, len(missing))
            self.add(missing)
        self.dirty = True

    def rebuild(self, *, progress: Callable | None = None) -> None:
        """Rebuild the index from the stored scans and save it (when writable)."""
        self._index, self.indexed = self._cls(), set()
        ids = self._exhibits.ids()
        for start in range(0, len(ids), 256):
            self.add(ids[start : start + 256])
            if progress is not None:
                progress(min(start + 256, len(ids)), len(ids))
        self.dirty = True
        self.save(blocking=False)

    def save(self, *, blocking: bool = True) -> bool:
        """Write index, ids and manifest atomically; only the lock holder writes.

        Not saved (False) when read-only, when another process holds the lock, or when the
        disk is full (logged; no temporary file is left, the old trio stays, and the next
        opening catches up from SQLite: the index is a cache).
        """
        if self._index is None:
            return False
        self.flush_pending()
        if self.readonly:
            return False
        if not self._lock.acquire(blocking=blocking):
            log.info("%s: another process writes; index kept in memory", self.folder)
            return False
        try:
            self._write()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning(
                "%s: the disk is full, candidate index not saved (%s); it catches up from "
                "the stored scans when next opened",
                self.folder,
                exc.strerror or exc,
            )
            return False
        finally:
            self._lock.release()
        self.dirty = False
        return True

    def _write(self) -> None:
        data, ids_path, manifest_path = self.files
        mode = file_mode_in(self.folder)
        ids = np.asarray(sorted(self.indexed), dtype=np.int64)
        if not ids.size and self._exhibits.count() == 0 and _manifest_n(manifest_path):
            # never replace a saved index by an empty one while SQLite holds nothing:
            # that is a deleted or emptied database, not an empty one
            raise DatabaseError(
                f"{self.folder}: the SQLite file holds no exhibits but the saved index "
                f"holds {_manifest_n(manifest_path)}; the index is not overwritten "
                "(restore leads.sqlite from a backup)"
            )
        # the manifest goes last: until it is replaced, the old trio stays consistent
        # (a mismatch after a crash between the renames only triggers a rebuild)
        with atomic_path(data, mode=mode) as tmp, atomic_path(ids_path, mode=mode) as tmp_ids:
            self._index.save(str(tmp))
            os.chmod(tmp, mode)  # the index's own save may have replaced the file
            with open(tmp_ids, "wb") as fh:
                np.save(fh, ids)
            manifest = {
                "sha256": file_sha256(tmp),
                "ids_sha256": file_sha256(tmp_ids),
                "n": int(ids.size),
                "saved": now(),
            }
        atomic_write(manifest_path, json.dumps(manifest).encode(), mode=mode)

    def clean_temp(self) -> None:
        """Remove temporary files an interrupted save left."""
        for tmp in self.folder.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)
