"""Lead database durability: schema migration, index repair, concurrent readers, crash safety.

Uses the stand-ins of conftest.py (``open_db``, ``fake_scans``...), see test_database.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import balllink as bl
from balllink.database import _schema
from balllink.database._audit import audit_hash
from balllink.leads import Flag, Scope


def _v1_copy(new_sqlite: Path, old_sqlite: Path) -> None:
    """Copy every row of a database into a file made by the version-1 schema SQL."""
    con = sqlite3.connect(old_sqlite)
    con.executescript(_schema._MIGRATIONS[1])
    con.execute("INSERT INTO schema_version VALUES (1, '2025-01-01T00:00:00+00:00')")
    con.execute("ATTACH DATABASE ? AS new", (str(new_sqlite),))
    for table in ("settings", "exhibits", "comparisons", "lead_status", "audit"):
        cols = ",".join(r[1] for r in con.execute(f"PRAGMA main.table_info({table})"))
        con.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM new.{table}")
    # the records as an old balllink wrote them: chained without row commitments
    prev = "0" * 64
    for seq, at, who, action, detail in con.execute(
        "SELECT seq, time, who, action, detail FROM main.audit ORDER BY seq"
    ).fetchall():
        digest = audit_hash(prev, seq, at, who, action, detail)
        con.execute("UPDATE main.audit SET prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq))
        con.execute(
            "UPDATE main.settings SET value=? WHERE key='audit_head'", (f'[{seq}, "{digest}"]',)
        )
        prev = digest
    con.commit()
    con.execute("DETACH DATABASE new")
    con.close()


def test_old_schema_database_migrates_without_losing_rows(
    tmp_path, open_db, fake_scans, items_for, flagged, ring
):
    scans, _ = fake_scans(2, 3, seed=17)
    path = tmp_path / "l.db"
    with open_db(path) as db:
        db.ingest_many(items_for(scans[:5]))
        db.set_status(db.leads()[0].id, "confirmed", examiner="Ann")
        before = [(x.id, x.a, x.b, x.score, x.status) for x in db.leads()]
        exhibits = [(e.id, e.case_id, e.scan_hash) for e in db.exhibits()]
        n_audit = len(db.audit())
    sqlite = path / "leads.sqlite"
    old = tmp_path / "old.sqlite"
    _v1_copy(sqlite, old)
    for f in path.glob("leads.sqlite*"):
        f.unlink()
    old.rename(sqlite)
    con = sqlite3.connect(sqlite)
    assert "flags" not in [r[1] for r in con.execute("PRAGMA table_info(exhibits)")]
    con.close()

    with open_db(path) as db:
        con = db._sql()
        version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        assert version == _schema.SCHEMA_VERSION >= 3
        assert [(e.id, e.case_id, e.scan_hash) for e in db.exhibits()] == exhibits
        assert [(x.id, x.a, x.b, x.score, x.status) for x in db.leads()] == before
        assert all(e.flags == () for e in db.exhibits())
        assert all(x.mirrored is None and not x.flagged for x in db.leads())  # not recorded
        assert len(db.audit()) == n_audit and db.check().ok
        # rows stored before the row commitments: "not covered", not tampered
        assert any("not covered" in n for n in db.verify_audit().notes)
        # and it takes new exhibits, flagged or not, with the new columns
        rep = db.ingest_many([flagged(scans[5])], agency="Z", case_id="new")
        (new,) = rep.ingested
        assert db.exhibit(new).flags == (Flag(**ring),)
        fresh = [x for x in db.leads() if new in (x.a, x.b)]
        assert fresh and all(x.mirrored is False and x.flagged for x in fresh)
        assert db.check().ok and db.verify_audit().ok


def test_missing_or_corrupt_index_is_rebuilt_with_warning(tmp_path, open_db, fake_scans, items_for):
    scans, _ = fake_scans(3, 2, seed=5)
    path = tmp_path / "l.db"
    with open_db(path) as db:
        db.ingest_many(items_for(scans))
        before = db.search(1, k=3)
    for damage in ("corrupt", "missing"):
        index_file = path / "index.faiss"
        if damage == "corrupt":
            index_file.write_bytes(index_file.read_bytes()[:50])
        else:
            index_file.unlink()
        with open_db(path, rescore_k=2) as db:
            with pytest.warns(RuntimeWarning, match="rebuilding"):
                n = len(db.index)
            assert n == 6
            assert db.check().ok
            after = db.search(1, k=3)
            assert [c.exhibit_id for c in after] == [c.exhibit_id for c in before]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_db(path) as db:  # saved again: no warning the next time
                assert len(db.index) == 6


def test_index_catches_up_after_unsaved_ingest(tmp_path, open_db, fake_scans):
    scans, _ = fake_scans(2, 2, seed=6)
    path = tmp_path / "l.db"
    with open_db(path) as db:
        db.ingest_many(scans[:2])
    db = open_db(path)
    db.ingest_many(scans[2:], save_every=10**6)
    db._index.dirty = False  # simulate a crash: the index file was not saved
    db._sql.close()
    with open_db(path) as db:
        assert len(db.index) == 4 and db.check().ok


def test_newer_schema_refused_and_foreign_sqlite_refused(tmp_path, open_db):
    path = tmp_path / "l.db"
    open_db(path).close()
    con = sqlite3.connect(path / "leads.sqlite")
    con.execute("INSERT INTO schema_version VALUES (99, 'future')")
    con.commit()
    con.close()
    with pytest.raises(bl.DatabaseError, match="newer"):
        open_db(path)
    other = tmp_path / "other.db"
    other.mkdir()
    con = sqlite3.connect(other / "leads.sqlite")
    con.execute("CREATE TABLE x (y)")
    con.commit()
    con.close()
    with pytest.raises(bl.DatabaseError, match="not a balllink"):
        open_db(other)
    f = tmp_path / "file.db"
    f.write_text("x")
    with pytest.raises(bl.DatabaseError, match="folder"):
        open_db(f)


def test_readers_work_while_a_writer_holds_the_lock(tmp_path, open_db, fake_scans):
    scans, _ = fake_scans(2, 2, seed=7)
    path = tmp_path / "l.db"
    writer = open_db(path)
    writer.ingest_many(scans[:2], agency="A")
    writer._lock.acquire()  # a writer in the middle of a batch
    try:
        reader = open_db(path, rescore_k=1)
        writer._ingester.ingest_one(scans[2], {"agency": "B"}, correlate=True, scope=Scope())
        assert reader.count() == 3
        res = reader.search(scans[3], k=1)  # the reader's index catches up in memory
        assert res.n_in_scope == 3 and res.n_rescored == 1
        assert len(reader.index) == 3
        reader.close()  # does not wait for the writer's lock
    finally:
        writer._lock.release()
        writer.close()
    with open_db(path) as db:
        assert db.check().ok and len(db.index) == 3


# --------------------------------------------------------------------------- crash safety

_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import conftest as t  # the stand-ins
    from balllink.database import LeadDatabase

    def slow(query, candidates):  # slow enough that the kills land mid-batch
        time.sleep(0.02)
        return t.fake_compare_many(query, candidates)

    scans, _ = t.fake_scans(5, 4, seed=11)
    db = LeadDatabase({path!r}, threshold=5.0, comparer=slow, index_class=t.FakeIndex,
                      preparer=t.passthrough)
    print("START", flush=True)
    rep = db.ingest_many(t.items_for(scans), save_every=3)
    db.close()
    print("DONE", len(rep.ingested), len(rep.duplicates))
    """
)


