"""Settings of a lead database (the ``settings`` table): the lead threshold above all."""

from __future__ import annotations

import math

from ..leads import default_threshold
from ._audit import AuditTrail
from ._schema import Sql

__all__ = ["Settings", "read_setting", "write_setting"]


def read_setting(con, key: str) -> str | None:
    """The stored text of a setting, None when it was never set."""
    row = con.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
    return None if row is None else row[0]


def write_setting(con, key: str, value: str) -> None:
    """Store a setting (call inside a transaction)."""
    con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))


class Settings:
    """The lead threshold in force: given, else stored, else `balllink.leads.default_threshold`.

    ``threshold`` may be changed for this session only; `set_threshold` stores it (audited).
    """

    def __init__(self, sql: Sql, audit: AuditTrail):
        self._sql = sql
        self._audit = audit
        stored = read_setting(sql(), "threshold")
        self.threshold = default_threshold() if stored is None else float(stored)

    def set_threshold(self, threshold: float) -> None:
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.threshold = threshold
        stored = read_setting(self._sql(), "threshold")
        if stored is not None and float(stored) == threshold:
            return
        with self._sql.tx() as con:
            write_setting(con, "threshold", repr(threshold))
            self._audit.append(
                "threshold", covers=[("settings", ["threshold"])], threshold=threshold
            )
