"""What a review needs of `LeadDatabase`: reviewers and comments, and bounded pages.

Every list here is one page (``limit``, ``offset``) with the count of the whole list, so
that a display over a network's collection never reads it whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..leads import Lead, Scope
from ._exhibits import Exhibit
from ._search import scope_where
from ._users import User, UserBook

__all__ = ["ReviewMethods"]


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (``%``, ``_`` and ``\\`` taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ReviewMethods:
    """Reviewers, comments and paged lists of `LeadDatabase` (see the class docstring)."""

    @property
    def _users(self) -> UserBook:
        return UserBook(self._sql, self._audit)

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, role: str, password: str) -> User:
        """Add a reviewer (audited; the password is stored as an Argon2id hash only).

        Parameters
        ----------
        name : str
            Letters, digits and ``. _ @ -`` (1 to 64 characters).
        role : {"analyst", "examiner", "admin"}
            An analyst reviews and comments; an examiner also confirms or rejects leads;
            an admin also manages users and the lead threshold.
        password : str
            At least 10 characters.

        Examples
        --------
        >>> import tempfile
        >>> from balllink.database import LeadDatabase
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     _ = db.add_user("ann", "examiner", "correct horse battery")
        ...     print(db.authenticate("ann", "correct horse battery").role,
        ...           db.authenticate("ann", "wrong password"))
        examiner None
        """
        return self._users.add(name, role, password)

    def users(self) -> list[User]:
        """The reviewers, by name (disabled ones included, marked)."""
        return self._users.users()

    def change_user(
        self,
        name: str,
        *,
        role: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change a reviewer's role or password, or disable / re-enable them (audited).
        Users are never deleted: the audit trail keeps naming them."""
        return self._users.change(name, role=role, password=password, disabled=disabled)

    def authenticate(self, name: str, password: str) -> User | None:
        """The reviewer when the password is theirs and they are enabled, else None."""
        return self._users.authenticate(name, password)

    # ------------------------------------------------------------------ comments
    def comment(self, lead_id: int, note: str) -> None:
        """Add a comment to a lead as this database's `user` (audited); the lead's status
        does not change.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> from balllink.database import LeadDatabase
        >>> rng = np.random.default_rng(0)
        >>> scans = [bl.Scan(rng.normal(size=(240, 240)), spacing_um=6.25,
        ...                  meta={"prepared": {"ok": True}}) for _ in range(3)]
        >>> def plain(query, cands):  # a stand-in comparer: every pair scores 0.9
        ...     return [bl.Comparison(3, 0.9, 0.0, (0.0, 0.0), True, (), np.zeros(0),
        ...                           config=bl.CMCConfig()) for _ in cands]
        >>> items = [(s, {"case_id": f"c{i}", "agency": "A"}) for i, s in enumerate(scans)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/l.db", comparer=plain, user="ann") as db:
        ...         _ = db.ingest_many(items)
        ...         lead = db.leads()[0]
        ...         db.comment(lead.id, "look at the firing-pin aperture")
        ...         print([(h["kind"], h["who"]) for h in db.lead_history(lead.id)])
        [('comment', 'ann')]
        """
        self._users.comment(lead_id, note)

    def lead_history(self, lead_id: int) -> list[dict]:
        """Status changes and comments of one lead, oldest first (time, who, kind,
        status, note)."""
        return self._users.history(lead_id)

    # ------------------------------------------------------------------ pages
    def exhibits_page(
        self,
        scope=None,
        *,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Exhibit], int]:
        """One page of the exhibits in a scope, newest first, and how many there are.

        ``text`` keeps exhibits whose case id, agency, make, model, serial, caliber or
        notes contain it (case-insensitive for ASCII).

        Examples
        --------
        >>> import tempfile
        >>> from balllink.database import LeadDatabase
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     db.exhibits_page(text="2024-0%", limit=10)
        ([], 0)
        """
        where, params = scope_where(Scope.coerce(scope))
        if text:
            cols = ("case_id", "agency", "make", "model", "serial", "caliber", "notes")
            where += " AND (" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in cols) + ")"
            params = [*params, *([_like(str(text))] * len(cols))]
        sql = f"SELECT count(*) FROM exhibits WHERE {where}"
        total = self._sql().execute(sql, params).fetchone()[0]
        return self._exhibits.page(where, params, limit, offset), int(total)

    def exhibits_by_id(self, ids) -> list[Exhibit]:
        """These exhibits, in the order given (ids that do not exist are left out); one
        query however many.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> from balllink.database import LeadDatabase
        >>> rng = np.random.default_rng(0)
        >>> scans = [bl.Scan(rng.normal(size=(240, 240)), spacing_um=6.25,
        ...                  meta={"prepared": {"ok": True}}) for _ in range(3)]
        >>> def plain(query, cands):  # a stand-in comparer: every pair scores 0.9
        ...     return [bl.Comparison(3, 0.9, 0.0, (0.0, 0.0), True, (), np.zeros(0),
        ...                           config=bl.CMCConfig()) for _ in cands]
        >>> items = [(s, {"case_id": f"c{i}", "agency": "A"}) for i, s in enumerate(scans)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/l.db", comparer=plain) as db:
        ...         _ = db.ingest_many(items, correlate=False)
        ...         print([e.case_id for e in db.exhibits_by_id([3, 1, 99])])
        ['c2', 'c0']
        """
        ids = [int(i) for i in ids]
        found = self._exhibits.select("id IN (SELECT value FROM json_each(?))", [json.dumps(ids)])
        by_id = {e.id: e for e in found}
        return [by_id[i] for i in ids if i in by_id]

    def field_values(self, column: str, *, limit: int = 500) -> list[str]:
        """The distinct values of one exhibit field (``agency``, ``caliber``, ``kind``,
        ``make``, ``model``), sorted, at most ``limit`` (for filter menus)."""
        if column not in ("agency", "caliber", "kind", "make", "model"):
            raise ValueError(f"no filter menu for the exhibit field {column!r}")
        rows = self._sql().execute(
            f"SELECT DISTINCT {column} FROM exhibits WHERE {column} IS NOT NULL "
            f"ORDER BY {column} LIMIT ?",
            (int(limit),),
        )
        return [r[0] for r in rows]

    def leads_page(
        self,
        *,
        status: str | Sequence[str] | None = None,
        cross_only: bool = False,
        agencies: Sequence[str] | None = None,
        since: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        """One page of `leads` (same order and filters) and how many leads there are.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> from balllink.database import LeadDatabase
        >>> rng = np.random.default_rng(0)
        >>> scans = [bl.Scan(rng.normal(size=(240, 240)), spacing_um=6.25,
        ...                  meta={"prepared": {"ok": True}}) for _ in range(3)]
        >>> def plain(query, cands):  # a stand-in comparer: every pair scores 0.9
        ...     return [bl.Comparison(3, 0.9, 0.0, (0.0, 0.0), True, (), np.zeros(0),
        ...                           config=bl.CMCConfig()) for _ in cands]
        >>> items = [(s, {"case_id": f"c{i}", "agency": "A"}) for i, s in enumerate(scans)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/l.db", comparer=plain) as db:
        ...         _ = db.ingest_many(items)
        ...         page, total = db.leads_page(limit=2)
        ...         print(len(page), total)
        2 3
        """
        kw = dict(status=status, cross_only=cross_only, agencies=agencies, since=since)
        page = self._leads.leads(self.threshold, limit=int(limit), offset=int(offset), **kw)
        return page, self._leads.count(self.threshold, **kw)

    def comparisons_of(
        self, exhibit_id: int, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[tuple[Lead, bool]], int]:
        """The stored comparisons of one exhibit with exhibits of other cases, best first
        (by LR, then score), each as a `Lead` record with whether it is a lead; and how
        many there are. Nothing is compared: this is the candidate list the ingests,
        searches and links stored.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> from balllink.database import LeadDatabase
        >>> rng = np.random.default_rng(0)
        >>> scans = [bl.Scan(rng.normal(size=(240, 240)), spacing_um=6.25,
        ...                  meta={"prepared": {"ok": True}}) for _ in range(3)]
        >>> def plain(query, cands):  # a stand-in comparer: every pair scores 0.9
        ...     return [bl.Comparison(3, 0.9, 0.0, (0.0, 0.0), True, (), np.zeros(0),
        ...                           config=bl.CMCConfig()) for _ in cands]
        >>> items = [(s, {"case_id": f"c{i}", "agency": "A"}) for i, s in enumerate(scans)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/l.db", comparer=plain) as db:
        ...         _ = db.ingest_many(items)
        ...         rows, n = db.comparisons_of(1, limit=5)
        ...         print(n, [(lead.a, lead.b, is_lead) for lead, is_lead in rows])
        2 [(1, 2, True), (1, 3, True)]
        """
        self._exhibits.get(exhibit_id)  # DatabaseError when there is no such exhibit
        return self._leads.pairs_of(exhibit_id, self.threshold, limit=limit, offset=offset)

    def audit_page(
        self, *, limit: int = 50, offset: int = 0, action: str | None = None, who: str | None = None
    ) -> tuple[list[dict], int]:
        """One page of the audit trail, newest first, and how many records match.

        Examples
        --------
        >>> import tempfile
        >>> from balllink.database import LeadDatabase
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/l.db", user="ann") as db:
        ...         db.log_event("export", what="leads")
        ...         db.log_event("report", lead=1)
        ...         records, n = db.audit_page(limit=1)
        ...         print(n, records[0]["action"], records[0]["who"])
        2 report ann
        """
        return self._audit.page(limit=limit, offset=offset, action=action, who=who)
