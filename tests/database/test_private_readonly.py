"""Issue 12, item 9: private files and folders, a read-only mode, an explicit identity.

Uses the stand-ins of conftest.py (``open_db``, ``fake_scans``...), see test_database.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from balllink.cli import main
from balllink.database import LeadDatabase
from balllink.errors import DatabaseError


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _populated(path, open_db, fake_scans, items_for, **kw):
    scans, _ = fake_scans(2, 2, seed=5, shape=(64, 64))
    with open_db(path, **kw) as db:
        db.ingest_many(items_for(scans))
        db.set_status(db.leads()[0].id, "confirmed", examiner="Ann")
    return scans


def _modes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mode & 0o7777 for p in path.rglob("*")}


def test_database_is_private_whatever_the_umask(tmp_path, open_db, fake_scans, items_for):
    path = tmp_path / "l.db"
    with _umask(0o022):
        _populated(path, open_db, fake_scans, items_for)
        with open_db(path) as db:  # keeps -wal/-shm while open
            db.log_event("export", what="x")
            modes = {"": path.stat().st_mode & 0o7777, **_modes(path)}
    names = set(modes)
    assert {"leads.sqlite", "write.lock", "index.json", "index.faiss", "scans"} <= names
    assert any(n.endswith(".npz") for n in names)
    for name, mode in modes.items():
        want = 0o700 if (path / name).is_dir() else 0o600
        assert mode == want, (name, oct(mode))


def test_a_shared_folder_shares_its_new_files(tmp_path, open_db, fake_scans, items_for):
    path = tmp_path / "shared.db"
    path.mkdir()
    os.chmod(path, 0o2770)  # what a lab does: chmod g+rwX,g+s
    with _umask(0o022):
        _populated(path, open_db, fake_scans, items_for)
    for name, mode in _modes(path).items():
        if (path / name).is_dir():
            assert mode & 0o770 == 0o770, (name, oct(mode))
        else:
            assert mode == 0o660, (name, oct(mode))


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Size and time of every file but SQLite's own -wal/-shm (a read-only reader of a
    WAL database in a writable folder makes an empty pair; SQLite's, not a write)."""
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))]
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_readonly_reads_and_refuses_writes(tmp_path, open_db, fake_scans, items_for):
    path = tmp_path / "l.db"
    scans = _populated(path, open_db, fake_scans, items_for)
    for p in path.glob("write.lock"):
        p.unlink()  # read-only must not create it
    before = _snapshot(path)
    with open_db(path, readonly=True, threshold=1.0) as db:
        assert db.readonly and db.threshold == 1.0  # this session only
        n_audit = len(db.audit())
        assert len(db.leads()) >= 1 and db.check().ok
        assert db.search(scans[0], k=2).candidates
        assert len(db.audit()) == n_audit  # a read leaves no audit record
        lead = db.leads()[0].id
        for write in (
            lambda: db.ingest(scans[0], agency="X"),
            lambda: db.set_status(lead, "rejected", examiner="Bob"),
            lambda: db.set_threshold(9.0),
        ):
            with pytest.raises(DatabaseError, match="read-only"):
                write()
    assert _snapshot(path) == before
    with open_db(path) as db:
        assert db.threshold == 5.0 and db.check().ok


def test_readonly_refuses_a_missing_database(tmp_path):
    with pytest.raises(DatabaseError, match="no lead database"):
        LeadDatabase(tmp_path / "nothing.db", readonly=True)
    assert not (tmp_path / "nothing.db").exists()


_RO_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import conftest as t
db = t.open_stand_in_db({path!r})
assert db.readonly, "not read-only"
scans, _ = t.fake_scans(2, 2, seed=5, shape=(64, 64))
print(len(db.leads()), db.check().ok, len(db.search(scans[0], k=2).candidates))
db.close()
"""


def test_read_only_storage_opens_read_only(tmp_path, open_db, fake_scans, items_for):
    """On a read-only bind mount (root: chmod does not stop root) the database opens
    read-only by itself; leads, search and check work."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only bind mount")
    path = tmp_path / "l.db"
    _populated(path, open_db, fake_scans, items_for)
    with open_db(path) as db:
        n_leads = len(db.leads())
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(path), str(ro)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        code = _RO_CHILD.format(tests=str(Path(__file__).parents[1]), path=str(ro))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(n_leads), "True", "2"]
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_identity_given_env_or_login(tmp_path, open_db, monkeypatch):
    monkeypatch.setenv("BALLLINK_USER", "env-user")
    with open_db(tmp_path / "a.db", user="ann") as db:
        db.log_event("export", what="x")
        rec = db.audit()[-1]
        assert rec["who"] == "ann" and rec["detail"]["who_from"] == "given"
    with open_db(tmp_path / "a.db") as db:
        db.log_event("export", what="y")
        rec = db.audit()[-1]
        assert rec["who"] == "env-user" and rec["detail"]["who_from"] == "BALLLINK_USER"
        monkeypatch.delenv("BALLLINK_USER")
        db.user = ""  # falls back to the login name
        db.log_event("export", what="z")
        assert db.audit()[-1]["detail"]["who_from"] == "login"
        assert db.verify_audit().ok


def test_cli_user_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BALLLINK_USER", "env-user")
    db = tmp_path / "c.db"
    assert main(["leads", "--db", str(db), "--user", "carol", "--format", "csv",
                 "-o", str(tmp_path / "x.csv")]) == 0  # fmt: skip
    with LeadDatabase(db, readonly=True) as opened:
        records = opened.audit()
    assert records and records[-1]["who"] == "carol"
    assert records[-1]["detail"]["who_from"] == "given"
