"""The ``exhibits`` table: rows as `Exhibit` records, look-ups, and their stored scans."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from .._scan import Scan
from ..errors import DatabaseError
from ..leads import Flag, as_flags
from ..preprocessing import flags_of
from ._schema import Sql
from ._store import ScanStore, StoredScanError

log = logging.getLogger(__name__)

#: The flag an exhibit gets when its stored scan was found damaged and quarantined.
DAMAGED = "scan_damaged"

__all__ = ["FIELDS", "Exhibit", "Exhibits", "prepared_flags", "stored_flags"]

#: The fields of an exhibit given at ingest, in the order of the table's columns.
FIELDS = (
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


def stored_flags(text: str | None) -> tuple[Flag, ...]:
    """Flags from the ``exhibits.flags`` column (JSON).

    Examples
    --------
    >>> stored_flags('[{"code": "small_area", "message": ""}]'), stored_flags("[]")
    ((Flag(code='small_area', message=''),), ())
    """
    if not text:
        return ()
    try:
        return as_flags(json.loads(text))
    except ValueError:
        return (Flag("flags_unreadable", f"stored flags are not JSON: {text[:80]!r}"),)


def prepared_flags(scan: Scan, prep: Scan) -> tuple[Flag, ...]:
    """The flags an exhibit keeps: those of its preparation, less ``auto_prepared`` when
    the input never claimed to be prepared (preparing a raw scan is the database's job,
    not a doubt about the scan; the stored scan's ``meta`` keeps the full list)."""
    flags = as_flags(flags_of(prep))
    if not isinstance(scan.meta.get("prepared"), Mapping):
        flags = tuple(f for f in flags if f.code != "auto_prepared")
    return flags


class Exhibits:
    """Reads the ``exhibits`` table of one database and the scans its rows point to."""

    def __init__(self, sql: Sql, store: ScanStore, audit=None):
        self._sql = sql
        self.store = store
        self.audit = audit  # an AuditTrail: records the flag of a quarantined scan

    def _record(self, row: sqlite3.Row) -> Exhibit:
        return Exhibit(
            id=row["id"],
            **{k: row[k] for k in FIELDS},
            source=row["source"],
            source_hash=row["source_hash"],
            scan_hash=row["scan_hash"],
            scan_path=str(self.store.path(row["scan_file"])),
            shape=(row["ny"], row["nx"]),
            spacing_um=row["spacing_um"],
            created=row["created"],
            flags=stored_flags(row["flags"]),
        )

    def _missing(self, exhibit_id) -> DatabaseError:
        return DatabaseError(f"{self._sql.label}: no exhibit with id {exhibit_id}")

    def count(self) -> int:
        return int(self._sql().execute("SELECT count(*) FROM exhibits").fetchone()[0])

    def get(self, exhibit_id: int) -> Exhibit:
        row = self._sql().execute("SELECT * FROM exhibits WHERE id=?", (int(exhibit_id),))
        row = row.fetchone()
        if row is None:
            raise self._missing(exhibit_id)
        return self._record(row)

    def select(self, where: str, params: Sequence) -> list[Exhibit]:
        """Exhibits matching an SQL condition on the table, oldest first."""
        rows = self._sql().execute(f"SELECT * FROM exhibits WHERE {where} ORDER BY id", params)
        return [self._record(r) for r in rows]

    def page(self, where: str, params: Sequence, limit: int, offset: int) -> list[Exhibit]:
        """Exhibits matching an SQL condition, newest first, one page."""
        rows = self._sql().execute(
            f"SELECT * FROM exhibits WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, int(limit), int(offset)],
        )
        return [self._record(r) for r in rows]

    def ids(self, where: str = "1", params: Sequence = ()) -> list[int]:
        rows = self._sql().execute(f"SELECT id FROM exhibits WHERE {where} ORDER BY id", params)
        return [int(r[0]) for r in rows]

    def scan(self, exhibit_id: int) -> Scan:
        """The stored prepared scan of an exhibit (cached)."""
        exhibit_id = int(exhibit_id)
        scan = self.store.cached(exhibit_id)
        if scan is not None:
            return scan
        row = (
            self._sql()
            .execute("SELECT scan_file, scan_hash FROM exhibits WHERE id=?", (exhibit_id,))
            .fetchone()
        )
        if row is None:
            raise self._missing(exhibit_id)
        try:
            return self.store.load(exhibit_id, row["scan_file"], row["scan_hash"])
        except StoredScanError as exc:
            self._quarantine(exhibit_id, row["scan_file"], exc)
            raise

    def loadable(self, ids: Sequence[int]) -> tuple[list[int], list[Scan]]:
        """The stored scans of ``ids`` that can be read, with their ids; each damaged one
        is quarantined, flagged, logged as a warning and left out (the caller goes on)."""
        kept, scans = [], []
        for i in ids:
            try:
                scans.append(self.scan(i))
            except StoredScanError as exc:
                log.warning("skipped exhibit %d: %s", int(i), exc)
                continue
            kept.append(int(i))
        return kept, scans

    def _quarantine(self, exhibit_id: int, rel: str, exc: StoredScanError) -> None:
        """Move a damaged stored scan to quarantine and flag its exhibit (audited).

        Best effort: when the folder or the database cannot be written, only logged. A
        database opened read-only is never changed: the scan stays where it is."""
        if self._sql.readonly:
            log.warning(
                "exhibit %d: %s (read-only: left in place, not quarantined)", exhibit_id, exc
            )
            return
        try:
            moved = self.store.quarantine(rel)
            if moved is None and any(f.code == DAMAGED for f in self.get(exhibit_id).flags):
                return  # quarantined and flagged before
            with self._sql.tx() as con:
                row = con.execute("SELECT flags FROM exhibits WHERE id=?", (exhibit_id,))
                flags = json.loads(row.fetchone()["flags"] or "[]")
                if not any(f.get("code") == DAMAGED for f in flags if isinstance(f, dict)):
                    where = f"; moved to {moved}" if moved else ""
                    flags.append({"code": DAMAGED, "message": f"{exc}{where}"})
                    con.execute(
                        "UPDATE exhibits SET flags=? WHERE id=?",
                        (json.dumps(flags), exhibit_id),
                    )
                if self.audit is not None:
                    self.audit.append(
                        "quarantine",
                        covers=[("exhibits", [exhibit_id])],
                        exhibit=exhibit_id,
                        file=rel,
                        moved_to=None if moved is None else str(moved),
                        reason=str(exc),
                    )
            log.warning("exhibit %d: %s; quarantined to %s", exhibit_id, exc, moved)
        except Exception as err:  # never hide the original error behind this one
            log.warning("exhibit %d: could not quarantine %s: %s", exhibit_id, rel, err)

    def find(self, source_hash: str, scan_hash: str | None = None) -> int | None:
        """The exhibit stored from this file (or holding this prepared scan), if any."""
        con = self._sql()
        row = con.execute("SELECT id FROM exhibits WHERE source_hash=?", (source_hash,))
        row = row.fetchone()
        if row is None and scan_hash is not None:
            row = con.execute("SELECT id FROM exhibits WHERE scan_hash=?", (scan_hash,))
            row = row.fetchone()
        return None if row is None else int(row[0])

    def summaries(self, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        """id -> row of ``id, case_id, agency, flags`` for these exhibits."""
        if not ids:
            return {}
        q = ",".join("?" * len(ids))
        rows = self._sql().execute(
            f"SELECT id, case_id, agency, flags FROM exhibits WHERE id IN ({q})", list(ids)
        )
        return {r["id"]: r for r in rows}
