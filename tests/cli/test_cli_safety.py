"""The command line protects the evidence: demo never replaces a real database, exports
cannot land on the database or on their input, CSV cells cannot run as formulas, SQLite and
OS errors are one line, bad options and field rows are named (issue 12, items 1, 5-8, 10).
"""

from __future__ import annotations

import csv
import errno
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

import balllink as bl
from balllink._files import csv_safe
from balllink.cli import _commands, main
from balllink.database import LeadDatabase


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two firings of one gun and one of another, small, as X3P files."""
    folder = tmp_path_factory.mktemp("scans")
    sims = bl.simulate.casings(2, 2, seed=5, shape=(160, 160))
    paths = []
    for n, scan in enumerate(sims.scans[:3]):
        paths.append(folder / f"s{n}.x3p")
        bl.write_scan(scan, paths[-1])
    return paths


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory):
    """A database whose exhibits carry formula-like case numbers and agencies."""
    db = tmp_path_factory.mktemp("hostile") / "h.db"
    sims = bl.simulate.casings(1, 2, seed=21, difficulty="fadul-like")
    with LeadDatabase(db) as d:
        d.ingest(sims.scans[0], agency="@SUM(A1)", case_id="=HYPERLINK(1)")
        d.ingest(sims.scans[1], agency="-PD", case_id="+1-2")
        assert d.leads(), "the two firings of one gun must make a lead"
    return db


# 1 -- demo never deletes a database it did not make


def test_demo_refuses_a_real_database(tmp_path, capsys):
    real = tmp_path / "balllink.db"
    with LeadDatabase(real):
        pass
    before = sorted(p.name for p in real.iterdir())
    code, _, err = run(capsys, "demo", "--out", tmp_path, "--size", 64)
    assert code == 2
    assert "not made by 'balllink demo'" in err and "--force" in err
    assert sorted(p.name for p in real.iterdir()) == before


def test_demo_out_dot_refuses(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "balllink.db").mkdir()
    (tmp_path / "balllink.db" / "leads.sqlite").write_bytes(b"evidence")
    code, _, err = run(capsys, "demo", "--out", ".")
    assert code == 2 and "refusing" in err
    assert (tmp_path / "balllink.db" / "leads.sqlite").read_bytes() == b"evidence"


def test_demo_replaces_its_own_database_and_force_replaces_any(tmp_path, capsys):
    own = tmp_path / "balllink.db"
    own.mkdir()
    (own / "made-by-balllink-demo").write_text("x")
    (own / "stale").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "demo", "--out", tmp_path, "--data", empty)
    assert code == 2 and "no scans" in err  # bad input: nothing deleted yet
    assert (own / "stale").exists()
    other = tmp_path / "other"
    (other / "balllink.db").mkdir(parents=True)
    (other / "balllink.db" / "leads.sqlite").write_bytes(b"x")
    from balllink.cli import _demo

    calls = []
    real_region = _demo._simulated_region

    def tiny(**kw):
        calls.append(1)
        region = real_region(shape=(96, 96))
        return _demo.Region(region.items[:2], region.labels[:2])

    mp = pytest.MonkeyPatch()
    mp.setattr(_demo, "_simulated_region", tiny)
    try:
        code, _, _ = run(capsys, "demo", "--out", tmp_path, "--rescore", 1)
        assert not (own / "stale").exists() and (own / "made-by-balllink-demo").exists()
        code, _, _ = run(capsys, "demo", "--out", other, "--rescore", 1, "--force")
        assert (other / "balllink.db" / "made-by-balllink-demo").exists()
    finally:
        mp.undo()
    assert len(calls) == 2


# 5 -- CSV formula injection


def test_csv_safe_neutralises_formulas_but_not_numbers():
    for bad in ("=1+1", "+1-2", "-cmd", "@SUM(A1)", "\tx", "\rx", "=", "-", "-1x"):
        assert csv_safe(bad) == "'" + bad
    for ok in ("-1.5", "-3", "+2", "1e-3", "PD-1", "", "case 1"):
        assert csv_safe(ok) == ok
    assert csv_safe(-2.0) == -2.0


def test_leads_csv_export_is_neutralised(hostile_db, tmp_path, capsys):
    out = tmp_path / "leads.csv"
    code, _, err = run(capsys, "leads", "--db", hostile_db, "--format", "csv", "-o", out)
    assert code == 0, err
    rows = list(csv.DictReader(open(out, newline="")))
    assert rows
    cells = [v for r in rows for v in r.values()]
    assert not any(v.startswith(("=", "+", "@")) for v in cells)
    assert not any(v.startswith("-") and not _number(v) for v in cells)
    r = rows[0]
    assert {r["case_a"], r["case_b"]} == {"'=HYPERLINK(1)", "'+1-2"}
    assert {r["agency_a"], r["agency_b"]} == {"'@SUM(A1)", "'-PD"}


def _number(v):
    try:
        float(v)
    except ValueError:
        return False
    return True


def test_score_output_is_neutralised(tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("=cmd|' /C calc'!A0.x3p,@x.x3p\n")
    out = tmp_path / "scores.csv"
    code, _, _ = run(capsys, "score", pairs, "-o", out, "--db", tmp_path / "none.db")
    assert code == 1  # the files do not exist: an error row
    row = next(csv.DictReader(open(out, newline="")))
    assert row["file_a"] == "'=cmd|' /C calc'!A0.x3p" and row["file_b"] == "'@x.x3p"
    # resuming does not write the (neutralised) row again
    run(capsys, "score", pairs, "-o", out, "--db", tmp_path / "none.db")
    assert len(list(csv.DictReader(open(out, newline="")))) == 2  # failed rows are retried


# 6 -- exports refuse the database folder and their own input


def test_exports_refuse_database_folder_and_input(hostile_db, tmp_path, capsys):
    sqlite_file = hostile_db / "leads.sqlite"
    before = sqlite_file.read_bytes()
    code, _, err = run(capsys, "leads", "--db", hostile_db, "--format", "csv", "-o", sqlite_file)
    assert code == 2 and "inside the lead database" in err
    link = tmp_path / "link"
    link.symlink_to(hostile_db)
    code, _, err = run(capsys, "leads", "--db", hostile_db, "-o", link / "x.csv")
    assert code == 2 and "inside the lead database" in err
    code, _, err = run(capsys, "report", "1", "--db", hostile_db, "-o", hostile_db / "index.faiss")
    assert code == 2 and "inside the lead database" in err
    assert sqlite_file.read_bytes() == before
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a.x3p,b.x3p\n")
    code, _, err = run(capsys, "score", pairs, "-o", pairs, "--db", hostile_db)
    assert code == 2 and "input of this command" in err
    assert pairs.read_text() == "a.x3p,b.x3p\n"


# 7 -- SQLite and OS errors: one line naming the database, traceback only with --debug


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (sqlite3.DatabaseError("database disk image is malformed"), "balllink check"),
        (sqlite3.OperationalError("database or disk is full"), "disk is full"),
        (sqlite3.OperationalError("database is locked"), "another balllink process"),
        (OSError(errno.ENOSPC, "No space left on device", "x.tmp"), "disk is full"),
        (PermissionError(errno.EACCES, "Permission denied", "leads.sqlite"), "permissions"),
    ],
)
def test_database_and_os_errors_are_one_line(exc, words, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(_commands, "open_db", boom)
    db = tmp_path / "lab.db"
    code, _, err = run(capsys, "status", "1", "confirmed", "--examiner", "E", "--db", db)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert words in err and (str(db) in err or exc.filename in err)
    with pytest.raises(type(exc)):
        main(["status", "1", "confirmed", "--examiner", "E", "--db", str(db), "--debug"])


def test_damaged_sqlite_is_one_line(tmp_path, capsys):
    db = tmp_path / "lab.db"
    with LeadDatabase(db):
        pass
    (db / "leads.sqlite").write_bytes(b"this is not a database" * 100)
    for cmd in (["leads"], ["check"], ["status", "1", "new", "--examiner", "E"]):
        code, _, err = run(capsys, *cmd, "--db", db)
        assert code in (1, 2), err
        assert "Traceback" not in err
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and str(db) in err


# 8 -- validation at the edge


def test_fields_rows_must_match_and_fit(scans, tmp_path, capsys):
    fields = tmp_path / "fields.csv"
    fields.write_text(f"file,agency\n{scans[0].name},A\ntypo.x3p,B\n")
    code, _, err = run(capsys, "ingest", scans[0], "--agency", "X", "--fields", fields,
                       "--db", tmp_path / "f.db", "--no-correlate")  # fmt: skip
    assert code == 2 and "line 3" in err and "typo.x3p" in err
    assert not (tmp_path / "f.db").exists() or not LeadDatabase(tmp_path / "f.db").exhibits()
    fields.write_text(f"file,agency\n{scans[0].name},A,extra,more\n")
    code, _, err = run(capsys, "ingest", scans[0], "--agency", "X", "--fields", fields,
                       "--db", tmp_path / "f.db", "--no-correlate")  # fmt: skip
    assert code == 2 and "line 2" in err and "4 fields" in err and "None" not in err


def test_bad_dates_boxes_and_spacings_are_named(tmp_path, capsys):
    db = tmp_path / "v.db"
    err = usage_error(capsys, "leads", "--since", "notadate", "--db", db)
    assert "'notadate'" in err and "YYYY-MM-DD" in err
    err = usage_error(capsys, "leads", "--until", "2025-13-01", "--db", db)
    assert "'2025-13-01'" in err
    err = usage_error(capsys, "search", "1", "--bbox", "1,2,3", "--db", db)
    assert "min_lat,min_lon,max_lat,max_lon" in err
    for bad in ("1e-30", "0", "-1", "nan", "inf", "abc"):
        err = usage_error(capsys, "ingest", "x.png", "--agency", "A", "--spacing", bad)
        assert bad in err and "spacing" in err


def test_absurd_spacing_in_a_file_names_the_file(scans, tmp_path, capsys):
    bad = tmp_path / "tiny.npz"
    scan = bl.read_scan(scans[0])
    np.savez(bad, heights=scan.heights, spacing_um=np.array([1e-30, 1e-30]))
    code, out, _ = run(capsys, "ingest", bad, "--agency", "A", "--db", tmp_path / "s.db")
    assert code == 1 and f"{bad}:" in out and "spacing" in out


# 10 -- score: duplicates once, self-pairs are errors; ingest PNG with --spacing


def test_score_drops_duplicates_and_refuses_self_pairs(scans, tmp_path, capsys):
    a, b, c = (p.name for p in scans)
    pairs = scans[0].parent / "dup-pairs.csv"
    pairs.write_text(f"file_a,file_b\n{a},{b}\n{a},{b}\n{b},{a}\n{c},{c}\n")
    out = tmp_path / "scores.csv"
    code, text, _ = run(capsys, "score", pairs, "-o", out, "--db", tmp_path / "n.db")
    assert code == 1  # the self-pair is an error row
    assert "2 duplicate pair(s) dropped" in text
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["file_a"], r["file_b"]) for r in rows] == [(c, c), (a, b)]
    self_row = rows[0]
    assert self_row["score"] == "" and self_row["lead"] == ""
    assert "paired with itself" in self_row["reason"]
    # resuming writes nothing again
    run(capsys, "score", pairs, "-o", out, "--db", tmp_path / "n.db")
    assert len(list(csv.DictReader(open(out, newline="")))) == 2


def test_ingest_png_with_spacing(scans, tmp_path, capsys):
    scan = bl.read_scan(scans[0])
    z = np.nan_to_num(scan.heights - np.nanmin(scan.heights))
    png = tmp_path / "photo.png"
    Image.fromarray((z / z.max() * 65535).astype(np.uint16)).save(png)
    db = tmp_path / "p.db"
    code, out, _ = run(capsys, "ingest", png, "--agency", "A", "--db", db, "--no-correlate")
    assert code == 1 and "spacing" in out  # without a spacing: skipped, the file named
    spacing = scan.spacing_um[0]
    code, out, _ = run(capsys, "ingest", png, "--agency", "A", "--db", db,
                       "--spacing", spacing, "--no-correlate")  # fmt: skip
    assert code == 0, out
    with LeadDatabase(db) as d:
        (ex,) = d.exhibits()
        assert d.scan(ex.id).spacing_um == pytest.approx((spacing, spacing))


def test_options_before_the_command_are_kept(hostile_db, tmp_path, capsys, monkeypatch):
    # `balllink --db X leads ...` once acted on ./balllink.db: the subcommand's default
    # replaced the value given before its name, so an export onto X/leads.sqlite was
    # not recognised as the database and overwrote it
    monkeypatch.chdir(tmp_path)
    target = hostile_db / "leads.sqlite"
    before = target.read_bytes()
    code, _, err = run(capsys, "--db", hostile_db, "leads", "--format", "csv", "-o", target)
    assert code == 2 and "database" in err
    assert target.read_bytes() == before and not (tmp_path / "balllink.db").exists()
    code, out, _ = run(capsys, "--db", hostile_db, "--json", "leads", "--format", "json")
    assert code == 0 and len(json.loads(out)) >= 1  # the hostile database's lead, as JSON
    code, out, _ = run(capsys, "leads", "--db", hostile_db, "--json", "--format", "json")
    assert code == 0 and len(json.loads(out)) >= 1  # after the name: the same
