"""Evidence integrity (issue 12, items 2-4): a database knows it exists; stored scans are
checked on load and quarantined; the audit chain covers the evidence rows."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from balllink.cli import main
from balllink.errors import DatabaseError

# the CLI opens these databases with the real index: it rebuilds the stand-in's, warned
pytestmark = pytest.mark.filterwarnings("ignore:.*candidate index unusable")


@pytest.fixture
def filled(tmp_path, open_db, fake_scans, items_for):
    """A database with 6 exhibits, leads, a confirmed status and a stored threshold."""
    scans, _ = fake_scans(3, 2, seed=11)
    path = tmp_path / "l.db"
    with open_db(path) as db:
        db.ingest_many(items_for(scans))
        db.set_status(db.leads()[0].id, "confirmed", examiner="Ann")
        assert db.check().ok and db.verify_audit().ok
    return path


def _sql(path, statement, params=()):
    con = sqlite3.connect(path / "leads.sqlite")
    con.execute(statement, params)
    con.commit()
    con.close()


# ---------------------------------------------------------------- (2) it knows it exists
@pytest.mark.parametrize("how", ["deleted", "emptied", "no_tables"])
def test_missing_or_empty_sqlite_beside_scans_is_refused(filled, open_db, how, capsys):
    manifest = (filled / "index.json").read_text()
    n_scans = len(list((filled / "scans").glob("*/*.npz")))
    for f in filled.glob("leads.sqlite*"):
        f.unlink()
    if how == "emptied":
        (filled / "leads.sqlite").write_bytes(b"")
    elif how == "no_tables":
        sqlite3.connect(filled / "leads.sqlite").execute("PRAGMA user_version=1").close()
    with pytest.raises(DatabaseError, match=r"deleted or emptied.*Restore leads\.sqlite"):
        open_db(filled)
    # nothing was created or overwritten
    assert (filled / "index.json").read_text() == manifest
    assert len(list((filled / "scans").glob("*/*.npz"))) == n_scans
    if how == "deleted":
        assert not (filled / "leads.sqlite").exists()
    # check reports it (exit 1, one line), no traceback
    assert main(["check", "--db", str(filled)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS" in out and "leads.sqlite is" in out


def test_new_database_in_empty_folder_still_opens(tmp_path, open_db):
    (tmp_path / "new.db").mkdir()
    with open_db(tmp_path / "new.db") as db:
        assert db.count() == 0 and db.check().ok


def test_empty_index_never_overwrites_a_saved_manifest(filled):
    from balllink.database._exhibits import Exhibits
    from balllink.database._index_cache import IndexCache

    class NoExhibits(Exhibits):
        def __init__(self):
            pass

        def count(self):
            return 0

        def ids(self, *a):
            return []

    from balllink.database._store import WriteLock

    manifest = (filled / "index.json").read_text()
    cache = IndexCache(filled, NoExhibits(), WriteLock(filled / "write.lock"))
    cache._index, cache.indexed, cache.dirty = object(), set(), True
    with pytest.raises(DatabaseError, match="not overwritten"):
        cache.save()
    assert (filled / "index.json").read_text() == manifest


# ---------------------------------------------------------------- (3) stored scans
def _truncate_one(path, exhibit_id=2):
    con = sqlite3.connect(path / "leads.sqlite")
    rel = con.execute("SELECT scan_file FROM exhibits WHERE id=?", (exhibit_id,)).fetchone()[0]
    con.close()
    f = path / "scans" / rel
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f


def test_check_without_deep_finds_a_truncated_scan(filled, open_db):
    f = _truncate_one(filled)
    with open_db(filled) as db:
        rep = db.check()
        assert not rep.ok
        assert any("exhibit 2" in p and "truncated" in p and str(f) in p for p in rep.problems)


def test_check_without_deep_finds_changed_bytes_of_same_size(filled, open_db):
    f = _truncate_one(filled)  # size stays recorded; now restore size with other bytes
    data = f.read_bytes()
    with open_db(filled) as db:
        size = db._sql().execute("SELECT file_size FROM exhibits WHERE id=2").fetchone()[0]
    f.write_bytes(data + b"\0" * (size - len(data)))
    with open_db(filled) as db:
        rep = db.check()
        assert any("exhibit 2" in p and "bytes changed" in p for p in rep.problems)


def test_truncated_scan_is_skipped_quarantined_and_flagged(filled, open_db, fake_scans, caplog):
    f = _truncate_one(filled)
    with open_db(filled, rescore_k=50) as db, caplog.at_level(logging.WARNING):
        res = db.search(1, k=10)  # search goes on without exhibit 2
        assert 2 not in [c.exhibit_id for c in res] and len(res.candidates) == 4
        assert any("exhibit 2" in r.getMessage() for r in caplog.records)
        assert not f.exists()
        moved = list((filled / "quarantine").glob("*.npz"))
        assert [m.name for m in moved] == [f.name]  # kept, never deleted
        assert "scan_damaged" in [fl.code for fl in db.exhibit(2).flags]
        assert db.audit()[-2]["action"] == "quarantine"
        assert db.verify_audit().ok  # the flag change is itself audited
        # a later ingest batch goes on too
        new, _ = fake_scans(1, 2, seed=99)
        rep = db.ingest_many(new, agency="Z", case_id="later")
        assert len(rep.ingested) == 2 and not rep.skipped
        rep = db.check()
        assert any("exhibit 2" in p and "quarantined" in p for p in rep.problems)
    with pytest.raises(DatabaseError, match="exhibit 2"):
        with open_db(filled) as db:
            db.scan(2)


def test_read_only_open_never_moves_a_damaged_scan(filled, open_db, caplog):
    f = _truncate_one(filled)
    before = f.read_bytes()
    with open_db(filled, readonly=True) as db, caplog.at_level(logging.WARNING):
        res = db.search(1, k=10)  # the search goes on without exhibit 2 ...
        assert 2 not in [c.exhibit_id for c in res]
        with pytest.raises(DatabaseError, match="exhibit 2"):
            db.scan(2)
    # ... but a read-only database is not changed: no quarantine, no flag
    assert f.read_bytes() == before and not (filled / "quarantine").exists()
    with open_db(filled) as db:
        assert "scan_damaged" not in [fl.code for fl in db.exhibit(2).flags]


def test_scan_with_wrong_content_is_refused_on_load(filled, open_db):
    """A valid npz of another scan under this exhibit's name: the content hash differs."""
    with open_db(filled) as db:
        a, b = db.exhibit(1).scan_path, db.exhibit(2).scan_path
    from pathlib import Path

    Path(b).write_bytes(Path(a).read_bytes())
    with open_db(filled) as db:
        with pytest.raises(DatabaseError, match=r"exhibit 2.*does not match its hash"):
            db.scan(2)
        assert not db.check(deep=True).ok


