"""Bulk ingest across processes (`balllink ingest --no-correlate --jobs N`): the same
exhibits, hashes, flags, skipped files and index descriptors with 1 and 2 processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import balllink as bl
from balllink.cli import main
from balllink.database import LeadDatabase
from balllink.database._bulk import Failed, Ready, make_ready


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    sims = bl.simulate.casings(2, 2, seed=4, difficulty="easy", shape=(160, 160), spacing_um=12.5)
    for i, scan in enumerate(sims.scans):
        bl.write_scan(scan, folder / f"c{i}.npz")
    (folder / "broken.npz").write_bytes(b"not a scan")
    return folder


def _ingest(capsys, db, folder, jobs):
    argv = ["--json", "ingest", "--db", db, "--agency", "PD1", "--no-correlate"]
    code = main([str(a) for a in [*argv, "--jobs", jobs, folder]])
    return code, json.loads(capsys.readouterr().out)


def _stored(db_path):
    with LeadDatabase(db_path) as db:
        ex = sorted(db.exhibits(), key=lambda e: e.source)
        rows = [(e.case_id, e.source_hash, e.scan_hash, e.shape, e.flags) for e in ex]
        index = db._index.get()  # the database's own index (test only)
        return rows, index.casing_ids_.copy(), np.asarray(index.pose_).copy()


def test_the_same_exhibits_and_descriptors_with_one_and_two_processes(tmp_path, scan_files, capsys):
    code1, rep1 = _ingest(capsys, tmp_path / "one.db", scan_files, 1)
    code2, rep2 = _ingest(capsys, tmp_path / "two.db", scan_files, 2)
    assert code1 == code2 == 1  # the broken file is skipped in both
    assert len(rep1["ingested"]) == len(rep2["ingested"]) == 4
    assert rep1["skipped"] == rep2["skipped"] and "broken.npz" in rep1["skipped"][0][0]
    rows1, ids1, pose1 = _stored(tmp_path / "one.db")
    rows2, ids2, pose2 = _stored(tmp_path / "two.db")
    assert rows1 == rows2
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(pose1, pose2)
    _, rep = _ingest(capsys, tmp_path / "two.db", scan_files, 2)  # again: all known
    assert len(rep["duplicates"]) == 4 and not rep["ingested"]


def test_make_ready_reports_a_failure_instead_of_raising(scan_files):
    out = make_ready((scan_files / "broken.npz", bl.read_scan, lambda s: s))
    assert isinstance(out, Failed) and "broken.npz" in str(out.error)
    ok = make_ready((scan_files / "c0.npz", bl.read_scan, bl.preprocessing.prepare_if_needed))
    assert isinstance(ok, Ready)
    np.testing.assert_array_equal(ok.table, bl.embed(ok.prep))
