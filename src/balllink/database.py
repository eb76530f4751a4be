"""The embedded lead database: exhibits, automatic correlation, leads, series, audit trail.

One folder holds everything::

    leads.db/
        leads.sqlite       exhibits, comparisons, lead status, audit trail (SQLite, WAL)
        scans/ab/<sha256>.npz   prepared scans, compressed, named by content hash
        index.faiss, index.ids.npy, index.json   the candidate index and its manifest
        write.lock         held by the one process that writes

Crash safety: a stored scan is written (temporary file, fsync, rename) before the SQLite
row that references it; each exhibit with its comparisons and audit record is one SQLite
transaction; the index is a cache of the stored scans, saved atomically at the end of a
batch and brought up to date (or rebuilt, with a warning) when the database is opened.
Killing a process at any moment therefore leaves a database that opens, passes `check`,
and completes the same ingest when it is run again, without duplicates.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import logging
import os
import sqlite3
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _db_schema
from ._db_store import WriteLock, load_scan, save_scan, scan_sha256
from ._files import atomic_path, atomic_write, file_sha256
from ._scan import Scan
from .errors import BalllinkError, DatabaseError, PreprocessError
from .leads import (
    KINDS,
    STATUSES,
    Candidate,
    Flag,
    Lead,
    Scope,
    SearchResult,
    Series,
    _as_flags,
    _date,
    _flags_json,
    chance_probability,
    default_threshold,
    find_series,
)

__all__ = [
    "AuditReport",
    "CheckReport",
    "Exhibit",
    "FlaggedExhibit",
    "IngestReport",
    "LeadDatabase",
]

log = logging.getLogger(__name__)

SQLITE_NAME = "leads.sqlite"
_FIELDS = (
    "case_id",
    "agency",
    "kind",
    "make",
    "model",
    "serial",
    "occurred",
    "lat",
    "lon",
    "caliber",
    "notes",
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Exhibit:
    """One casing in the database with its fields, source and stored scan.

    ``flags`` are the problems its preparation noted (see `balllink.leads.Flag`); a
    flagged exhibit is stored and compared like any other.
    """

    id: int
    case_id: str
    agency: str
    kind: str
    make: str | None
    model: str | None
    serial: str | None
    occurred: str | None
    lat: float | None
    lon: float | None
    caliber: str | None
    notes: str | None
    source: str | None
    source_hash: str
    scan_hash: str
    scan_path: str
    shape: tuple[int, int]
    spacing_um: float
    created: str
    flags: tuple[Flag, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FlaggedExhibit:
    """An exhibit stored by an ingest although its preparation noted problems."""

    name: str
    exhibit_id: int
    flags: tuple[Flag, ...]


@dataclass
class IngestReport:
    """What a batch ingest did.

    Attributes
    ----------
    ingested : list of int
        New exhibit ids, flagged ones included.
    duplicates : list of (name, exhibit id)
        Scans already stored (same file or same prepared scan); nothing was added.
    skipped : list of (name, reason)
        Every file that could not be used (unreadable, nothing measured, or flagged
        under ``strict=True``) and why.
    flagged : list of FlaggedExhibit
        Every exhibit of this batch stored with preparation flags, with the flags.
    new_leads : list of int
        Comparison ids of the leads this batch created.
    n_compared : int
        Full comparisons run.
    """

    ingested: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    flagged: list[FlaggedExhibit] = field(default_factory=list)
    new_leads: list[int] = field(default_factory=list)
    n_compared: int = 0

    def counts(self) -> dict[str, int]:
        """How many of each: the summary line of a batch."""
        return {
            "ingested": len(self.ingested),
            "flagged": len(self.flagged),
            "duplicates": len(self.duplicates),
            "skipped": len(self.skipped),
            "compared": self.n_compared,
            "new_leads": len(self.new_leads),
        }

    def as_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts()}


@dataclass
class CheckReport:
    """Result of `LeadDatabase.check`: ``ok`` is False when any problem was found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, **asdict(self)}


@dataclass
class AuditReport:
    """Result of `LeadDatabase.verify_audit`."""

    ok: bool
    n_records: int
    head: str
    first_bad: int | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class _Outcome(NamedTuple):
    """What `LeadDatabase._ingest_one` did with one item."""

    exhibit_id: int
    duplicate: bool
    n_compared: int = 0
    leads: Sequence[int] = ()
    flags: tuple[Flag, ...] = ()


