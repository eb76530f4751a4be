"""Leads of a database: the lead query, the examiners' status workflow, series."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DatabaseError
from ..leads import STATUSES, Lead, Series, find_series
from ._audit import AuditTrail
from ._exhibits import Exhibits, stored_flags
from ._schema import LATEST_STATUS, Sql, now

__all__ = ["LeadBook"]

_LEADS_SQL = (
    "SELECT c.id, c.a, c.b, c.score, c.cmc_count, c.created, c.mirrored, "
    "ea.agency AS agency_a, eb.agency AS agency_b, ea.case_id AS case_a, "
    "eb.case_id AS case_b, ea.flags AS flags_a, eb.flags AS flags_b, "
    "s.status, s.examiner, s.time AS status_time "
    "FROM comparisons c JOIN exhibits ea ON ea.id = c.a JOIN exhibits eb ON eb.id = c.b "
    f"LEFT JOIN ({LATEST_STATUS}) s ON s.lead = c.id "
    "WHERE ea.case_id != eb.case_id AND (c.score >= ? OR s.status = 'confirmed')"
)


def _names(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class LeadBook:
    """The stored comparisons of one database read as leads, their statuses and series."""

    def __init__(self, sql: Sql, exhibits: Exhibits, audit: AuditTrail):
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
    ) -> list[Lead]:
        """Pairs of different cases scoring at least ``threshold``, or confirmed; best first."""
        sql = _LEADS_SQL
        params: list = [threshold]
        if lead_id is not None:
            sql += " AND c.id = ?"
            params.append(int(lead_id))
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
        sql += " ORDER BY c.score DESC, c.id"
        return [_lead(r) for r in self._sql().execute(sql, params)]

    def lead(self, lead_id: int) -> Lead:
        found = self.leads(float("-inf"), lead_id=int(lead_id))
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
        """Connected groups of exhibits joined by leads not rejected; largest first."""
        leads = [lead for lead in self.leads(threshold) if lead.status != "rejected"]
        groups = find_series((lead.a, lead.b) for lead in leads)
        member = {e: n for n, g in enumerate(groups) for e in g}
        lead_ids: dict[int, list[int]] = {}
        for lead in leads:
            lead_ids.setdefault(member[lead.a], []).append(lead.id)
        out = []
        for n, group in enumerate(groups):
            exs = [self._exhibits.get(e) for e in group]
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


def _lead(r) -> Lead:
    return Lead(
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