# ---------------------------------------------------------------- (4) audit covers evidence
TAMPERING = {
    "comparison score": "UPDATE comparisons SET score = -1 WHERE id = 1",
    "exhibit case": "UPDATE exhibits SET case_id = 'other' WHERE id = 3",
    "exhibit agency": "UPDATE exhibits SET agency = 'XX' WHERE id = 4",
    "status decision": "UPDATE lead_status SET status = 'rejected'",
    "threshold": "UPDATE settings SET value = '99.0' WHERE key = 'threshold'",
    "deleted comparison": "DELETE FROM comparisons WHERE id = 2",
    "inserted status": "INSERT INTO lead_status (lead, status, examiner, time) "
    "VALUES (1, 'rejected', 'mallory', '2030-01-01')",
}


@pytest.mark.parametrize("what", sorted(TAMPERING))
def test_row_edits_with_the_sqlite_shell_are_detected(filled, open_db, what, capsys):
    _sql(filled, TAMPERING[what])
    with open_db(filled, threshold=None) as db:  # (a given threshold would be stored anew)
        rep = db.verify_audit()
        assert not rep.ok and rep.problems, what
        assert not db.check().ok
    assert main(["check", "--db", str(filled)]) == 1
    assert "audit trail:" in capsys.readouterr().out


def test_deleted_last_record_is_detected(filled, open_db):
    _sql(filled, "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    with open_db(filled) as db:
        assert not db.verify_audit().ok


def test_deleted_trail_and_head_detected_with_a_kept_head(filled, open_db, capsys):
    assert main(["audit", "head", "--db", str(filled)]) == 0
    head, n = capsys.readouterr().out.split()
    assert len(head) == 64 and int(n) == 8  # threshold, 6 ingests, status
    with open_db(filled) as db:
        assert db.audit_head() == (head, 8) and db.verify_audit(head=head).ok
    _sql(filled, "DELETE FROM audit")
    _sql(filled, "DELETE FROM settings WHERE key = 'audit_head'")
    with open_db(filled) as db:
        rep = db.verify_audit(head=head)
        assert not rep.ok and "kept head" in rep.reason
    assert main(["check", "--db", str(filled), "--head", head]) == 1
    assert main(["audit", "verify", "--db", str(filled), "--head", head]) == 1


def test_consistent_rewrite_detected_against_a_kept_head(filled, open_db):
    """Edit a score, then re-hash the whole chain and every commitment consistently."""
    from balllink.database._audit import audit_hash, row_hash

    with open_db(filled) as db:
        head, _ = db.audit_head()
    con = sqlite3.connect(filled / "leads.sqlite")
    con.row_factory = sqlite3.Row
    con.execute("UPDATE comparisons SET score = -1 WHERE id = 1")
    prev = "0" * 64
    for r in con.execute("SELECT * FROM audit ORDER BY seq").fetchall():
        rows = json.loads(r["rows"])
        for c in rows:
            key = "key" if c[0] == "settings" else "id"
            row = con.execute(f"SELECT * FROM {c[0]} WHERE {key}=?", (c[1],)).fetchone()
            c[2] = row_hash(c[0], row)
        text = json.dumps(rows, separators=(",", ":"))
        digest = audit_hash(prev, r["seq"], r["time"], r["who"], r["action"], r["detail"], text)
        con.execute(
            "UPDATE audit SET rows=?, prev_hash=?, hash=? WHERE seq=?",
            (text, prev, digest, r["seq"]),
        )
        prev = digest
        n = r["seq"]
    con.execute("UPDATE settings SET value=? WHERE key='audit_head'", (json.dumps([n, prev]),))
    con.commit()
    con.close()
    with open_db(filled) as db:
        assert db.verify_audit().ok  # consistent inside: only a kept head tells
        assert not db.verify_audit(head=head).ok
        assert not db.check(head=head).ok


def test_untouched_database_verifies_with_its_head(filled, open_db, capsys):
    with open_db(filled) as db:
        head, _ = db.audit_head()
        assert db.check(head=head).ok
    assert main(["check", "--db", str(filled), "--head", head]) == 0
