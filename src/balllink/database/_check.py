"""Integrity check: SQLite, the stored scans, the candidate index and the audit chain agree."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field

from ..errors import DatabaseError
from ._audit import AuditTrail
from ._exhibits import Exhibits
from ._index_cache import IndexCache
from ._schema import Sql
from ._store import load_scan, scan_sha256

__all__ = ["CheckReport", "check"]


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


def check(
    sql: Sql, exhibits: Exhibits, index: IndexCache, audit: AuditTrail, *, deep: bool = False
) -> CheckReport:
    """The problems and warnings of one database (see `LeadDatabase.check`)."""
    rep = CheckReport()
    con = sql()
    try:  # a damaged page makes SQLite raise instead of listing the damage
        res = con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in res] != ["ok"]:
            rep.problems += [f"SQLite: {r[0]}" for r in res]
        rows = con.execute("SELECT id, scan_hash, scan_file FROM exhibits").fetchall()
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
    trail = audit.verify()
    rep.counts["audit_records"] = trail.n_records
    if not trail.ok:
        rep.problems.append(f"audit trail: {trail.reason} (record {trail.first_bad})")
    return rep


def _check_scans(rep: CheckReport, rows, exhibits: Exhibits, *, deep: bool) -> None:
    """Every exhibit's stored scan is there (and, ``deep``, unchanged); orphans warned."""
    referenced = set()
    for r in rows:
        path = exhibits.store.path(r["scan_file"])
        referenced.add(path.resolve())
        if not path.exists():
            rep.problems.append(f"exhibit {r['id']}: stored scan {path} is missing")
        elif deep:
            try:
                if scan_sha256(load_scan(path)) != r["scan_hash"]:
                    rep.problems.append(f"exhibit {r['id']}: stored scan {path} changed")
            except DatabaseError as exc:
                rep.problems.append(f"exhibit {r['id']}: {exc}")
    orphans = [p for p in exhibits.store.files() if p.resolve() not in referenced]
    if orphans:
        rep.warnings.append(
            f"{len(orphans)} stored scan(s) without exhibit (left by an interrupted "
            "ingest; reused when the ingest is run again)"
        )
