"""SQLite schema of the lead database, its version, its migrations, and the connection.

The schema version lives in the ``schema_version`` table (one row per applied version).
Opening a database written by an older balllink applies the migrations in order inside
one transaction; opening one written by a newer balllink is refused with a message that
says which version is needed. `Sql` is the open connection of one database; every write
goes through its ``BEGIN IMMEDIATE`` transaction (one writer at a time), and an SQLite
error inside it (a full disk, a damaged page) reaches the caller as one `DatabaseError`
naming the database, the transaction rolled back. Opened read-only (``mode=ro``, and
``immutable=1`` on storage that cannot be written), it refuses every transaction.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from .._files import file_mode_in
from ..errors import DatabaseError

__all__ = [
    "LATEST_STATUS",
    "LATEST_STATUS_JOIN",
    "SCHEMA_VERSION",
    "DiskFullError",
    "Sql",
    "connect",
    "ensure_schema",
    "is_disk_full",
    "now",
]


class DiskFullError(DatabaseError):
    """The disk (or quota) is full: nothing of the failed change was kept."""


def is_disk_full(exc: BaseException) -> bool:
    """True for an OS or SQLite error that means "no space left" (ENOSPC, EDQUOT, FULL)."""
    import errno

    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)
    return False


def _no_space(folder: str) -> bool:
    """True when the file system of ``folder`` has no free block left (an SQLite "disk I/O
    error" there is a full disk)."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        return False


def sqlite_failure(label: str, exc: sqlite3.Error, doing: str) -> DatabaseError:
    """One clear error for an SQLite failure while ``doing`` something to database ``label``."""
    if is_disk_full(exc) or ("I/O error" in str(exc) and _no_space(label)):
        return DiskFullError(
            f"{label}: the disk is full (trying to {doing}); nothing of it was kept. Free some "
            "space and run the command again"
        )
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace(" ", ""):
        return DatabaseError(f"{label}: cannot {doing}: the storage is read-only ({exc})")
    return DatabaseError(
        f"{label}: database file is damaged or unusable (trying to {doing}: {exc}); run "
        "'balllink check' and restore leads.sqlite from a backup if it reports damage"
    )


SCHEMA_VERSION = 5

_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exhibits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    agency TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('crime_scene', 'test_fire')),
    make TEXT,
    model TEXT,
    serial TEXT,
    occurred TEXT,
    lat REAL,
    lon REAL,
    caliber TEXT,
    notes TEXT,
    source TEXT,
    source_hash TEXT NOT NULL UNIQUE,
    scan_hash TEXT NOT NULL,
    scan_file TEXT NOT NULL,
    ny INTEGER NOT NULL,
    nx INTEGER NOT NULL,
    spacing_um REAL NOT NULL,
    n_valid INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exhibits_scan_hash ON exhibits (scan_hash);
CREATE INDEX IF NOT EXISTS exhibits_agency ON exhibits (agency);
CREATE INDEX IF NOT EXISTS exhibits_occurred ON exhibits (occurred);
CREATE INDEX IF NOT EXISTS exhibits_caliber ON exhibits (caliber);
CREATE INDEX IF NOT EXISTS exhibits_latlon ON exhibits (lat, lon);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    a INTEGER NOT NULL REFERENCES exhibits (id),
    b INTEGER NOT NULL REFERENCES exhibits (id),
    query INTEGER NOT NULL,
    score REAL NOT NULL,
    cmc_count INTEGER NOT NULL,
    rotation_deg REAL,
    dy_um REAL,
    dx_um REAL,
    reason TEXT,
    created TEXT NOT NULL,
    CHECK (a < b),
    UNIQUE (a, b)
);
CREATE INDEX IF NOT EXISTS comparisons_b ON comparisons (b);
CREATE INDEX IF NOT EXISTS comparisons_score ON comparisons (score);
CREATE TABLE IF NOT EXISTS lead_status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lead INTEGER NOT NULL REFERENCES comparisons (id),
    status TEXT NOT NULL CHECK (status IN ('new', 'confirmed', 'rejected')),
    examiner TEXT NOT NULL,
    time TEXT NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS lead_status_lead ON lead_status (lead);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

# Version 2: preparation flags per exhibit (JSON list of {"code", "message"}; '[]' for
# exhibits stored before, which were never flagged) and the handedness of each comparison
# (1 when b was compared as its mirror image; NULL for pairs compared before it was kept).
_V2 = """
ALTER TABLE exhibits ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE comparisons ADD COLUMN mirrored INTEGER CHECK (mirrored IN (0, 1));
"""

