"""Crafted bad CSV inputs to the command line (issue 12): each fields file and pairs file
below is refused before anything is stored, with exit code 2, in well under a second, by a
message that names the CSV file (and the line, where one line is at fault)."""

from __future__ import annotations

import time

import pytest

import balllink as bl
from balllink.cli import main
from balllink.database import LeadDatabase

FIELDS = {
    # name: (file content, words the message must hold besides the file name)
    "empty": (b"", ["'file' column"]),
    "no_file_column": (b"agency,case_id\nA,1\n", ["'file' column"]),
    "column_twice": (b"file,agency,agency\ns0.x3p,A,B\n", ["line 1", "agency"]),
    "too_many_cells": (b"file,agency\ns0.x3p,A,B,C\n", ["line 2", "4 fields"]),
    "no_file_named": (b"file,agency\n,A\n", ["line 2", "no file"]),
    "file_twice": (b"file,agency\ns0.x3p,A\ns0.x3p,B\n", ["line 3", "line 2"]),
    "unmatched_file": (b"file,agency\ns0.x3p,A\ntypo.x3p,B\n", ["line 3", "typo.x3p"]),
    "unknown_field": (b"file,colour\ns0.x3p,red\n", ["line 2", "colour"]),
    "impossible_date": (b"file,occurred\ns0.x3p,2024-02-30\n", ["line 2", "2024-02-30"]),
    "text_date": (b"file,occurred\ns0.x3p,last tuesday\n", ["line 2", "last tuesday"]),
    "latitude_text": (b"file,lat,lon\ns0.x3p,north,12\n", ["line 2", "'north'"]),
    "latitude_range": (b"file,lat,lon\ns0.x3p,95,12\n", ["line 2", "lat"]),
    "longitude_range": (b"file,lat,lon\ns0.x3p,45,-181\n", ["line 2", "lon"]),
    "latitude_nan": (b"file,lat,lon\ns0.x3p,nan,12\n", ["line 2", "lat"]),
    "unknown_kind": (b"file,kind\ns0.x3p,spaceship\n", ["line 2", "spaceship"]),
    "nul_in_agency": (b"file,agency\ns0.x3p,A\x00B\n", ["line 2", "control character"]),
    "escape_in_case": (b"file,case_id\ns0.x3p,24-1\x1b[31m\n", ["line 2", "control character"]),
    "not_utf8": (b"file,agency\ns0.x3p,\xff\xfeA\n", ["UTF-8"]),
}

PAIRS = {
    "empty": (b"", ["no pairs"]),
    "header_only": (b"file_a,file_b\n", ["no pairs"]),
    "one_file": (b"a,b\ns0.x3p\n", ["line 2", "two files"]),
    "blank_second": (b"a,b\ns0.x3p,  \n", ["line 2", "two files"]),
    "three_files": (b"a,b\ns0.x3p,s1.x3p,s0.x3p\n", ["line 2", "3 cells"]),
    "not_utf8": (b"a,b\n\xff\xfe,s1.x3p\n", ["UTF-8"]),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    sims = bl.simulate.casings(2, 1, seed=5, shape=(160, 160))
    for n, scan in enumerate(sims.scans):
        bl.write_scan(scan, folder / f"s{n}.x3p")
    return folder


def _refused(capsys, argv, csv_path, words):
    t0 = time.perf_counter()
    code = main([str(a) for a in argv])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(csv_path) in err and all(w in err for w in words), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert elapsed < 1.0, f"refused after {elapsed:.2f} s"


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_bad_fields_csv_is_refused_naming_file_and_line(case, folder, tmp_path, capsys):
    content, words = FIELDS[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    db = tmp_path / "f.db"
    argv = ["ingest", folder / "s0.x3p", "--agency", "X", "--fields", path, "--db", db]
    _refused(capsys, [*argv, "--no-correlate"], path, words)
    if db.exists():  # nothing was stored
        with LeadDatabase(db) as d:
            assert d.count() == 0


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_bad_pairs_csv_is_refused_naming_file_and_line(case, folder, tmp_path, capsys, monkeypatch):
    content, words = PAIRS[case]
    monkeypatch.chdir(folder)  # pairs name files relative to the working folder
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    out = tmp_path / "scores.csv"
    _refused(capsys, ["score", path, "-o", out], path, words)
    assert not out.exists() or out.read_text().count("\n") <= 1  # no score written


def test_a_good_fields_row_still_ingests(folder, tmp_path, capsys):
    # the guard against a validator that refuses everything
    path = tmp_path / "good.csv"
    path.write_text("file,agency,occurred,lat,lon,notes\ns0.x3p,PD-7,2024-02-29,45.5,-73.6,a\tb\n")
    db = tmp_path / "g.db"
    code = main([str(a) for a in ["ingest", folder / "s0.x3p", "--agency", "X", "--fields",
                                  path, "--db", db, "--no-correlate"]])  # fmt: skip
    assert code == 0, capsys.readouterr()
    with LeadDatabase(db) as d:
        (ex,) = d.exhibits()
        assert (ex.agency, ex.occurred, ex.lat) == ("PD-7", "2024-02-29", 45.5)
