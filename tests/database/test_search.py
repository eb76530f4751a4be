"""Search: scope to SQL, retrieval, the read-only candidate list."""

from __future__ import annotations

import datetime as dt

import pytest

from balllink.database._search import scope_where
from balllink.leads import Scope


def test_scope_where_terms_and_parameters():
    where, params = scope_where(
        Scope(
            agencies=["A", "B"],
            since=dt.date(2025, 1, 2),
            until="2025-03-04T10:00",
            caliber="9mm",
            kind="test_fire",
            bbox=(38, -95, 40, -94),
        )
    )
    assert where == (
        "agency IN (?,?) AND occurred >= ? AND occurred <= ? AND caliber IN (?) "
        "AND kind = ? AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?"
    )
    assert params == ["A", "B", "2025-01-02", "2025-03-04", "9mm", "test_fire",
                      38.0, 40.0, -95.0, -94.0]  # fmt: skip
    assert scope_where(Scope(max_rescore=3)) == ("1", [])


def test_exhibits_in_a_scope(tmp_path, open_db, fake_scans, items_for):
    scans, _ = fake_scans(3, 2, seed=2)
    with open_db(tmp_path / "l.db") as db:
        ids = db.ingest_many(items_for(scans), correlate=False).ingested
        # items_for: agencies CITY, COUNTY, STATE in turn, months 1..6
        county = db.exhibits({"agencies": "COUNTY"})
        assert [e.id for e in county] == [ids[1], ids[4]]
        spring = db.exhibits(Scope(since="2025-03-01", until="2025-05-31"))
        assert [e.occurred for e in spring] == ["2025-03-15", "2025-04-15", "2025-05-15"]
        assert [e.id for e in db.exhibits(case_id="C5")] == [ids[5]]


def test_candidates_read_only_and_equal_to_search(tmp_path, open_db, fake_scans, items_for):
    scans, _ = fake_scans(4, 2, seed=6)
    with open_db(tmp_path / "l.db", rescore_k=3) as db:
        ids = db.ingest_many(items_for(scans)).ingested
        n_audit = len(db.audit())
        listed = db.candidates(ids[0], k=3)
        assert len(db.audit()) == n_audit  # nothing written
        searched = db.search(ids[0], k=3)
        assert [r["action"] for r in db.audit()[n_audit:]] == ["search"]
        assert listed.as_dict() == searched.as_dict()
        assert listed[0].exhibit_id == ids[1]  # the same-gun casing first


def test_retrieve_keeps_to_the_scope_and_the_rescoring_budget(
    tmp_path, open_db, fake_scans, items_for
):
    scans, guns = fake_scans(6, 2, seed=7)
    with open_db(tmp_path / "l.db", rescore_k=2) as db:
        ids = db.ingest_many(items_for(scans[1:]), correlate=False).ingested
        found = db.retrieve(scans[0])  # default budget: rescore_k
        assert found.n_in_scope == 11 and len(found.ids) == 2
        assert found.ids[0] == ids[0]  # gun 0's other firing, through the index
        assert found.retrieval_scores[0] == pytest.approx(max(found.retrieval_scores))
        every = db.retrieve(scans[0], scope={"max_rescore": 50})
        assert sorted(every.ids) == ids and every.retrieval_scores is None  # no index needed
        city = db.retrieve(scans[0], scope={"agencies": ["CITY"], "max_rescore": 50})
        assert {db.exhibit(i).agency for i in city.ids} == {"CITY"}
        assert len(city.ids) == city.n_in_scope == 4
        assert guns[0] == guns[1]


def test_retrieve_many_is_retrieve_of_each_query_in_one_index_search(
    tmp_path, open_db, fake_scans, items_for, monkeypatch
):
    """Batch retrieval (what `link` plans with) gives each query what `retrieve` gives it,
    its own exhibit left out, the scope and budget kept; the index is searched once."""
    scans, _ = fake_scans(6, 2, seed=8)
    with open_db(tmp_path / "l.db", rescore_k=2) as db:
        ids = db.ingest_many(items_for(scans), correlate=False).ingested
        searcher, index = db._searcher, db._index.get()
        preps = [db.scan(i) for i in ids]
        scopes = [Scope(max_rescore=3), Scope(agencies=("CITY",), max_rescore=2)]
        one = {s: [searcher.retrieve(p, s, exclude=i) for p, i in zip(preps, ids)] for s in scopes}
        calls = []
        real = type(index).search
        monkeypatch.setattr(
            type(index), "search", lambda self, q, k: calls.append(len(q)) or real(self, q, k)
        )
        for s in scopes:
            many = searcher.retrieve_many(preps, s, ids)
            assert [(r.ids, r.n_in_scope) for r in many] == [(r.ids, r.n_in_scope) for r in one[s]]
            for r, r1 in zip(many, one[s]):  # a batch search rounds differently (float32)
                assert r.retrieval_scores == pytest.approx(r1.retrieval_scores, rel=1e-4, abs=1e-6)
            assert all(i not in r.ids for i, r in zip(ids, many))  # never itself
        assert calls[0] == len(ids)  # every query in one search
        small = Scope(agencies=("CITY",), max_rescore=50)  # all in scope: no index
        calls.clear()
        many = searcher.retrieve_many(preps[:2], small, [ids[0], None])
        assert calls == [] and many[0].n_in_scope == 3 and many[1].n_in_scope == 4
        assert ids[0] not in many[0].ids and ids[0] in many[1].ids