# Version 3: evidence integrity. Each stored scan's file bytes (SHA-256 and size, NULL for
# scans stored before), the row hashes each audit record commits to (``audit.rows``, NULL
# for records written before), and where that coverage starts (``audit_coverage``: the last
# audit record and the largest row ids and the threshold at migration; older rows are
# "not covered", not tampered).
_V3 = """
ALTER TABLE exhibits ADD COLUMN file_sha256 TEXT;
ALTER TABLE exhibits ADD COLUMN file_size INTEGER;
ALTER TABLE audit ADD COLUMN rows TEXT;
INSERT OR REPLACE INTO settings VALUES ('audit_coverage', json_object(
    'seq', (SELECT coalesce(max(seq), 0) FROM audit),
    'exhibits', (SELECT coalesce(max(id), 0) FROM exhibits),
    'comparisons', (SELECT coalesce(max(id), 0) FROM comparisons),
    'lead_status', (SELECT coalesce(max(id), 0) FROM lead_status),
    'threshold', (SELECT value FROM settings WHERE key = 'threshold')))
"""

# Version 4: likelihood ratios (issue 13). Each comparison keeps what its LR is computed
# from: the cells compared in both directions, the raw score and the coarser source
# spacing of the pair (NULL for comparisons stored before, and for comparers that report no
# cells: those keep the legacy score rule). ``lr`` holds the bounded log10 LR of each
# comparison under each model (`balllink.evidence.LRModel`, files under ``models/``):
# derived from the comparison's features and the model file, so recomputable and not
# covered by the audit rows (``check`` recomputes it).
_V4 = """
ALTER TABLE comparisons ADD COLUMN n_cells INTEGER;
ALTER TABLE comparisons ADD COLUMN raw_score REAL;
ALTER TABLE comparisons ADD COLUMN source_spacing_um REAL;
CREATE TABLE IF NOT EXISTS lr (
    comparison INTEGER NOT NULL REFERENCES comparisons (id),
    model TEXT NOT NULL,
    log10_lr REAL NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    in_range INTEGER NOT NULL CHECK (in_range IN (0, 1)),
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (comparison, model)
);
CREATE INDEX IF NOT EXISTS lr_model_value ON lr (model, log10_lr)
"""

# Version 5: review in the browser (issue 15). The reviewers (``users``: name, role, an
# Argon2id password hash, disabled) and the comments on leads (``comments``); both are
# covered by the audit trail like ``lead_status``.
_V5 = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('analyst', 'examiner', 'admin')),
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lead INTEGER NOT NULL REFERENCES comparisons (id),
    who TEXT NOT NULL,
    time TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_lead ON comments (lead)
"""

# version -> script that brings a database from version-1 to version. Version 1 creates.
# A script, once released, never changes: databases in the field were made with it.
_MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}


#: The latest status row of a comparison ``c`` as ``s`` (NULLs when it has none): one
#: indexed look-up per comparison. (Joining the `LATEST_STATUS` table instead made SQLite
#: scan every status for every comparison: 29 s for the leads of 1e4 exhibits.)
LATEST_STATUS_JOIN = (
    "LEFT JOIN lead_status s ON s.id = (SELECT max(id) FROM lead_status WHERE lead = c.id)"
)

#: The latest status row of each lead (the one that counts).
LATEST_STATUS = (
    "SELECT lead, status, examiner, time FROM lead_status "
    "WHERE id IN (SELECT max(id) FROM lead_status GROUP BY lead)"
)


def now() -> str:
    """The current UTC time as ISO text (microseconds): every time stamp of the database."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def connect(
    path: str, *, timeout: float = 60.0, readonly: bool = False, immutable: bool = False
) -> sqlite3.Connection:
    """Open the SQLite file in WAL mode with foreign keys on and manual transactions.

    ``readonly`` opens it with ``mode=ro`` (writes fail); ``immutable`` also tells SQLite
    that nobody changes the file (no lock, no ``-shm``: storage that cannot be written).
    """
    try:
        if readonly:
            if not os.path.isfile(path):
                raise DatabaseError(f"{path}: no lead database here (opened read-only)")
            query = "mode=ro" + ("&immutable=1" if immutable else "")
            uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"
            con = sqlite3.connect(uri, timeout=timeout, isolation_level=None, uri=True)
        else:
            con = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        con.row_factory = sqlite3.Row
        if not readonly:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == 26:  # SQLITE_NOTADB
            raise DatabaseError(f"{path}: not a balllink lead database ({exc})") from None
        raise sqlite_failure(str(Path(path).parent), exc, "open the lead database") from None
    return con


