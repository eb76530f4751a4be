"""The audit trail: one hash-chained record per change or export, and its verification."""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from ._schema import Sql, now

__all__ = ["AuditReport", "AuditTrail", "audit_hash", "identity", "login"]

log = logging.getLogger(__name__)

_GENESIS = "0" * 64


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


def audit_hash(prev: str, seq: int, time: str, who: str, action: str, detail: str) -> str:
    """The hash of one record, chained to the previous record's hash ``prev``.

    Examples
    --------
    >>> len(audit_hash("0" * 64, 1, "2025-01-01T00:00:00", "ann", "export", "{}"))
    64
    """
    payload = json.dumps([prev, seq, time, who, action, detail], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


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

    def append(self, action: str, **detail: Any) -> None:
        """Append one hash-chained record (call inside a transaction)."""
        detail.setdefault("who_from", self.user_source)
        con = self._sql()
        row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, _GENESIS) if row is None else (row["seq"] + 1, row["hash"])
        time = now()
        text = json.dumps(detail, sort_keys=True, default=str, separators=(",", ":"))
        digest = audit_hash(prev, seq, time, self.user, action, text)
        con.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, time, self.user, action, text, prev, digest),
        )
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES ('audit_head', ?)",
            (json.dumps([seq, digest]),),
        )

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

    def verify(self) -> AuditReport:
        """Walk the hash chain; report the first broken record (see `LeadDatabase.verify_audit`)."""
        con = self._sql()
        prev = _GENESIS
        n = 0
        for n, r in enumerate(con.execute("SELECT * FROM audit ORDER BY seq"), start=1):
            if r["seq"] != n:
                return AuditReport(False, n - 1, prev, r["seq"], f"record {n} is missing")
            if r["prev_hash"] != prev:
                return AuditReport(False, n - 1, prev, n, "chain broken before this record")
            digest = audit_hash(prev, n, r["time"], r["who"], r["action"], r["detail"])
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
