"""The audit trail: one hash-chained record per change or export, and its verification.

Each record written since schema version 3 also commits to the evidence rows it creates
or changes (``audit.rows``: ``[table, id, row_hash]`` for exhibits, comparisons,
lead_status, comments, users and the evidence settings), inside its own hash. `AuditTrail.verify`
recomputes every row's hash and compares it with the latest commitment, so an edit of a
row with the sqlite3 shell is found; `AuditTrail.head` is the last record's hash, to keep
elsewhere: a trail rewritten consistently or deleted no longer contains it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._schema import Sql, now

__all__ = [
    "COVERED",
    "COVERED_IF_SET",
    "COVERED_SETTINGS",
    "AuditReport",
    "AuditTrail",
    "audit_hash",
    "identity",
    "login",
    "row_hash",
]

log = logging.getLogger(__name__)

_GENESIS = "0" * 64

#: The evidence columns each audit record commits to, per table (``settings``: by key).
COVERED: dict[str, tuple[str, ...]] = {
    "exhibits": (
        "id", "case_id", "agency", "kind", "make", "model", "serial", "occurred", "lat",
        "lon", "caliber", "notes", "source", "source_hash", "scan_hash", "scan_file", "ny",
        "nx", "spacing_um", "n_valid", "created", "flags", "file_sha256", "file_size",
    ),
    "comparisons": (
        "id", "a", "b", "query", "score", "cmc_count", "rotation_deg", "dy_um", "dx_um",
        "reason", "created", "mirrored",
    ),
    "lead_status": ("id", "lead", "status", "examiner", "time", "note"),
    "comments": ("id", "lead", "who", "time", "note"),
    "users": ("id", "name", "role", "password_hash", "created", "disabled"),
    "settings": ("key", "value"),
}  # fmt: skip
#: Columns added later to a table: part of a row's hash only when not NULL, so that the
#: rows stored before them hash exactly as they did (schema version 4: LR features).
COVERED_IF_SET: dict[str, tuple[str, ...]] = {
    "comparisons": ("n_cells", "raw_score", "source_spacing_um"),
}
#: The settings whose rows are evidence (the others are bookkeeping): the legacy score
#: threshold, the LR model in force and the target false-lead rate.
COVERED_SETTINGS = ("threshold", "lr_model", "lead_rate", "index_kind")


def row_hash(table: str, row) -> str:
    """The hash of one evidence row (a mapping holding the table's `COVERED` columns).

    Examples
    --------
    Columns of `COVERED_IF_SET` count only when they hold a value (a row stored before
    they existed hashes as it always did).

    >>> row_hash("settings", {"key": "threshold", "value": "0.5"})[:12]
    '0da136ec85b5'
    """
    values = [row[c] for c in COVERED[table]]
    keys = row.keys() if hasattr(row, "keys") else ()
    values += [
        [c, row[c]] for c in COVERED_IF_SET.get(table, ()) if c in keys and row[c] is not None
    ]
    payload = json.dumps([table, values], separators=(",", ":"), default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class AuditReport:
    """Result of `LeadDatabase.verify_audit`.

    ``ok`` is False when the chain is broken (``first_bad``, ``reason``), when an evidence
    row no longer matches what the trail committed to (``problems``, one line each), or
    when a kept head is no longer in the chain. ``notes`` says what is not covered.
    """

    ok: bool
    n_records: int
    head: str
    first_bad: int | None = None
    reason: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def audit_hash(
    prev: str, seq: int, time: str, who: str, action: str, detail: str, rows: str | None = None
) -> str:
    """The hash of one record, chained to the previous record's hash ``prev``; ``rows``
    (the JSON of its row commitments) is part of it for records that have one.

    Examples
    --------
    >>> len(audit_hash("0" * 64, 1, "2025-01-01T00:00:00", "ann", "export", "{}"))
    64
    """
    fields = [prev, seq, time, who, action, detail] + ([] if rows is None else [rows])
    payload = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _record(r) -> dict:
    """One audit row as the dict `AuditTrail.records` gives."""
    return {"seq": r["seq"], "time": r["time"], "who": r["who"], "action": r["action"],
            "detail": json.loads(r["detail"]), "hash": r["hash"]}  # fmt: skip


def login() -> str:
    """The login name of this process, ``"unknown"`` when there is none."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def identity(user: str | None) -> tuple[str, str]:
    """Who is recorded in the audit trail, and where that name came from.

    An explicit name (``LeadDatabase(user=...)``, ``balllink --user``) comes first
    (source ``"given"``), then the ``BALLLINK_USER`` environment variable
    (``"BALLLINK_USER"``), then the login name of the process (``"login"``).

    Examples
    --------
    >>> identity("ann")
    ('ann', 'given')
    """
    if user is not None and str(user).strip():
        return str(user).strip(), "given"
    env = os.environ.get("BALLLINK_USER", "").strip()
    if env:
        return env, "BALLLINK_USER"
    return login(), "login"


class AuditTrail:
    """The ``audit`` table of one database, written as ``user``.

    Each record's detail says where the name came from (``who_from``, see `identity`).
    """

    def __init__(self, sql: Sql, user: str, user_source: str = "given"):
        self._sql = sql
        self.user = user
        self.user_source = user_source

    def append(
        self, action: str, *, covers: Sequence[tuple[str, Sequence]] = (), **detail: Any
    ) -> None:
        """Append one hash-chained record (call inside a transaction).

        ``covers`` lists ``(table, ids)`` of the evidence rows this change created or
        changed (``settings``: keys); the record commits to their current content.
        """
        detail.setdefault("who_from", self.user_source)
        con = self._sql()
        row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, _GENESIS) if row is None else (row["seq"] + 1, row["hash"])
        time = now()
        text = json.dumps(detail, sort_keys=True, default=str, separators=(",", ":"))
        rows = json.dumps(self._commitments(con, covers), separators=(",", ":"))
        digest = audit_hash(prev, seq, time, self.user, action, text, rows)
        con.execute(
            "INSERT INTO audit (seq, time, who, action, detail, prev_hash, hash, rows) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, time, self.user, action, text, prev, digest, rows),
        )
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES ('audit_head', ?)",
            (json.dumps([seq, digest]),),
        )

    @staticmethod
    def _commitments(con, covers) -> list[list]:
        out = []
        for table, ids in covers:
            key = "key" if table == "settings" else "id"
            for i in ids:
                r = con.execute(f"SELECT * FROM {table} WHERE {key}=?", (i,)).fetchone()
                if r is None:
                    raise ValueError(f"audit: no {table} row {i} to commit to")
                out.append([table, i, row_hash(table, r)])
        return out

    def log_event(self, action: str, **detail: Any) -> None:
        """Record an event in its own transaction; not recorded (logged at info level)
        when the database was opened read-only: reading never writes."""
        if self._sql.readonly:
            log.info("%s: read-only, %s not recorded in the audit trail", self._sql.label, action)
            return
        with self._sql.tx(f"record {action} in the audit trail"):
            self.append(action, **detail)

    def records(self, *, since: str | None = None) -> list[dict]:
        """The trail, oldest first: seq, time, who, action, detail (dict), hash."""
        sql = "SELECT * FROM audit"
        params: list = []
        if since:
            sql += " WHERE time >= ?"
            params.append(since)
        rows = self._sql().execute(sql + " ORDER BY seq", params).fetchall()
        return [_record(r) for r in rows]

    def page(
        self, *, limit: int, offset: int = 0, action: str | None = None, who: str | None = None
    ) -> tuple[list[dict], int]:
        """One page of the trail, newest first (optionally of one action or one user), and
        how many records match."""
        where, params = [], []
        if action:
            where.append("action = ?")
            params.append(str(action))
        if who:
            where.append("who = ?")
            params.append(str(who))
        cond = " WHERE " + " AND ".join(where) if where else ""
        total = self._sql().execute(f"SELECT count(*) FROM audit{cond}", params).fetchone()[0]
        rows = self._sql().execute(
            f"SELECT * FROM audit{cond} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, int(limit), int(offset)],
        )
        return [_record(r) for r in rows], int(total)

    def head(self) -> tuple[str, int]:
        """The hash of the last record and the number of records (``"0"*64, 0`` when none)."""
        row = self._sql().execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        row = row.fetchone()
        return (_GENESIS, 0) if row is None else (row["hash"], int(row["seq"]))

    def verify(self, *, head: str | None = None) -> AuditReport:
        """Walk the hash chain; report the first broken record, then every evidence row
        that differs from what the trail committed to (see `LeadDatabase.verify_audit`)."""
        con = self._sql()
        prev = _GENESIS
        n = 0
        hashes = set()
        committed: dict[tuple[str, Any], tuple[str, int]] = {}
        for n, r in enumerate(con.execute("SELECT * FROM audit ORDER BY seq"), start=1):
            if r["seq"] != n:
                return AuditReport(False, n - 1, prev, r["seq"], f"record {n} is missing")
            if r["prev_hash"] != prev:
                return AuditReport(False, n - 1, prev, n, "chain broken before this record")
            digest = audit_hash(prev, n, r["time"], r["who"], r["action"], r["detail"], r["rows"])
            if digest != r["hash"]:
                return AuditReport(False, n - 1, prev, n, "record was edited (hash mismatch)")
            for table, i, h in json.loads(r["rows"] or "[]"):
                committed[(table, i)] = (h, n)
            hashes.add(digest)
            prev = digest
        head_row = con.execute("SELECT value FROM settings WHERE key='audit_head'").fetchone()
        if head_row is not None:
            seq, digest = json.loads(head_row["value"])
            if (seq, digest) != (n, prev):
                return AuditReport(
                    False, n, prev, n + 1, f"head says {seq} records, the trail holds {n}"
                )
        elif n:
            return AuditReport(False, n, prev, None, "audit head record is missing")
        rep = AuditReport(True, n, prev)
        if head is not None and head != _GENESIS and head not in hashes:
            rep.ok = False
            rep.reason = (
                f"the kept head {head[:16]}… is not in the trail (the trail was rewritten, "
                "truncated or deleted)"
            )
        _verify_rows(con, committed, rep)
        if rep.problems:
            rep.ok = False
            rep.reason = rep.reason or rep.problems[0]
        return rep