def current_version(con: sqlite3.Connection) -> int:
    """Schema version of an open database; 0 when it is empty."""
    has = con.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if has is None:
        others = con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
        if others[0]:
            raise DatabaseError(
                "the SQLite file holds tables but no schema_version table: "
                "it is not a balllink lead database"
            )
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def ensure_schema(con: sqlite3.Connection, path: str) -> int:
    """Create or migrate the schema to `SCHEMA_VERSION`; refuse newer databases."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{path}: lead database schema version {version} is newer than this balllink "
            f"understands (version {SCHEMA_VERSION}); upgrade balllink to open it"
        )
    if version == SCHEMA_VERSION:
        return version
    con.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(con)  # another process may have migrated meanwhile
        for v in range(version + 1, SCHEMA_VERSION + 1):
            if v not in _MIGRATIONS:
                raise DatabaseError(f"{path}: no migration from schema version {v - 1} to {v}")
            for statement in _MIGRATIONS[v].split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", (v, now()))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


class Sql:
    """The SQLite connection of one lead database, schema created or migrated on opening.

    Calling it gives the connection (`DatabaseError` once closed); `tx` is a write
    transaction (refused when ``readonly``). A new SQLite file (and its ``-wal``/``-shm``)
    gets the permissions of its folder (`balllink._files.file_mode_in`).
    """

    def __init__(self, path: Path, label: str, *, readonly: bool = False, immutable=False):
        self.label = label
        self.readonly = bool(readonly)
        new = not self.readonly and not Path(path).exists()
        self._con: sqlite3.Connection | None = connect(
            str(path), readonly=self.readonly, immutable=immutable
        )
        if new:
            _private_files(Path(path))
        try:
            if self.readonly:
                self._readonly_version()
            else:
                ensure_schema(self._con, label)
        except sqlite3.Error as exc:
            self.close()
            raise sqlite_failure(label, exc, "open the lead database") from None
        except BaseException:
            self.close()
            raise

    def _readonly_version(self) -> None:
        try:
            version = current_version(self._con)
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{self.label}: cannot read the lead database ({exc})") from None
        if version != SCHEMA_VERSION:
            raise DatabaseError(
                f"{self.label}: opened read-only, but the lead database "
                + ("is empty" if version == 0 else f"has schema version {version}")
                + f" and this balllink reads version {SCHEMA_VERSION}"
                + ("" if version > SCHEMA_VERSION else "; open it once with write access")
            )

    def require_writable(self, doing: str) -> None:
        """`DatabaseError` when the database was opened read-only."""
        if self.readonly:
            raise DatabaseError(
                f"{self.label}: opened read-only, cannot {doing} (open it without "
                "readonly=True, on storage that can be written)"
            )

    def __call__(self) -> sqlite3.Connection:
        if self._con is None:
            raise DatabaseError(f"{self.label}: the lead database is closed")
        return self._con

    @property
    def closed(self) -> bool:
        return self._con is None

    def tx(self, doing: str = "write") -> Transaction:
        """A write transaction; ``doing`` names the change in error messages."""
        self.require_writable(doing)
        return Transaction(self(), self.label, doing)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _private_files(sqlite: Path) -> None:
    """Give a new SQLite file and its ``-wal``/``-shm`` the permissions of their folder."""
    mode = file_mode_in(sqlite.parent)
    for f in (
        sqlite,
        sqlite.with_name(sqlite.name + "-wal"),
        sqlite.with_name(sqlite.name + "-shm"),
    ):
        try:
            os.chmod(f, mode)
        except FileNotFoundError:
            pass


class Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error); one writer at a time.

    An SQLite error (full disk, damaged page, read-only storage) leaves as one
    `DatabaseError` (`DiskFullError` for a full disk) naming the database; the
    transaction is rolled back, so nothing of it is kept.
    """

    def __init__(self, con: sqlite3.Connection, label: str = "", doing: str = "write"):
        self.con = con
        self.label, self.doing = label, doing

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise sqlite_failure(self.label, exc, self.doing) from exc
        return self.con

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self.con.execute("COMMIT")
                return False
        except sqlite3.Error as failure:
            self._rollback()
            raise sqlite_failure(self.label, failure, self.doing) from failure
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise sqlite_failure(self.label, exc, self.doing) from exc
        return False

    def _rollback(self) -> None:
        if self.con.in_transaction:
            try:
                self.con.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back itself (e.g. after SQLITE_FULL)