def _audit_hash(prev: str, seq: int, time: str, who: str, action: str, detail: str) -> str:
    payload = json.dumps([prev, seq, time, who, action, detail], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _pose(comparison) -> tuple[float, float, float]:
    rot = getattr(comparison, "rotation_deg", None)
    tr = getattr(comparison, "translation_um", None)
    if tr is None:
        dy = dx = None
    else:
        dy, dx = (float(v) for v in tr)
    return (None if rot is None else float(rot)), dy, dx


def _default_prepare(scan: Scan) -> Scan:
    """`balllink.preprocess.prepare_if_needed` (imported on first use)."""
    from .preprocessing import prepare_if_needed

    return prepare_if_needed(scan)


def _prepared_flags(scan: Scan, prep: Scan) -> tuple[Flag, ...]:
    """The flags an exhibit keeps: those of its preparation, less ``auto_prepared`` when
    the input never claimed to be prepared (preparing a raw scan is the database's job,
    not a doubt about the scan; the stored scan's ``meta`` keeps the full list)."""
    from .preprocessing import flags_of

    flags = _as_flags(flags_of(prep))
    if not isinstance(scan.meta.get("prepared"), Mapping):
        flags = tuple(f for f in flags if f.code != "auto_prepared")
    return flags


def _stored_flags(text: str | None) -> tuple[Flag, ...]:
    """Flags from the ``exhibits.flags`` column (JSON)."""
    if not text:
        return ()
    try:
        return _as_flags(json.loads(text))
    except ValueError:
        return (Flag("flags_unreadable", f"stored flags are not JSON: {text[:80]!r}"),)


def _default_read(path) -> Scan:
    from .io import read_scan

    return read_scan(path)


def _default_compare_many(query: Scan, candidates: Sequence[Scan]) -> list:
    from .comparison import compare_many

    return compare_many(query, list(candidates))


def _default_index():
    from .index import CasingIndex

    return CasingIndex


class LeadDatabase:
    """The embedded lead database (a folder; created if missing).

    Parameters
    ----------
    path : str or Path
        The database folder (``leads.db`` in the examples). Created when missing.
    threshold : float, optional
        Lead threshold on the comparison score; when given it is stored in the database
        (see `set_threshold`). Default: the stored one, else the shipped threshold of the
        compare stage (`balllink.leads.default_threshold`), the one measured on real data.
    rescore_k : int
        On ingest, the new exhibit is compared in full with at most this many candidates
        found by the index among the exhibits in scope (all of them when there are fewer).
    user : str, optional
        Who is recorded in the audit trail (default: ``BALLLINK_USER`` or the login name).
    reader, preparer : callable, optional
        ``reader(path) -> Scan`` and ``preparer(scan) -> Scan``; default `read_scan` and
        `balllink.preprocess.prepare_if_needed` (`preprocess`, skipped for scans already
        prepared). Problems the preparer notes in ``meta["prepared"]["flags"]`` are kept
        with the exhibit (`Exhibit.flags`) and shown with its candidates and leads.
    strict : bool
        False (default): a flagged scan is stored, flagged and compared; only files that
        cannot be read or hold nothing usable are skipped. True: flagged scans are
        skipped too, with their flags as the reason (`ingest_many` takes it per batch).
    comparer : callable, optional
        ``comparer(query, candidates) -> list`` of objects with ``score``, ``cmc_count``,
        ``rotation_deg`` and ``translation_um``; default `compare_many`. Tests inject a fake
        one here while the real stage is not available.
    index_class : class, optional
        The candidate index: ``index_class()`` makes an empty one, ``index_class.load(path)``
        reads one; instances provide ``add(ids, scans)``, ``search(scans, k)``,
        ``remove(ids)``, ``save(path)`` and ``len()``. Default `CasingIndex`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with LeadDatabase(tmp + "/leads.db") as db:
    ...         print(len(db.exhibits()), db.check().ok, db.verify_audit().ok)
    0 True True
    """

    def __init__(
        self,
        path,
        *,
        threshold: float | None = None,
        rescore_k: int = 50,
        user: str | None = None,
        reader: Callable | None = None,
        preparer: Callable | None = None,
        comparer: Callable | None = None,
        index_class=None,
        cache_scans: int = 256,
        strict: bool = False,
    ):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DatabaseError(
                f"{self.path}: a lead database is a folder, but this is a file; "
                "give a folder path (it is created when missing)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "scans").mkdir(exist_ok=True)
        if int(rescore_k) < 1:
            raise ValueError(f"rescore_k must be >= 1, got {rescore_k}")
        self.rescore_k = int(rescore_k)
        self.strict = bool(strict)
        self.user = user or os.environ.get("BALLLINK_USER") or _login()
        self._read = reader or _default_read
        self._prepare = preparer or _default_prepare
        self._compare_many = comparer or _default_compare_many
        self._index_class = index_class
        self._lock = WriteLock(self.path / "write.lock")
        self._cache: OrderedDict[int, Scan] = OrderedDict()
        self._cache_size = int(cache_scans)
        self._index = None
        self._indexed: set[int] = set()
        self._index_dirty = False
        self._pending: list[tuple[int, Scan]] = []  # stored, not yet indexed (bulk loads)
        self._null_cache: tuple[tuple, np.ndarray] | None = None
        self._con = _db_schema.connect(str(self.path / SQLITE_NAME))
        _db_schema.ensure_schema(self._con, str(self.path))
        stored = self._sql().execute("SELECT value FROM settings WHERE key='threshold'")
        stored = stored.fetchone()
        if threshold is not None:
            self.set_threshold(threshold)
        elif stored is not None:
            self.threshold = float(stored[0])
        else:
            self.threshold = default_threshold()

    def set_threshold(self, threshold: float) -> None:
        """Set this database's lead threshold (kept in the database, audited).

        Without it the shipped default applies (`balllink.leads.default_threshold`);
        `leads` and `series` also take a threshold per call.
        """
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.threshold = threshold
        row = self._sql().execute("SELECT value FROM settings WHERE key='threshold'").fetchone()
        if row is not None and float(row[0]) == threshold:
            return
        with self._tx():
            self._sql().execute(
                "INSERT OR REPLACE INTO settings VALUES ('threshold', ?)", (repr(threshold),)
            )
            self._audit("threshold", threshold=threshold)

    # ------------------------------------------------------------------ basics
    @property
    def sqlite_path(self) -> Path:
        return self.path / SQLITE_NAME

    @property
    def scan_dir(self) -> Path:
        return self.path / "scans"

    def __enter__(self) -> LeadDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LeadDatabase({str(self.path)!r}, exhibits={self.count()})"

    def close(self) -> None:
        """Save the index when it changed (unless another process is writing: then the
        writer saves it), then close the SQLite connection."""
        if self._con is None:
            return
        try:
            if self._index_dirty or self._pending:
                self._save_index(blocking=self._lock.held)
        finally:
            self._con.close()
            self._con = None

    def _sql(self) -> sqlite3.Connection:
        if self._con is None:
            raise DatabaseError(f"{self.path}: the lead database is closed")
        return self._con

    def _tx(self):
        return _Transaction(self._sql())

    def count(self) -> int:
        """Number of exhibits."""
        return int(self._sql().execute("SELECT count(*) FROM exhibits").fetchone()[0])

    # ------------------------------------------------------------------ audit
    def _audit(self, action: str, **detail: Any) -> None:
        """Append one hash-chained audit record (call inside a transaction)."""
        con = self._sql()
        row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, "0" * 64) if row is None else (row["seq"] + 1, row["hash"])
        time = _now()
        text = json.dumps(detail, sort_keys=True, default=str, separators=(",", ":"))
        digest = _audit_hash(prev, seq, time, self.user, action, text)
        con.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, time, self.user, action, text, prev, digest),
        )
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES ('audit_head', ?)",
            (json.dumps([seq, digest]),),
        )

    def log_event(self, action: str, **detail: Any) -> None:
        """Record an event (an export, a report) in the audit trail.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     db.log_event("export", what="leads", format="csv")
        ...     db.audit()[-1]["action"]
        'export'
        """
        with self._tx():
            self._audit(action, **detail)

    def audit(self, *, since: str | None = None) -> list[dict]:
        """The audit trail, oldest first: seq, time, who, action, detail (dict)."""
        sql = "SELECT * FROM audit"
        params: list = []
        if since:
            sql += " WHERE time >= ?"
            params.append(since)
        rows = self._sql().execute(sql + " ORDER BY seq", params).fetchall()
        return [
            {
                "seq": r["seq"],
                "time": r["time"],
                "who": r["who"],
                "action": r["action"],
                "detail": json.loads(r["detail"]),
                "hash": r["hash"],
            }
            for r in rows
        ]

    def verify_audit(self) -> AuditReport:
        """Walk the hash chain of the audit trail; report the first broken record.

        An edited record no longer matches its hash; a deleted record breaks the sequence
        and the chain; a deleted tail no longer matches the head kept in ``settings``.
        (Keep `AuditReport.head` somewhere else too to detect a rewrite of everything.)
        """
        con = self._sql()
        prev = "0" * 64
        n = 0
        for n, r in enumerate(con.execute("SELECT * FROM audit ORDER BY seq"), start=1):
            if r["seq"] != n:
                return AuditReport(False, n - 1, prev, r["seq"], f"record {n} is missing")
            if r["prev_hash"] != prev:
                return AuditReport(False, n - 1, prev, n, "chain broken before this record")
            digest = _audit_hash(prev, n, r["time"], r["who"], r["action"], r["detail"])
            if digest != r["hash"]:
                return AuditReport(False, n - 1, prev, n, "record was edited (hash mismatch)")
            prev = digest
        head = con.execute("SELECT value FROM settings WHERE key='audit_head'").fetchone()
        if head is not None:
            seq, digest = json.loads(head["value"])
            if (seq, digest) != (n, prev):
                return AuditReport(
                    False, n, prev, n + 1, f"head says {seq} records, the trail holds {n}"
                )
        elif n:
            return AuditReport(False, n, prev, None, "audit head record is missing")
        return AuditReport(True, n, prev)

    # ------------------------------------------------------------------ exhibits
    def _exhibit(self, row: sqlite3.Row) -> Exhibit:
        return Exhibit(
            id=row["id"],
            **{k: row[k] for k in _FIELDS},
            source=row["source"],
            source_hash=row["source_hash"],
            scan_hash=row["scan_hash"],
            scan_path=str(self.scan_dir / row["scan_file"]),
            shape=(row["ny"], row["nx"]),
            spacing_um=row["spacing_um"],
            created=row["created"],
            flags=_stored_flags(row["flags"]),
        )

    def exhibit(self, exhibit_id: int) -> Exhibit:
        """One exhibit by id; `DatabaseError` when there is none."""
        row = self._sql().execute("SELECT * FROM exhibits WHERE id=?", (int(exhibit_id),))
        row = row.fetchone()
        if row is None:
            raise DatabaseError(f"{self.path}: no exhibit with id {exhibit_id}")
        return self._exhibit(row)

    def exhibits(
        self, scope=None, *, case_id: str | None = None, flagged: bool | None = None
    ) -> list[Exhibit]:
        """Exhibits in a scope (see `Scope`; ``max_rescore`` is ignored), oldest first.

        ``flagged=True`` keeps only exhibits with preparation flags, False only those
        without.
        """
        where, params = Scope.coerce(scope).where()
        if case_id is not None:
            where += " AND case_id = ?"
            params.append(case_id)
        if flagged is not None:
            where += " AND flags != '[]'" if flagged else " AND flags = '[]'"
        rows = self._sql().execute(f"SELECT * FROM exhibits WHERE {where} ORDER BY id", params)
        return [self._exhibit(r) for r in rows]

    def scan(self, exhibit_id: int) -> Scan:
        """The stored prepared scan of an exhibit (cached)."""
        exhibit_id = int(exhibit_id)
        if exhibit_id in self._cache:
            self._cache.move_to_end(exhibit_id)
            return self._cache[exhibit_id]
        row = self._sql().execute("SELECT scan_file FROM exhibits WHERE id=?", (exhibit_id,))
        row = row.fetchone()
        if row is None:
            raise DatabaseError(f"{self.path}: no exhibit with id {exhibit_id}")
        scan = load_scan(self.scan_dir / row["scan_file"])
        self._remember(exhibit_id, scan)
        return scan

    def _remember(self, exhibit_id: int, scan: Scan) -> None:
        """Keep a prepared scan in the bounded LRU cache."""
        self._cache[exhibit_id] = scan
        self._cache.move_to_end(exhibit_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ index
    @property
    def index(self):
        """The candidate index, opened (and brought up to date) on first use."""
        if self._index is None:
            self._pending.clear()  # the index opened from disk catches up from SQLite
            self._open_index()
        else:
            self._flush_pending()
            self._catch_up()
        return self._index

    def _flush_pending(self) -> None:
        if self._pending and self._index is not None:
            ids, scans = zip(*self._pending)
            self._pending.clear()
            self._index_add(list(ids), list(scans))

    def _index_cls(self):
        return self._index_class if self._index_class is not None else _default_index()

    def _index_files(self) -> tuple[Path, Path, Path]:
        return self.path / "index.faiss", self.path / "index.ids.npy", self.path / "index.json"

    def _open_index(self) -> None:
        data, ids_path, manifest_path = self._index_files()
        n_exhibits = self.count()
        cls = self._index_cls()
        try:
            if not manifest_path.exists():
                if n_exhibits == 0:
                    self._index, self._indexed = cls(), set()
                    return
                raise DatabaseError("the index manifest is missing")
            manifest = json.loads(manifest_path.read_text())
            for p, key in ((data, "sha256"), (ids_path, "ids_sha256")):
                if not p.exists():
                    raise DatabaseError(f"{p.name} is missing")
                if file_sha256(p) != manifest[key]:
                    raise DatabaseError(f"{p.name} does not match its manifest (damaged)")
            index = cls.load(str(data))
            ids = np.load(ids_path, allow_pickle=False)
            if len(index) != ids.size:
                raise DatabaseError(f"index holds {len(index)} casings, manifest {ids.size}")
        except Exception as exc:  # any damage: the index is a cache, rebuild it
            msg = (
                f"{self.path}: candidate index unusable ({exc}); rebuilding it from "
                f"{n_exhibits} stored scans"
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
            self.rebuild_index()
            return
        self._index, self._indexed = index, set(ids.tolist())
        self._catch_up()

    def _catch_up(self) -> None:
        """Add exhibits the index lacks (committed after its last save); drop extras."""
        con = self._sql()
        n = con.execute("SELECT count(*) FROM exhibits").fetchone()[0]
        if n == len(self._indexed):
            return
        ids = {r[0] for r in con.execute("SELECT id FROM exhibits")}
        extra = sorted(self._indexed - ids)
        missing = sorted(ids - self._indexed)
        if extra:
            self._index.remove(np.asarray(extra, dtype=np.int64))
            self._indexed -= set(extra)
        if missing:
            log.info("%s: adding %d exhibits to the index", self.path, len(missing))
            self._index_add(missing)
        self._index_dirty = True

    def _index_add(self, ids: Sequence[int], scans: Sequence[Scan] | None = None, *, batch=256):
        for start in range(0, len(ids), batch):
            chunk = list(ids[start : start + batch])
            preps = (
                list(scans[start : start + batch])
                if scans is not None
                else [self.scan(i) for i in chunk]
            )
            self._index.add(np.asarray(chunk, dtype=np.int64), preps)
            self._indexed.update(int(i) for i in chunk)
        self._index_dirty = True

    def rebuild_index(self, *, progress: Callable | None = None) -> None:
        """Rebuild the candidate index from the stored scans and save it (when writable)."""
        self._index, self._indexed = self._index_cls()(), set()
        ids = [r[0] for r in self._sql().execute("SELECT id FROM exhibits ORDER BY id")]
        for start in range(0, len(ids), 256):
            self._index_add(ids[start : start + 256])
            if progress is not None:
                progress(min(start + 256, len(ids)), len(ids))
        self._index_dirty = True
        self._save_index(blocking=False)

    def _save_index(self, *, blocking: bool = True) -> bool:
        """Write index, ids and manifest atomically; only the lock holder writes."""
        if self._index is None:
            return False
        self._flush_pending()
        if not self._lock.acquire(blocking=blocking):
            log.info("%s: another process writes; index kept in memory", self.path)
            return False
        try:
            data, ids_path, manifest_path = self._index_files()
            ids = np.asarray(sorted(self._indexed), dtype=np.int64)
            # the manifest goes last: until it is replaced, the old trio stays consistent
            # (a mismatch after a crash between the renames only triggers a rebuild)
            with atomic_path(data) as tmp, atomic_path(ids_path) as tmp_ids:
                self._index.save(str(tmp))
                with open(tmp_ids, "wb") as fh:
                    np.save(fh, ids)
                manifest = {
                    "sha256": file_sha256(tmp),
                    "ids_sha256": file_sha256(tmp_ids),
                    "n": int(ids.size),
                    "saved": _now(),
                }
            atomic_write(manifest_path, json.dumps(manifest).encode())
            self._index_dirty = False
            return True
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ ingest
    def _source(self, item) -> tuple[Scan, str | None, str]:
        if isinstance(item, Scan):
            return item, item.source, scan_sha256(item)
        path = Path(item)
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise DatabaseError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return None, str(path), digest

    def _fields(self, fields: Mapping[str, Any], source: str | None, digest: str) -> dict:
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown exhibit field(s) {sorted(unknown)}; use {list(_FIELDS)}")
        out = {k: fields.get(k) for k in _FIELDS}
        for k in _FIELDS:
            if isinstance(out[k], str) and not out[k].strip():
                out[k] = None
        out["kind"] = out["kind"] or "crime_scene"
        if out["kind"] not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {out['kind']!r}")
        out["agency"] = str(out["agency"] or "unknown")
        if out["case_id"] is None:
            out["case_id"] = Path(source).stem if source else f"exhibit-{digest[:12]}"
        out["case_id"] = str(out["case_id"])
        out["occurred"] = _date(out["occurred"])
        for k in ("lat", "lon"):
            if out[k] is not None:
                out[k] = float(out[k])
        if out["lat"] is not None and not -90 <= out["lat"] <= 90:
            raise ValueError(f"lat must lie in [-90, 90], got {out['lat']}")
        if out["lon"] is not None and not -180 <= out["lon"] <= 180:
            raise ValueError(f"lon must lie in [-180, 180], got {out['lon']}")
        for k in ("make", "model", "serial", "caliber", "notes"):
            if out[k] is not None:
                out[k] = str(out[k])
        return out

    def _find(self, source_hash: str, scan_hash: str | None = None) -> int | None:
        con = self._sql()
        row = con.execute("SELECT id FROM exhibits WHERE source_hash=?", (source_hash,))
        row = row.fetchone()
        if row is None and scan_hash is not None:
            row = con.execute("SELECT id FROM exhibits WHERE scan_hash=?", (scan_hash,))
            row = row.fetchone()
        return None if row is None else int(row[0])

    def ingest(
        self, scan_or_path, *, correlate=True, scope=None, strict: bool | None = None, **fields
    ) -> int:
        """Add one casing, correlate it against the exhibits in scope, store any leads.

        Parameters
        ----------
        scan_or_path : Scan or path
            A scan (raw or prepared) or a scan file.
        correlate : bool
            Compare the new exhibit with its candidates (default). False only stores it
            (bulk loading of an archive).
        scope : Scope or dict, optional
            Which existing exhibits it is correlated against (default: all; at most
            ``rescore_k`` of them, the best the index finds, get the full comparison).
        strict : bool, optional
            Refuse a scan whose preparation was flagged (default: the database's
            ``strict``, False: such a scan is stored with its flags, see `Exhibit.flags`).
        **fields
            ``case_id``, ``agency``, ``kind`` (``crime_scene`` | ``test_fire``), ``make``,
            ``model``, ``serial``, ``occurred`` (ISO date), ``lat``, ``lon``, ``caliber``,
            ``notes``.

        Returns
        -------
        int
            The exhibit id; the existing one when this scan is already stored (same
            content hash), in which case nothing is added.

        Raises
        ------
        DatabaseError
            When the scan cannot be used (unreadable, nothing measured, or flagged while
            ``strict``), with the reason.
        """
        report = self.ingest_many(
            [(scan_or_path, fields)], correlate=correlate, scope=scope, strict=strict
        )
        if report.skipped:
            raise DatabaseError(f"{report.skipped[0][0]}: {report.skipped[0][1]}")
        return (report.ingested or [report.duplicates[0][1]])[0]

    def ingest_many(
        self,
        items: Iterable,
        *,
        correlate: bool = True,
        scope=None,
        progress: Callable | None = None,
        save_every: int = 1000,
        strict: bool | None = None,
        **fields,
    ) -> IngestReport:
        """Ingest a batch: store every usable scan, flag the doubtful ones, go on past the
        unusable ones.

        A scan whose preparation noted problems (``meta["prepared"]["flags"]``: e.g. a
        poor ring fit on a scan already cut to its breech face) is stored, compared and
        listed in `IngestReport.flagged` with its flags. Files that cannot be read, and
        scans with nothing usable left, are listed in `IngestReport.skipped` with the
        reason; the batch goes on.

        Parameters
        ----------
        items : iterable
            Paths or scans, or ``(path_or_scan, fields_dict)`` pairs whose fields override
            the common ``**fields``.
        strict : bool, optional
            Skip flagged scans too, with their flags as the reason (default: the
            database's ``strict``, False).
        progress : callable, optional
            ``progress(done, total)`` after each item (total is None for an iterator).
        save_every : int
            Save the index after this many new exhibits, or a tenth of the index size if
            larger (it is saved at the end anyway; after a crash the exhibits it lacks are
            added back from the stored scans).

        Returns
        -------
        IngestReport

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> z = np.random.default_rng(0).normal(size=(32, 32))
        >>> ok = {"prepared": {"ok": True}}
        >>> doubtful = {"prepared": {"ok": True, "flags": [
        ...     {"code": "ring_irregular", "message": "ring fit quality 0.31"}]}}
        >>> scans = [Scan(z, spacing_um=6.25, meta=ok, source="a.x3p"),
        ...          Scan(z[::-1], spacing_um=6.25, meta=doubtful, source="b.x3p"),
        ...          "missing.x3p"]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/leads.db") as db:
        ...         rep = db.ingest_many(scans, agency="PD1", correlate=False)
        ...         print(len(rep.ingested), [(f.name, f.flags[0].code) for f in rep.flagged])
        ...         print(rep.skipped[0][0], db.exhibit(rep.flagged[0].exhibit_id).flagged)
        2 [('b.x3p', 'ring_irregular')]
        missing.x3p True
        """
        strict = self.strict if strict is None else bool(strict)
        total = len(items) if hasattr(items, "__len__") else None  # iterators stay lazy
        report = IngestReport()
        scope = Scope.coerce(scope) if scope is not None else Scope(max_rescore=self.rescore_k)
        with self._lock:
            self._clean_temp()
            self.index  # noqa: B018 - open / catch up before the batch
            since_save = 0
            for done, item in enumerate(items, start=1):
                obj, extra = item if isinstance(item, tuple) else (item, {})
                merged = {**fields, **(extra or {})}
                name = obj.source or obj.name if isinstance(obj, Scan) else str(obj)
                try:
                    out = self._ingest_one(
                        obj, merged, correlate=correlate, scope=scope, strict=strict
                    )
                except (BalllinkError, OSError, ValueError) as exc:
                    log.warning("skipped %s: %s", name, exc)
                    report.skipped.append((name, str(exc)))
                else:
                    if out.duplicate:
                        report.duplicates.append((name, out.exhibit_id))
                    else:
                        report.ingested.append(out.exhibit_id)
                        if out.flags:
                            codes = ", ".join(f.code for f in out.flags)
                            log.warning("stored %s flagged (%s)", name, codes)
                            report.flagged.append(FlaggedExhibit(name, out.exhibit_id, out.flags))
                        report.n_compared += out.n_compared
                        report.new_leads += out.leads
                        since_save += 1
                        # saving rewrites the whole index: space the saves with its size
                        if since_save >= max(save_every, len(self._indexed) // 10):
                            self._save_index()
                            since_save = 0
                if progress is not None:
                    progress(done, total)
            if self._index_dirty or self._pending:
                self._save_index()
        return report

    def _clean_temp(self) -> None:
        for tmp in self.scan_dir.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)

    def _ingest_one(self, obj, fields, *, correlate, scope, strict: bool = False) -> _Outcome:
        scan, source, source_hash = self._source(obj)
        existing = self._find(source_hash)
        if existing is not None:
            return _Outcome(existing, True)
        values = self._fields(fields, source, source_hash)
        if scan is None:
            scan = self._read(source)
        prep = self._prepare(scan)
        if prep.n_valid == 0:
            raise PreprocessError(f"scan {prep.name}: nothing usable left after preparation")
        scan_hash = scan_sha256(prep)
        existing = self._find(source_hash, scan_hash)
        if existing is not None:
            return _Outcome(existing, True)
        flags = _prepared_flags(scan, prep)
        if strict and flags:
            raise PreprocessError(
                "refused under strict=True, its preparation was flagged: "
                + "; ".join(map(str, flags))
                + " (ingest without strict to store it flagged)"
            )
        rel = save_scan(prep, self.scan_dir, scan_hash)  # file first, row after
        comparisons, cand_ids = [], []
        if correlate and self.count():
            cand_ids, _, _ = self._candidates(prep, scope)
            if cand_ids:
                comparisons = self._compare_many(prep, [self.scan(i) for i in cand_ids])
        created = _now()
        with self._tx():
            con = self._sql()
            cur = con.execute(
                "INSERT INTO exhibits (case_id, agency, kind, make, model, serial, occurred, "
                "lat, lon, caliber, notes, source, source_hash, scan_hash, scan_file, ny, nx, "
                "spacing_um, n_valid, created, flags) VALUES (" + ",".join("?" * 21) + ")",
                (
                    *(values[k] for k in _FIELDS),
                    source,
                    source_hash,
                    scan_hash,
                    rel,
                    prep.shape[0],
                    prep.shape[1],
                    float(prep.spacing_um[1]),
                    prep.n_valid,
                    created,
                    _flags_json(flags),
                ),
            )
            eid = int(cur.lastrowid)
            leads = []
            cases = self._cases(cand_ids)
            for cid, cmp in zip(cand_ids, comparisons):
                rot, dy, dx = _pose(cmp)
                score = float(cmp.score)
                cur = con.execute(
                    "INSERT INTO comparisons (a, b, query, score, cmc_count, rotation_deg, "
                    "dy_um, dx_um, reason, created, mirrored) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        min(cid, eid),
                        max(cid, eid),
                        eid,
                        score if np.isfinite(score) else 0.0,
                        int(getattr(cmp, "cmc_count", 0) or 0),
                        rot,
                        dy,
                        dx,
                        getattr(cmp, "reason", None) or None,
                        created,
                        int(bool(getattr(cmp, "mirrored", False))),
                    ),
                )
                if score >= self.threshold and cases[cid] != values["case_id"]:
                    leads.append(int(cur.lastrowid))
            self._audit(
                "ingest",
                exhibit=eid,
                source=source,
                source_hash=source_hash,
                scan_hash=scan_hash,
                case_id=values["case_id"],
                agency=values["agency"],
                compared=len(comparisons),
                new_leads=leads,
                flags=[f.code for f in flags],
            )
        self._remember(eid, prep)
        if self._index is not None:
            if correlate:  # the next exhibit must find this one
                self._index_add([eid], [prep])
            else:  # bulk load: add in batches (adding one casing copies the pose table)
                self._pending.append((eid, prep))
                if len(self._pending) >= 1000:
                    self._flush_pending()
        return _Outcome(eid, False, len(comparisons), leads, flags)

    def _cases(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        q = ",".join("?" * len(ids))
        rows = self._sql().execute(f"SELECT id, case_id FROM exhibits WHERE id IN ({q})", ids)
        return {r[0]: r[1] for r in rows}

    # ------------------------------------------------------------------ search
    def _candidates(self, prep: Scan, scope: Scope, exclude: int | None = None):
        """(ids to rescore, retrieval scores or None, number in scope)."""
        where, params = scope.where()
        con = self._sql()
        in_scope = np.fromiter(
            (r[0] for r in con.execute(f"SELECT id FROM exhibits WHERE {where}", params)),
            dtype=np.int64,
        )
        if exclude is not None:
            in_scope = in_scope[in_scope != exclude]
        n_in = int(in_scope.size)
        limit = int(scope.max_rescore)
        if n_in <= limit:
            return in_scope.tolist(), None, n_in
        index = self.index
        allowed = set(in_scope.tolist())
        k = min(len(index), max(4 * limit, 64))
        while True:
            ids, scores = index.search([prep], k)
            ids, scores = np.asarray(ids)[0], np.asarray(scores)[0]
            keep = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0 and i in allowed]
            if len(keep) >= limit or k >= len(index):
                break
            k = min(len(index), k * 4)
        keep = keep[:limit]
        return [i for i, _ in keep], [s for _, s in keep], n_in

    def _null_scores(self) -> np.ndarray:
        """Scores of pairs taken as non-matches: below the threshold and not confirmed,
        or rejected by an examiner. Cached until comparisons or statuses change."""
        con = self._sql()
        row = con.execute(
            "SELECT (SELECT max(id) FROM comparisons), (SELECT max(id) FROM lead_status)"
        ).fetchone()
        key = (row[0], row[1], self.threshold)
        if self._null_cache is not None and self._null_cache[0] == key:
            return self._null_cache[1]
        rows = con.execute(
            f"SELECT c.score FROM comparisons c LEFT JOIN ({_LATEST}) s ON s.lead = c.id "
            "WHERE (c.score < ? AND coalesce(s.status, '') != 'confirmed') "
            "OR s.status = 'rejected'",
            (self.threshold,),
        )
        null = np.sort(np.fromiter((r[0] for r in rows), dtype=np.float64))
        self._null_cache = (key, null)
        return null

    def search(self, exhibit_or_scan, k: int = 10, *, scope=None) -> SearchResult:
        """Ranked, rescored candidates for an exhibit id, a scan or a scan file.

        Parameters
        ----------
        exhibit_or_scan : int, Scan or path
            A stored exhibit (excluded from its own list), or a new scan (prepared here).
        k : int
            Length of the returned list.
        scope : Scope or dict, optional
            Agencies, date range, caliber, kind, bounding box and ``max_rescore`` (the
            number of candidates compared in full; default ``max(k, rescore_k)``).

        Returns
        -------
        SearchResult
            Candidates best first with score, CMC count, pose, ``p_chance`` (share of
            the database's non-match scores at least as high), ``mirrored`` and the
            candidate's preparation ``flags``, plus ``n_in_scope``, ``n_rescored`` and
            the query's own ``query_flags``.
        """
        if scope is None:
            scope = Scope(max_rescore=max(int(k), self.rescore_k))
        scope = Scope.coerce(scope)
        query_id = None
        if isinstance(exhibit_or_scan, int | np.integer):
            query_id = int(exhibit_or_scan)
            prep = self.scan(query_id)
            label = f"exhibit {query_id}"
            query_flags = self.exhibit(query_id).flags
        else:
            scan = exhibit_or_scan
            if not isinstance(scan, Scan):
                label = str(scan)
                scan = self._read(scan)
            else:
                label = scan.source or scan.name
            prep = self._prepare(scan)
            query_flags = _prepared_flags(scan, prep)
        ids, retrieval, n_in = self._candidates(prep, scope, exclude=query_id)
        comps = self._compare_many(prep, [self.scan(i) for i in ids]) if ids else []
        null = self._null_scores()
        info = {
            r[0]: r
            for r in self._sql().execute(
                "SELECT id, case_id, agency, flags FROM exhibits "
                f"WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        rows = []
        for j, (eid, cmp) in enumerate(zip(ids, comps)):
            rot, dy, dx = _pose(cmp)
            score = float(cmp.score) if np.isfinite(cmp.score) else 0.0
            rows.append(
                Candidate(
                    rank=0,
                    exhibit_id=eid,
                    score=score,
                    cmc_count=int(getattr(cmp, "cmc_count", 0) or 0),
                    rotation_deg=rot,
                    translation_um=(dy, dx),
                    p_chance=chance_probability(score, null),
                    case_id=info[eid]["case_id"],
                    agency=info[eid]["agency"],
                    retrieval_score=None if retrieval is None else retrieval[j],
                    mirrored=bool(getattr(cmp, "mirrored", False)),
                    flags=_stored_flags(info[eid]["flags"]),
                )
            )
        rows.sort(key=lambda c: (-c.score, -c.cmc_count, c.exhibit_id))
        cands = [replace(c, rank=n + 1) for n, c in enumerate(rows[: int(k)])]
        with self._tx():
            self._audit(
                "search",
                query=label,
                k=int(k),
                n_in_scope=n_in,
                n_rescored=len(ids),
                top=[c.exhibit_id for c in cands],
            )
        return SearchResult(
            cands, n_in, len(ids), query_id, self.threshold, scope, tuple(query_flags)
        )

    # ------------------------------------------------------------------ leads
    def leads(
        self,
        threshold: float | None = None,
        *,
        since: str | None = None,
        status: str | Sequence[str] | None = None,
        cross_only: bool = False,
        agencies: Sequence[str] | None = None,
        _lead_id: int | None = None,
    ) -> list[Lead]:
        """Lead pairs: compared exhibits of different cases scoring at least ``threshold``
        (default: the database's), plus pairs an examiner confirmed; best first.

        Each `Lead` carries the preparation flags of both exhibits (``flags_a``,
        ``flags_b``; ``flagged`` when either has some) and whether ``b`` was compared as
        its mirror image (``mirrored``).

        Parameters
        ----------
        since : str, optional
            Only leads created at or after this ISO date/time.
        status : str or list, optional
            Only leads in these statuses (``new``, ``confirmed``, ``rejected``).
        cross_only : bool
            Only cross-jurisdiction leads (the two agencies differ).
        agencies : list of str, optional
            Only leads involving one of these agencies.
        """
        thr = self.threshold if threshold is None else float(threshold)
        sql = (
            "SELECT c.id, c.a, c.b, c.score, c.cmc_count, c.created, c.mirrored, "
            "ea.agency AS agency_a, eb.agency AS agency_b, ea.case_id AS case_a, "
            "eb.case_id AS case_b, ea.flags AS flags_a, eb.flags AS flags_b, "
            "s.status, s.examiner, s.time AS status_time "
            "FROM comparisons c JOIN exhibits ea ON ea.id = c.a JOIN exhibits eb ON eb.id = c.b "
            f"LEFT JOIN ({_LATEST}) s ON s.lead = c.id "
            "WHERE ea.case_id != eb.case_id AND (c.score >= ? OR s.status = 'confirmed')"
        )
        params: list = [thr]
        if _lead_id is not None:
            sql += " AND c.id = ?"
            params.append(int(_lead_id))
        if since:
            sql += " AND c.created >= ?"
            params.append(str(since))
        if cross_only:
            sql += " AND ea.agency != eb.agency"
        if agencies:
            agencies = [agencies] if isinstance(agencies, str) else list(agencies)
            q = ",".join("?" * len(agencies))
            sql += f" AND (ea.agency IN ({q}) OR eb.agency IN ({q}))"
            params += agencies + agencies
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            bad = set(statuses) - set(STATUSES)
            if bad:
                raise ValueError(f"unknown lead status {sorted(bad)}; use {STATUSES}")
            sql += f" AND coalesce(s.status, 'new') IN ({','.join('?' * len(statuses))})"
            params += statuses
        sql += " ORDER BY c.score DESC, c.id"
        return [
            Lead(
                id=r["id"],
                a=r["a"],
                b=r["b"],
                score=r["score"],
                cmc_count=r["cmc_count"],
                agency_a=r["agency_a"],
                agency_b=r["agency_b"],
                case_a=r["case_a"],
                case_b=r["case_b"],
                cross_jurisdiction=r["agency_a"] != r["agency_b"],
                status=r["status"] or "new",
                examiner=r["examiner"],
                status_time=r["status_time"],
                created=r["created"],
                mirrored=None if r["mirrored"] is None else bool(r["mirrored"]),
                flags_a=_stored_flags(r["flags_a"]),
                flags_b=_stored_flags(r["flags_b"]),
            )
            for r in self._sql().execute(sql, params)
        ]

    def lead(self, lead_id: int) -> Lead:
        """One lead (any compared pair of different cases) by id."""
        found = self.leads(threshold=-np.inf, _lead_id=int(lead_id))
        if found:
            return found[0]
        raise DatabaseError(f"{self.path}: no lead with id {lead_id}")

    def comparison(self, a: int, b: int) -> dict | None:
        """The stored comparison of two exhibits (either order), or None.

        A dict of the ``comparisons`` row: ``score``, ``cmc_count``, the pose of the
        ``query`` exhibit's comparison, ``reason``, ``mirrored`` (1 when compared with
        opposite handedness, None when compared before it was recorded), ``created``.
        """
        lo, hi = sorted((int(a), int(b)))
        row = self._sql().execute("SELECT * FROM comparisons WHERE a=? AND b=?", (lo, hi))
        row = row.fetchone()
        return None if row is None else dict(row)

    def set_status(
        self, lead_id: int, status: str, *, examiner: str, note: str | None = None
    ) -> None:
        """Move a lead through the workflow: ``new``, ``confirmed`` or ``rejected``.

        The examiner and the time are kept (and audited); the latest status counts.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not examiner or not str(examiner).strip():
            raise ValueError("a status change needs the examiner's name (examiner=...)")
        with self._tx():
            row = self._sql().execute("SELECT a, b FROM comparisons WHERE id=?", (int(lead_id),))
            row = row.fetchone()
            if row is None:
                raise DatabaseError(f"{self.path}: no lead with id {lead_id}")
            time = _now()
            self._sql().execute(
                "INSERT INTO lead_status (lead, status, examiner, time, note) VALUES (?,?,?,?,?)",
                (int(lead_id), status, str(examiner), time, note),
            )
            self._audit(
                "status",
                lead=int(lead_id),
                a=row["a"],
                b=row["b"],
                status=status,
                examiner=str(examiner),
                note=note,
            )

    def series(self, threshold: float | None = None) -> list[Series]:
        """Connected groups of exhibits joined by leads or confirmations (rejected leads
        do not join): one gun, several shootings. Largest first."""
        leads = [lead for lead in self.leads(threshold) if lead.status != "rejected"]
        groups = find_series((lead.a, lead.b) for lead in leads)
        member = {e: n for n, g in enumerate(groups) for e in g}
        lead_ids: dict[int, list[int]] = {}
        for lead in leads:
            lead_ids.setdefault(member[lead.a], []).append(lead.id)
        out = []
        for n, group in enumerate(groups):
            exs = [self.exhibit(e) for e in group]
            dates = sorted(e.occurred for e in exs if e.occurred)
            out.append(
                Series(
                    exhibits=tuple(group),
                    cases=tuple(sorted({e.case_id for e in exs})),
                    agencies=tuple(sorted({e.agency for e in exs})),
                    first=dates[0] if dates else None,
                    last=dates[-1] if dates else None,
                    places=tuple(
                        (e.lat, e.lon) for e in exs if e.lat is not None and e.lon is not None
                    ),
                    leads=tuple(sorted(lead_ids.get(n, []))),
                )
            )
        return out

    # ------------------------------------------------------------------ check
    def check(self, *, deep: bool = False) -> CheckReport:
        """Check that SQLite, the stored scans and the index agree, and the audit chain.

        Parameters
        ----------
        deep : bool
            Also re-hash every stored scan (reads them all).
        """
        rep = CheckReport()
        con = self._sql()
        res = con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in res] != ["ok"]:
            rep.problems += [f"SQLite: {r[0]}" for r in res]
        rows = con.execute("SELECT id, scan_hash, scan_file FROM exhibits").fetchall()
        rep.counts["exhibits"] = len(rows)
        rep.counts["comparisons"] = con.execute("SELECT count(*) FROM comparisons").fetchone()[0]
        rep.counts["flagged_exhibits"] = con.execute(
            "SELECT count(*) FROM exhibits WHERE flags != '[]'"
        ).fetchone()[0]
        referenced = set()
        for r in rows:
            path = self.scan_dir / r["scan_file"]
            referenced.add(path.resolve())
            if not path.exists():
                rep.problems.append(f"exhibit {r['id']}: stored scan {path} is missing")
            elif deep:
                try:
                    if scan_sha256(load_scan(path)) != r["scan_hash"]:
                        rep.problems.append(f"exhibit {r['id']}: stored scan {path} changed")
                except DatabaseError as exc:
                    rep.problems.append(f"exhibit {r['id']}: {exc}")
        orphans = [p for p in self.scan_dir.glob("*/*.npz") if p.resolve() not in referenced]
        if orphans:
            rep.warnings.append(
                f"{len(orphans)} stored scan(s) without exhibit (left by an interrupted "
                "ingest; reused when the ingest is run again)"
            )
        bad = con.execute(
            "SELECT count(*) FROM comparisons WHERE a NOT IN (SELECT id FROM exhibits) "
            "OR b NOT IN (SELECT id FROM exhibits)"
        ).fetchone()[0]
        if bad:
            rep.problems.append(f"{bad} comparison(s) refer to missing exhibits")
        try:
            index = self.index
            ids = {r["id"] for r in rows}
            if self._indexed != ids or len(index) != len(ids):
                rep.problems.append(
                    f"index holds {len(index)} casings, the database {len(ids)} exhibits"
                )
        except Exception as exc:
            rep.problems.append(f"index: {exc}")
        audit = self.verify_audit()
        rep.counts["audit_records"] = audit.n_records
        if not audit.ok:
            rep.problems.append(f"audit trail: {audit.reason} (record {audit.first_bad})")
        return rep


_LATEST = (
    "SELECT lead, status, examiner, time FROM lead_status "
    "WHERE id IN (SELECT max(id) FROM lead_status GROUP BY lead)"
)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error); one writer at a time."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.con.execute("COMMIT")
        else:
            self.con.execute("ROLLBACK")
        return False


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
