"""A database's index kind by name (``"exact"``, ``"compressed:N"``): kept with the
database (audited), used when opened again without one, a saved index of another kind
rebuilt; ``balllink --index``; an unknown kind refused with the kinds named."""

from __future__ import annotations

import sqlite3

import pytest
from tests.conftest import fake_compare_many, fake_scans, passthrough

from balllink.cli import main
from balllink.database import LeadDatabase
from balllink.index import CasingIndex, CompressedIndex, index_kind


def _db(path, **kw):
    return LeadDatabase(path, preparer=passthrough, comparer=fake_compare_many, **kw)


def _kind_stored(path):
    con = sqlite3.connect(path / "leads.sqlite")
    try:
        row = con.execute("SELECT value FROM settings WHERE key='index_kind'").fetchone()
        return None if row is None else row[0]
    finally:
        con.close()


def test_index_kind_names():
    assert index_kind("exact") is CasingIndex and index_kind(" Compressed:500 ") == CompressedIndex(
        500
    )
    for bad in ("ivf", "compressed", "compressed:0", "compressed:x", ""):
        with pytest.raises(ValueError, match=r"'exact'.*'compressed:N'"):
            index_kind(bad)
    with pytest.raises(ValueError, match="n_casings >= 1"):
        CompressedIndex(0)


def test_a_named_kind_is_kept_with_the_database_and_a_saved_index_of_another_kind_rebuilt(
    tmp_path,
):
    scans, _ = fake_scans(3, 2, seed=4)
    path = tmp_path / "k.db"
    with _db(path) as db:  # no kind given: exact, nothing stored
        db.ingest_many(scans, correlate=False)
        assert db.index.factory_ == "Flat" and _kind_stored(path) is None
    with _db(path, index_class="compressed:1000") as db:
        assert _kind_stored(path) == "compressed:1000"
        index = db.index
        assert index.factory_.startswith("IVF") and len(index) == 6  # rebuilt: every exhibit
        assert db.verify_audit().ok
    with _db(path) as db:  # opened again without a kind: the stored one, the saved index
        assert db.index.factory_ == CompressedIndex(1000)().factory_ and len(db.index) == 6
        hits = db.candidates(db.exhibits()[0].id, k=3)
        assert len(hits) == 3
    with _db(path, index_class="exact") as db:
        assert _kind_stored(path) == "exact" and db.index.factory_ == "Flat"
        assert len(db.index) == 6 and db.check().ok and db.verify_audit().ok
    with _db(path, readonly=True, index_class="compressed:2000") as db:  # read-only: not stored
        assert db.index.factory_.startswith("IVF")
    assert _kind_stored(path) == "exact"
    with _db(path, index_class=CompressedIndex(1000)) as db:  # the kind as an object
        assert _kind_stored(path) == "compressed:1000" and db.index.factory_.startswith("IVF")


def test_the_cli_index_option_sets_the_kind_and_refuses_an_unknown_one(tmp_path, capsys):
    path = tmp_path / "c.db"
    scans, _ = fake_scans(3, 2, seed=4)
    with _db(path) as db:
        db.ingest_many(scans, correlate=False)
    code = main(["--index", "compressed:1000", "leads", "--db", str(path)])
    assert code == 0 and _kind_stored(path) == "compressed:1000"
    with _db(path) as db:
        assert db.index.factory_.startswith("IVF") and len(db.index) == 6
    code = main(["leads", "--db", str(path), "--index", "hnsw"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown index kind 'hnsw'" in err and "compressed:N" in err
    assert _kind_stored(path) == "compressed:1000"
