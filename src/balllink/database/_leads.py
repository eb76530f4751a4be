"""Leads of a database: the lead query, the examiners' status workflow, series.

The lead rule: a compared pair of different cases is a lead when its LR under the model
in force reaches the lead threshold (and the comparison had enough evidence), or, when it
has no LR (stored before LRs, or by a comparer that reports no cells), when its score
reaches the legacy score threshold; a pair an examiner confirmed is a lead either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from ..errors import DatabaseError
from ..leads import STATUSES, Lead, Series, find_series
from ._audit import AuditTrail
from ._exhibits import Exhibits, stored_flags
from ._lr import LRBook
from ._schema import LATEST_STATUS_JOIN, Sql, now

__all__ = ["IS_LEAD", "LeadBook"]

#: The lead rule on a comparison ``c`` with its LR ``l`` (LEFT JOIN on the model in
#: force); parameters: the log10 LR threshold, then the legacy score threshold.
IS_LEAD = (
    "((l.log10_lr IS NOT NULL AND l.log10_lr >= ? "
    "AND coalesce(c.reason, '') NOT LIKE 'too little evidence%') "
    "OR (l.log10_lr IS NULL AND c.score >= ?))"
)

_LEADS_SQL = (
    "SELECT c.id, c.a, c.b, c.score, c.cmc_count, c.created, c.mirrored, "
    "ea.agency AS agency_a, eb.agency AS agency_b, ea.case_id AS case_a, "
    "eb.case_id AS case_b, ea.flags AS flags_a, eb.flags AS flags_b, "
    "s.status, s.examiner, s.time AS status_time, "
    "l.log10_lr, l.lo, l.hi, l.in_range, l.reason AS lr_reason "
    "FROM comparisons c JOIN exhibits ea ON ea.id = c.a JOIN exhibits eb ON eb.id = c.b "
    f"{LATEST_STATUS_JOIN} "
    "LEFT JOIN lr l ON l.comparison = c.id AND l.model = ? "
    "WHERE ea.case_id != eb.case_id"
)


#: Comparison ids that may be leads (a superset of the rule, each branch by an index):
#: LR at least the threshold under the model; score at least the legacy threshold (those
#: without an LR are among them); ever confirmed. Parameters: model id, log10 LR
#: threshold, score threshold.
_MAYBE_LEADS = (
    "SELECT comparison FROM lr WHERE model = ? AND log10_lr >= ? "
    "UNION SELECT id FROM comparisons WHERE score >= ? "
    "UNION SELECT lead FROM lead_status WHERE status = 'confirmed'"
)


def _names(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class LeadBook:
    """The stored comparisons of one database read as leads, their statuses and series."""

    def __init__(self, sql: Sql, exhibits: Exhibits, audit: AuditTrail, lr: LRBook):
        self._lr = lr
        self._sql = sql
        self._exhibits = exhibits
        self._audit = audit

    def leads(
        self,
        threshold: float,
        *,
        since: str | None = None,
        status: str | Sequence[str] | None = None,
        cross_only: bool = False,
        agencies: Sequence[str] | None = None,
        lead_id: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Lead]:
        """Pairs of different cases that are leads by the rule (``threshold``: the legacy
        score threshold), or confirmed; by LR, then score (best first). With ``lead_id``:
        that pair, lead or not. ``limit``/``offset``: one page of that order."""
        sql, params = self._query(threshold, since, status, cross_only, agencies, lead_id)
        sql += " ORDER BY coalesce(l.log10_lr, -1e308) DESC, c.score DESC, c.id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return self._leads(self._sql().execute(sql, params).fetchall())

    def count(
        self,
        threshold: float,
        *,
        since: str | None = None,
        status: str | Sequence[str] | None = None,
        cross_only: bool = False,
        agencies: Sequence[str] | None = None,
    ) -> int:
        """How many leads `leads` gives with the same filters."""
        sql, params = self._query(threshold, since, status, cross_only, agencies, None)
        return int(self._sql().execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0])

    def pairs_of(
        self, exhibit_id: int, threshold: float, *, limit: int, offset: int = 0
    ) -> tuple[list[tuple[Lead, bool]], int]:
        """The stored comparisons of one exhibit with exhibits of other cases, best first
        (by LR, then score), each with whether it is a lead; and how many there are."""
        sql = _LEADS_SQL.replace("SELECT ", f"SELECT ({IS_LEAD}) AS is_lead, ", 1)
        sql += " AND (c.a = ? OR c.b = ?)"
        eid = int(exhibit_id)
        params = [self._lr.lead_log10() - 1e-12, threshold, self._lr.model_id, eid, eid]
        total = self._sql().execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
        sql += " ORDER BY coalesce(l.log10_lr, -1e308) DESC, c.score DESC, c.id LIMIT ? OFFSET ?"
        rows = self._sql().execute(sql, [*params, int(limit), int(offset)]).fetchall()
        leads = self._leads(rows)
        return [(lead, bool(r["is_lead"])) for lead, r in zip(leads, rows)], int(total)

    def _query(self, threshold, since, status, cross_only, agencies, lead_id):
        sql = _LEADS_SQL
        params: list = [self._lr.model_id]
        if lead_id is not None:
            sql += " AND c.id = ?"
            params.append(int(lead_id))
        else:
            # the rule, evaluated on a superset found through indexes (LR >= threshold,
            # score >= threshold, ever confirmed): not on every comparison
            sql += f" AND c.id IN ({_MAYBE_LEADS}) AND ({IS_LEAD} OR s.status = 'confirmed')"
            t_lr = self._lr.lead_log10() - 1e-12
            params += [self._lr.model_id, t_lr, threshold, t_lr, threshold]
        if since:
            sql += " AND c.created >= ?"
            params.append(str(since))
        if cross_only:
            sql += " AND ea.agency != eb.agency"
        if agencies:
            agencies = _names(agencies)
            q = ",".join("?" * len(agencies))
            sql += f" AND (ea.agency IN ({q}) OR eb.agency IN ({q}))"
            params += agencies + agencies
        if status:
            statuses = _names(status)
            bad = set(statuses) - set(STATUSES)
            if bad:
                raise ValueError(f"unknown lead status {sorted(bad)}; use {STATUSES}")
            sql += f" AND coalesce(s.status, 'new') IN ({','.join('?' * len(statuses))})"
            params += statuses
        return sql, params

    def _leads(self, rows) -> list[Lead]:
        mid = self._lr.model_id
        bounds = self._lr.base().bounds if any(r["log10_lr"] is not None for r in rows) else ()
        return [_lead(r, mid, bounds) for r in rows]

    def lead(self, lead_id: int) -> Lead:
        found = self.leads(math.inf, lead_id=int(lead_id))
        if found:
            return found[0]
        raise DatabaseError(f"{self._sql.label}: no lead with id {lead_id}")

    def comparison(self, a: int, b: int) -> dict | None:
        lo, hi = sorted((int(a), int(b)))
        row = self._sql().execute("SELECT * FROM comparisons WHERE a=? AND b=?", (lo, hi))
        row = row.fetchone()
        return None if row is None else dict(row)

    def set_status(self, lead_id: int, status: str, *, examiner: str, note: str | None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not examiner or not str(examiner).strip():
            raise ValueError("a status change needs the examiner's name (examiner=...)")
        with self._sql.tx() as con:
            row = con.execute("SELECT a, b FROM comparisons WHERE id=?", (int(lead_id),))
            row = row.fetchone()
            if row is None:
                raise DatabaseError(f"{self._sql.label}: no lead with id {lead_id}")
            cur = con.execute(
                "INSERT INTO lead_status (lead, status, examiner, time, note) VALUES (?,?,?,?,?)",
                (int(lead_id), status, str(examiner), now(), note),
            )
            self._audit.append(
                "status",
                covers=[("lead_status", [int(cur.lastrowid)])],
                lead=int(lead_id),
                a=row["a"],
                b=row["b"],
                status=status,
                examiner=str(examiner),
                note=note,
            )

    def series(self, threshold: float) -> list[Series]:
        """Connected groups of exhibits joined by leads not rejected; largest first.

        Two queries whatever the size: the lead pairs (ids only), then the members'
        fields (one ``json_each`` look-up)."""
        sql, params = self._query(threshold, None, None, False, None, None)
        sql = sql.replace("SELECT ", "SELECT c.id AS lead_id, ", 1)
        pairs = [
            (int(r["lead_id"]), int(r["a"]), int(r["b"]))
            for r in self._sql().execute(f"{sql} AND coalesce(s.status, '') != 'rejected'", params)
        ]
        groups = find_series((a, b) for _, a, b in pairs)
        member = {e: n for n, g in enumerate(groups) for e in g}
        lead_ids: dict[int, list[int]] = {}
        for lid, a, _b in pairs:
            lead_ids.setdefault(member[a], []).append(lid)
        everyone = [e for g in groups for e in g]
        info = {
            int(r["id"]): r
            for r in self._sql().execute(
                "SELECT id, case_id, agency, occurred, lat, lon FROM exhibits "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(everyone),),
            )
        }
        out = []
        for n, group in enumerate(groups):
            exs = [info[e] for e in group]
            dates = sorted(e["occurred"] for e in exs if e["occurred"])
            out.append(
                Series(
                    exhibits=tuple(group),
                    cases=tuple(sorted({e["case_id"] for e in exs})),
                    agencies=tuple(sorted({e["agency"] for e in exs})),
                    first=dates[0] if dates else None,
                    last=dates[-1] if dates else None,
                    places=tuple(
                        (e["lat"], e["lon"])
                        for e in exs
                        if e["lat"] is not None and e["lon"] is not None
                    ),
                    leads=tuple(sorted(lead_ids.get(n, []))),
                )
            )
        return out


def _lead(r, model_id: str, bounds) -> Lead:
    has = r["log10_lr"] is not None
    lr = (
        dict(
            log10_lr=float(r["log10_lr"]),
            lr_interval=(10.0 ** r["lo"], 10.0 ** r["hi"]),
            lr_in_range=bool(r["in_range"]),
            lr_reason=r["lr_reason"],
            lr_at_bound=bool(r["log10_lr"] <= bounds[0] or r["log10_lr"] >= bounds[1]),
            lr_model=model_id,
        )
        if has
        else {}
    )
    return Lead(
        **lr,
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
        flags_a=stored_flags(r["flags_a"]),
        flags_b=stored_flags(r["flags_b"]),
    )
