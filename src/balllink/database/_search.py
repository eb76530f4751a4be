"""Search: scope to SQL, retrieval through the index, full rescoring, chance probability.

A search looks at the exhibits in a `Scope`; at most ``scope.max_rescore`` of them, the best
the candidate index finds (all of them when there are fewer), are compared in full; each
candidate's ``p_chance`` is the share of the database's non-match scores at least as high
(`balllink.leads.chance_probability`); non-matches are the stored pairs that are not leads
by the database's rule (`IS_LEAD`) and not confirmed, or rejected. Each candidate carries
its LR under the model in force and whether it is a lead by that rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .._scan import Scan
from ..leads import Candidate, Flag, Scope, SearchResult, chance_probability, iso_date
from ._audit import AuditTrail
from ._exhibits import Exhibits, prepared_flags, stored_flags
from ._index_cache import IndexCache
from ._leads import IS_LEAD
from ._lr import LRBook, features_of
from ._schema import LATEST_STATUS_JOIN, Sql
from ._settings import Settings

__all__ = ["NullScores", "Query", "Retrieval", "Searcher", "retrieve_in", "scope_where"]


def scope_where(scope: Scope) -> tuple[str, list]:
    """SQL condition on the ``exhibits`` table for a scope, and its parameters ("1" when open).

    Examples
    --------
    >>> scope_where(Scope(agencies=["A"], since="2025-01-01", max_rescore=10))
    ('agency IN (?) AND occurred >= ?', ['A', '2025-01-01'])
    >>> scope_where(Scope())
    ('1', [])
    """
    terms: list[str] = []
    params: list = []
    agencies = scope.names("agencies")
    if agencies:
        terms.append(f"agency IN ({','.join('?' * len(agencies))})")
        params += agencies
    if scope.since is not None:
        terms.append("occurred >= ?")
        params.append(iso_date(scope.since))
    if scope.until is not None:
        terms.append("occurred <= ?")
        params.append(iso_date(scope.until))
    calibers = scope.names("caliber")
    if calibers:
        terms.append(f"caliber IN ({','.join('?' * len(calibers))})")
        params += calibers
    if scope.kind is not None:
        terms.append("kind = ?")
        params.append(scope.kind)
    if scope.bbox is not None:
        lat0, lon0, lat1, lon1 = (float(v) for v in scope.bbox)
        terms.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
        params += [lat0, lat1, lon0, lon1]
    return (" AND ".join(terms) or "1"), params


class Retrieval(NamedTuple):
    """The exhibits of a scope chosen for the full comparison."""

    ids: list[int]
    retrieval_scores: list[float] | None  # None: every exhibit in scope, no index used
    n_in_scope: int


class Query(NamedTuple):
    """A search query, prepared."""

    scan: Scan
    exhibit_id: int | None
    label: str
    flags: tuple[Flag, ...]


class NullScores:
    """Scores of pairs taken as non-matches: not leads by the database's rule (`IS_LEAD`:
    the LR of the model in force, else the score threshold) and not confirmed, or rejected
    by an examiner. Cached until comparisons, statuses, LRs or thresholds change."""

    def __init__(self, sql: Sql):
        self._sql = sql
        self._cache: tuple[tuple, np.ndarray] | None = None

    def get(self, threshold: float, model_id: str = "", lead_log10: float = math.inf):
        con = self._sql()
        row = con.execute(
            "SELECT (SELECT max(id) FROM comparisons), (SELECT max(id) FROM lead_status), "
            "(SELECT count(*) FROM lr WHERE model = ?)",
            (model_id,),
        ).fetchone()
        key = (row[0], row[1], row[2], threshold, model_id, lead_log10)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        rows = con.execute(
            f"SELECT c.score FROM comparisons c {LATEST_STATUS_JOIN} "
            "LEFT JOIN lr l ON l.comparison = c.id AND l.model = ? "
            f"WHERE (NOT {IS_LEAD} AND coalesce(s.status, '') != 'confirmed') "
            "OR s.status = 'rejected'",
            (model_id, lead_log10 - 1e-12, threshold),
        )
        null = np.sort(np.fromiter((r[0] for r in rows), dtype=np.float64))
        self._cache = (key, null)
        return null


class Searcher:
    """Ranked, rescored candidates of one database.

    ``read(path) -> Scan``, ``prepare(scan) -> Scan`` and ``compare_many(query, scans)``
    are the database's reader, preparer and comparer.
    """

    def __init__(
        self,
        sql: Sql,
        exhibits: Exhibits,
        index: IndexCache,
        settings: Settings,
        audit: AuditTrail,
        lr: LRBook,
        *,
        read: Callable,
        prepare: Callable,
        compare_many: Callable,
    ):
        self._sql = sql
        self._exhibits = exhibits
        self._index = index
        self._settings = settings
        self._audit = audit
        self._lr = lr
        self.read = read
        self.prepare = prepare
        self.compare_many = compare_many
        self._null = NullScores(sql)

    def query(self, exhibit_or_scan) -> Query:
        """A stored exhibit by id (its stored scan), or a scan or scan file, prepared."""
        if isinstance(exhibit_or_scan, int | np.integer):
            eid = int(exhibit_or_scan)
            flags = self._exhibits.get(eid).flags
            return Query(self._exhibits.scan(eid), eid, f"exhibit {eid}", flags)
        scan = exhibit_or_scan
        if not isinstance(scan, Scan):
            label = str(scan)
            scan = self.read(scan)
        else:
            label = scan.source or scan.name
        prep = self.prepare(scan)
        return Query(prep, None, label, prepared_flags(scan, prep))

    def retrieve(self, prep: Scan, scope: Scope, exclude: int | None = None) -> Retrieval:
        """The exhibits in ``scope`` to compare in full with ``prep`` (at most
        ``scope.max_rescore``: the best the index finds when there are more)."""
        return self.retrieve_many([prep], scope, [exclude])[0]

    def retrieve_many(
        self, preps: Sequence[Scan], scope: Scope, excludes: Sequence[int | None]
    ) -> list[Retrieval]:
        """`retrieve` of several queries: the scope is read once and the index searched
        with all of them at once (one FAISS call: a matrix product for a flat index, and
        one pass of its threads), which is what makes batch linking cheap on the client."""
        return retrieve_in(
            self._index.get, preps, self.in_scope(scope), excludes, int(scope.max_rescore)
        )

    def in_scope(self, scope: Scope) -> np.ndarray:
        """The ids of the exhibits in ``scope``, int64."""
        where, params = scope_where(scope)
        return np.asarray(self._exhibits.ids(where, params), dtype=np.int64)

    def candidates(self, exhibit_or_scan, k: int, scope: Scope) -> SearchResult:
        """The ranked candidate list; reads only (no audit record)."""
        return self._rank(self.query(exhibit_or_scan), k, scope)

    def search(self, exhibit_or_scan, k: int, scope: Scope) -> SearchResult:
        """`candidates`, recorded in the audit trail."""
        query = self.query(exhibit_or_scan)
        res = self._rank(query, k, scope)
        self._audit.log_event(  # its own transaction; not recorded when read-only
            "search",
            query=query.label,
            k=int(k),
            n_in_scope=res.n_in_scope,
            n_rescored=res.n_rescored,
            top=[c.exhibit_id for c in res],
        )
        return res

    def _rank(self, query: Query, k: int, scope: Scope) -> SearchResult:
        found = self.retrieve(query.scan, scope, exclude=query.exhibit_id)
        ids, scans = self._exhibits.loadable(found.ids)  # damaged scans: skipped, warned
        comps = self.compare_many(query.scan, scans) if ids else []
        rscore = dict(zip(found.ids, found.retrieval_scores or ()))
        model = self._lr.model()
        lead_t = float(model.lead_log10_lr)
        null = self._null.get(self._settings.threshold, self._lr.model_id, lead_t)
        info = self._exhibits.summaries(ids)
        evidence = self._evidence(model, query.scan, scans, comps)
        rows = []
        for eid, cmp, ev in zip(ids, comps, evidence):
            score = float(cmp.score) if np.isfinite(cmp.score) else 0.0
            short = (cmp.reason or "").startswith("too little evidence")
            if ev:
                lead = ev["log10_lr"] >= lead_t - 1e-12 and not short
            else:
                lead = score >= self._settings.threshold
            dy, dx = (float(v) for v in cmp.translation_um)
            rows.append(
                Candidate(
                    rank=0,
                    exhibit_id=eid,
                    score=score,
                    cmc_count=int(cmp.cmc_count),
                    rotation_deg=float(cmp.rotation_deg),
                    translation_um=(dy, dx),
                    p_chance=chance_probability(score, null),
                    case_id=info[eid]["case_id"],
                    agency=info[eid]["agency"],
                    retrieval_score=rscore.get(eid),
                    mirrored=bool(cmp.mirrored),
                    flags=stored_flags(info[eid]["flags"]),
                    lead=bool(lead),
                    **ev,
                )
            )
        rows.sort(key=lambda c: (-c.score, -c.cmc_count, c.exhibit_id))
        cands = [replace(c, rank=n + 1) for n, c in enumerate(rows[: int(k)])]
        return SearchResult(
            cands,
            found.n_in_scope,
            len(ids),
            query.exhibit_id,
            self._settings.threshold,
            scope,
            tuple(query.flags),
            lead_t,
            self._lr.model_id,
        )

    def _evidence(self, model, query: Scan, scans, comps) -> list[dict]:
        """The LR fields of each candidate (empty when no LR applies: legacy rule)."""
        out, rows, at = [], [], []
        for scan, cmp in zip(scans, comps):
            f = features_of(cmp, query, scan)
            ok = f.n_cells is not None and (model.kind == "count" or f.raw_score is not None)
            out.append({})
            if ok and self._lr.applies(model, cmp):
                at.append(len(out) - 1)
                rows.append(
                    {"cmc_count": int(cmp.cmc_count), "n_cells": f.n_cells,
                     "raw_score": f.raw_score, "source_spacing_um": f.spacing_um}
                )  # fmt: skip
        if rows:
            e = LRBook.evaluate(model, rows)
            lo_b, hi_b = model.bounds
            for j, i in enumerate(at):
                v = float(e.log10_lr[j])
                out[i] = {
                    "log10_lr": v,
                    "lr_interval": (10.0 ** e.lo[j], 10.0 ** e.hi[j]),
                    "lr_in_range": bool(e.in_range[j]),
                    "lr_reason": e.reason[j],
                    "lr_at_bound": bool(v <= lo_b or v >= hi_b),
                }
        return out


def retrieve_in(
    get_index: Callable,
    preps: Sequence[Scan],
    in_scope: np.ndarray,
    excludes: Sequence[int | None],
    limit: int,
) -> list[Retrieval]:
    """The retrieval of `Searcher.retrieve_many` on plain data, where a Dask worker can
    run it too (`balllink.database._link.retrieve_group`): the queries' candidates among
    ``in_scope`` (int64 ids), at most ``limit`` each, ``excludes[i]`` left out of query
    ``i``'s; every one in scope when that is ``limit`` or fewer, else the best of one
    search of ``get_index()`` (called only then), widened until ``limit`` are in scope."""
    allowed = set(in_scope.tolist())
    out: list[Retrieval | None] = [None] * len(preps)
    n_in = [int(in_scope.size) - (x is not None and int(x) in allowed) for x in excludes]
    todo = []
    for qi, exclude in enumerate(excludes):
        if n_in[qi] <= limit:
            ids = in_scope[in_scope != exclude] if exclude is not None else in_scope
            out[qi] = Retrieval(ids.tolist(), None, n_in[qi])
        else:
            todo.append(qi)
    if not todo:
        return out  # type: ignore[return-value]
    index = get_index()
    k = min(len(index), max(4 * limit, 64))
    while todo:
        found_ids, scores = index.search([preps[qi] for qi in todo], k)
        wider = []
        for row, qi in enumerate(todo):
            keep = [
                (int(i), float(sc))
                for i, sc in zip(found_ids[row], scores[row])
                if i >= 0 and i != excludes[qi] and int(i) in allowed
            ]
            if len(keep) >= limit or k >= len(index):
                keep = keep[:limit]
                out[qi] = Retrieval([i for i, _ in keep], [sc for _, sc in keep], n_in[qi])
            else:
                wider.append(qi)  # too few in scope among the k best: look further
        todo, k = wider, min(len(index), k * 4)
    return out  # type: ignore[return-value]