def _coverage(con) -> dict:
    row = con.execute("SELECT value FROM settings WHERE key='audit_coverage'").fetchone()
    return {} if row is None else json.loads(row["value"])


def _verify_rows(con, committed: dict, rep: AuditReport) -> None:
    """Recompute each evidence row's hash; compare with the trail's latest commitment."""
    cover = _coverage(con)
    if not cover:
        rep.problems.append("the audit coverage record (settings 'audit_coverage') is missing")
    seen = set()
    for table in ("exhibits", "comparisons", "lead_status", "comments", "users"):
        old = 0
        for r in con.execute(f"SELECT * FROM {table} ORDER BY id"):
            seen.add((table, r["id"]))
            got = committed.get((table, r["id"]))
            if got is None:
                if r["id"] <= int(cover.get(table) or 0):
                    old += 1
                else:
                    rep.problems.append(f"{table} row {r['id']} is not in the audit trail")
            elif row_hash(table, r) != got[0]:
                rep.problems.append(
                    f"{table} row {r['id']} was changed after audit record {got[1]}"
                )
        if old:
            rep.notes.append(
                f"{old} {table} row(s) stored before schema version 3 are not covered "
                "by the audit trail"
            )
    for key in COVERED_SETTINGS:
        r = con.execute("SELECT key, value FROM settings WHERE key=?", (key,)).fetchone()
        seen.add(("settings", key))
        got = committed.get(("settings", key))
        if r is None:
            if got is not None:
                rep.problems.append(f"setting {key!r} was deleted after audit record {got[1]}")
        elif got is None:
            if cover and r["value"] == cover.get(key):
                rep.notes.append(f"setting {key!r} predates schema version 3: not covered")
            else:
                rep.problems.append(f"setting {key!r} is not in the audit trail")
        elif row_hash("settings", r) != got[0]:
            rep.problems.append(f"setting {key!r} was changed after audit record {got[1]}")
    for table, i in sorted(set(committed) - seen, key=str):
        rep.problems.append(
            f"{table} row {i} was deleted after audit record {committed[(table, i)][1]}"
        )
