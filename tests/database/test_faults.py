"""Fault injection (issue 12): a full disk, a damaged SQLite page, kills during set_status and
during an index rebuild. After each the database opens (or refuses with a clear
`DatabaseError`) and nothing stored before is lost.

Uses the stand-ins of conftest.py (``open_db``, ``fake_scans``...), see test_database.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from balllink.errors import DatabaseError

SHAPE = (64, 64)


def _populate(path, open_db, fake_scans, items_for, n=6):
    scans, _ = fake_scans(2, n // 2, seed=3, shape=SHAPE)
    with open_db(path) as db:
        db.ingest_many(items_for(scans))
    return scans


def _counts(db) -> tuple[int, int, int]:
    con = db._sql()
    return tuple(
        con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("exhibits", "comparisons", "lead_status")
    )


def _temporaries(path: Path) -> list[Path]:
    return [p for p in path.rglob(".*.tmp*")]


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root) or None (the test simulates ENOSPC instead)."""
    if os.geteuid() != 0:
        yield None
        return
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_full_disk_keeps_the_database(small_disk, tmp_path, open_db, fake_scans, items_for,
                                      monkeypatch):  # fmt: skip
    base = small_disk if small_disk is not None else tmp_path
    path = base / "l.db"
    scans = _populate(path, open_db, fake_scans, items_for, n=4)
    more, _ = fake_scans(2, 2, seed=99, shape=SHAPE)
    with open_db(path) as db:
        before = _counts(db)
        lead = db.leads()[0].id
    db = open_db(path)
    assert len(db.index) == before[0]  # opened before the disk fills up
    if small_disk is not None:
        _fill(small_disk)
        try:  # a second opening: works (the -shm exists) or is refused clearly
            open_db(path).close()
        except DatabaseError as exc:
            assert "disk is full" in str(exc)
    else:  # simulate: every byte written to a file of the database fails with ENOSPC

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Path, "write_bytes", full)
        monkeypatch.setattr(np, "save", full)
    try:
        with pytest.raises(DatabaseError, match="disk is full"):
            db.ingest_many([(more[0], {"agency": "X", "case_id": "new"})])
        try:  # SQLite may still have room in its WAL: either it works or it says why
            db.set_status(lead, "rejected", examiner="Ann")
        except DatabaseError as exc:
            assert "disk is full" in str(exc)
        db._index.dirty = True
        assert db._index.save() is False  # logged, not raised
    finally:
        db.close()
    assert not _temporaries(path), _temporaries(path)
    if small_disk is not None:
        (small_disk / "filler").unlink()
    monkeypatch.undo()
    with open_db(path) as db:
        after = _counts(db)
        assert after[:2] == before[:2] and after[2] in (before[2], before[2] + 1)
        assert db.check().ok, db.check().problems
        assert db.ingest(more[0], agency="X", case_id="new") > 0  # space again: goes on
    assert scans


# --------------------------------------------------------------------------- damaged page


def test_damaged_sqlite_page_is_reported_not_raised(tmp_path, open_db, fake_scans, items_for):
    path = tmp_path / "l.db"
    _populate(path, open_db, fake_scans, items_for, n=8)
    sqlite = path / "leads.sqlite"
    data = bytearray(sqlite.read_bytes())
    page = 4096
    assert len(data) >= 4 * page
    mid = (len(data) // page // 2) * page
    data[mid : mid + page] = os.urandom(page)  # a whole page of garbage in the middle
    sqlite.write_bytes(bytes(data))
    try:
        db = open_db(path)
    except DatabaseError as exc:  # refused clearly: fine
        assert str(path) in str(exc)
        return
    with db:
        rep = db.check()
        assert not rep.ok
        assert any("damaged" in p or p.startswith("SQLite") for p in rep.problems), rep.problems


def test_check_reports_damage_that_makes_sqlite_raise(tmp_path, open_db, fake_scans, items_for):
    path = tmp_path / "l.db"
    _populate(path, open_db, fake_scans, items_for, n=4)
    with open_db(path) as db:
        real = db._sql._con

        class Broken:  # quick_check itself raises, as SQLite does on some damaged pages
            def execute(self, sql, *a):
                if "quick_check" in sql:
                    import sqlite3

                    raise sqlite3.DatabaseError("database disk image is malformed")
                return real.execute(sql, *a)

        db._sql._con = Broken()
        try:
            rep = db.check()
        finally:
            db._sql._con = real
        assert not rep.ok and rep.problems[0].startswith("database file is damaged:")


# --------------------------------------------------------------------------- kills

_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import conftest as t

    class SlowIndex(t.FakeIndex):
        def add(self, ids, scans):
            time.sleep(0.01)
            super().add(ids, scans)

        def save(self, path):
            time.sleep(0.01)
            super().save(path)

    t.FakeIndex = SlowIndex  # what open_stand_in_db uses
    db = t.open_stand_in_db({path!r})
    leads = [x.id for x in db.leads()]
    print("START", flush=True)
    for i in range(100000):
        if {what!r} == "status":
            db.set_status(leads[i % len(leads)], ("confirmed", "rejected", "new")[i % 3],
                          examiner="Ann", note=str(i))
        else:
            db.rebuild_index()
    """
)


@pytest.mark.parametrize("what", ["status", "rebuild"])
def test_kill_during_writes_loses_nothing(tmp_path, open_db, fake_scans, items_for, what):
    path = tmp_path / "l.db"
    _populate(path, open_db, fake_scans, items_for, n=6)
    with open_db(path) as db:
        before = _counts(db)
        exhibits = [(e.id, e.scan_hash) for e in db.exhibits()]
    code = _KILL_CHILD.format(tests=str(Path(__file__).parents[1]), path=str(path), what=what)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(1)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        assert proc.stdout.readline().strip() == "START"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        assert proc.poll() is None  # still writing: the kill lands mid-work
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with open_db(path) as db:
            after = _counts(db)
            assert after[:2] == before[:2]
            assert [(e.id, e.scan_hash) for e in db.exhibits()] == exhibits
            rep = db.check()
            assert rep.ok, rep.problems
            assert db.verify_audit().ok
            statuses = [r for r in db.audit() if r["action"] == "status"]
            assert len(statuses) == after[2]  # each status row with its audit record
            assert len(db.index) == len(exhibits)