def test_killed_ingest_resumes_without_duplicates(tmp_path, open_db):
    path = tmp_path / "l.db"
    code = _CHILD.format(tests=str(Path(__file__).parents[1]), path=str(path))
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    counts = []
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "START"  # imports done, batch starting
        time.sleep(float(rng.uniform(0.0, 0.3)))  # a random moment of the batch
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with open_db(path) as db:
            rep = db.check()
            assert rep.ok, rep.problems
            if killed:
                counts.append(db.count())
    # the kills landed mid-batch: some exhibits stored, not all, more after each restart
    assert len([c for c in counts if 0 < c < 20]) >= 2, counts
    assert counts == sorted(counts)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-3] == "DONE"

    with open_db(path) as db:
        assert db.check(deep=True).ok
        assert db.count() == 20
        hashes = [e.source_hash for e in db.exhibits()]
        assert len(set(hashes)) == 20
        # every pair compared exactly once, whatever the kills
        con = db._sql()
        assert con.execute("SELECT count(*) FROM comparisons").fetchone()[0] == 190
        assert len(db.series()) == 5
        assert db.verify_audit().ok
        ingests = [r for r in db.audit() if r["action"] == "ingest"]
        assert len(ingests) == 20
    assert json.loads((path / "index.json").read_text())["n"] == 20
