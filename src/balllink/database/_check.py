"""Integrity check: SQLite, the stored scans, the candidate index and the audit chain agree."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._files import file_sha256
from ..errors import DatabaseError
from ._audit import AuditTrail
from ._exhibits import Exhibits
from ._index_cache import IndexCache
from ._schema import Sql
from ._store import ScanStore, load_scan

__all__ = ["CheckReport", "check", "orphaned"]


def _has_tables(sqlite_path: Path) -> bool:
    """Whether the SQLite file holds any table (read only; False when unreadable)."""
    try:
        con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            return bool(con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return True  # a damaged file is not an empty one: opening it says what is wrong


def orphaned(folder: Path, sqlite_path: Path, store: ScanStore) -> str | None:
    """What is wrong when the SQLite file is missing or empty (0 bytes, no tables) while the
    folder holds stored scans or a candidate index; None when the database is whole or new.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print(orphaned(Path(tmp), Path(tmp) / "leads.sqlite", ScanStore(Path(tmp) / "s")))
    None
    """
    folder, sqlite_path = Path(folder), Path(sqlite_path)
    if sqlite_path.exists() and sqlite_path.stat().st_size and _has_tables(sqlite_path):
        return None
    evidence = []
    n_scans = len(store.files())
    if n_scans:
        evidence.append(f"{n_scans} stored scan(s)")
    if any((folder / n).exists() for n in ("index.json", "index.faiss", "index.ids.npy")):
        evidence.append("a candidate index")
    if not evidence:
        return None
    state = "missing" if not sqlite_path.exists() else "empty"
    return (
        f"{folder}: the SQLite file {sqlite_path.name} is {state}, but the folder holds "
        f"{' and '.join(evidence)}: the lead database was deleted or emptied. Nothing was "
        f"changed. Restore {sqlite_path.name} (with {sqlite_path.name}-wal if there is one) "
        "from a backup; to start a new database, use another folder"
    )


@dataclass
class CheckReport:
    """Result of `LeadDatabase.check`: ``ok`` is False when any problem was found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, **asdict(self)}


def check(
    sql: Sql,
    exhibits: Exhibits,
    index: IndexCache,
    audit: AuditTrail,
    *,
    deep: bool = False,
    head: str | None = None,
) -> CheckReport:
    """The problems and warnings of one database (see `LeadDatabase.check`)."""
    rep = CheckReport()
    con = sql()
    try:  # a damaged page makes SQLite raise instead of listing the damage
        res = con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in res] != ["ok"]:
            rep.problems += [f"SQLite: {r[0]}" for r in res]
        rows = con.execute(
            "SELECT id, scan_hash, scan_file, file_sha256, file_size FROM exhibits"
        ).fetchall()
        rep.counts["exhibits"] = len(rows)
        rep.counts["comparisons"] = con.execute("SELECT count(*) FROM comparisons").fetchone()[0]
        rep.counts["flagged_exhibits"] = con.execute(
            "SELECT count(*) FROM exhibits WHERE flags != '[]'"
        ).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        rep.problems.append(
            f"database file is damaged: {exc} ({sql.label}/leads.sqlite; restore it from a "
            "backup: the stored scans and the audit trail cannot be checked against it)"
        )
        return rep
    _check_scans(rep, rows, exhibits, deep=deep)
    bad = con.execute(
        "SELECT count(*) FROM comparisons WHERE a NOT IN (SELECT id FROM exhibits) "
        "OR b NOT IN (SELECT id FROM exhibits)"
    ).fetchone()[0]
    if bad:
        rep.problems.append(f"{bad} comparison(s) refer to missing exhibits")
    try:
        opened = index.get()
        ids = {r["id"] for r in rows}
        if index.indexed != ids or len(opened) != len(ids):
            rep.problems.append(
                f"index holds {len(opened)} casings, the database {len(ids)} exhibits"
            )
    except Exception as exc:
        rep.problems.append(f"index: {exc}")
    trail = audit.verify(head=head)
    rep.counts["audit_records"] = trail.n_records
    if trail.first_bad is not None:
        rep.problems.append(f"audit trail: {trail.reason} (record {trail.first_bad})")
    elif not trail.ok and trail.reason not in trail.problems:
        rep.problems.append(f"audit trail: {trail.reason}")
    rep.problems += [f"audit trail: {p}" for p in trail.problems]
    rep.notes += trail.notes
    return rep


def _check_scans(rep: CheckReport, rows, exhibits: Exhibits, *, deep: bool) -> None:
    """Every exhibit's stored scan is there with the size and byte hash recorded at ingest
    (``deep``: reloaded, its content hash checked); orphans warned."""
    referenced = set()
    unrecorded = 0
    store = exhibits.store
    for r in rows:
        path = store.path(r["scan_file"])
        referenced.add(path.resolve())
        if not path.exists():
            moved = sorted(store.quarantine_dir.glob(path.stem + "*"))
            where = f" (quarantined as damaged: {moved[-1]})" if moved else ""
            rep.problems.append(f"exhibit {r['id']}: stored scan {path} is missing{where}")
            continue
        if r["file_size"] is None:
            unrecorded += 1
        elif path.stat().st_size != r["file_size"]:
            rep.problems.append(
                f"exhibit {r['id']}: stored scan {path} is damaged: {path.stat().st_size} "
                f"bytes, {r['file_size']} stored (truncated or replaced)"
            )
            continue
        elif file_sha256(path) != r["file_sha256"]:
            rep.problems.append(
                f"exhibit {r['id']}: stored scan {path} is damaged: its bytes changed"
            )
            continue
        if deep:
            try:
                load_scan(path, r["scan_hash"], exhibit_id=r["id"])
            except DatabaseError as exc:
                rep.problems.append(f"exhibit {r['id']}: {exc}")
    if unrecorded and not deep:
        rep.notes.append(
            f"{unrecorded} stored scan(s) were stored before their file hash was recorded: "
            "only `check --deep` verifies them"
        )
    orphans = [p for p in store.files() if p.resolve() not in referenced]
    if orphans:
        rep.warnings.append(
            f"{len(orphans)} stored scan(s) without exhibit (left by an interrupted "
            "ingest; reused when the ingest is run again)"
        )
