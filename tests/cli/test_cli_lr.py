"""The LR commands on a small simulated set (real stack): calibrate, threshold, and the
LR shown by leads, search, series and the CSV export."""

from __future__ import annotations

import json

import pytest

import balllink as bl
from balllink.cli import main
from helpers import labelled_x3p_folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def lr_db(tmp_path_factory):
    """3 guns x 2 firings (545 px), ingested with correlation; a truth CSV by file name."""
    folder = tmp_path_factory.mktemp("scans")
    sims = bl.simulate.casings(3, 2, seed=21, difficulty="fadul-like")
    labelled_x3p_folder(folder, sims)
    db = folder / "leads.db"
    assert (
        main(["ingest", *sorted(map(str, folder.glob("*.x3p"))), "--agency", "A", "--db", str(db)])
        == 0
    )
    return db, folder / "truth.csv"


def test_calibrate_threshold_and_leads_show_the_lr(lr_db, capsys, tmp_path):
    db, truth = lr_db
    code, out, err = run(capsys, "calibrate", "--truth", truth, "--target-rate", "0.01", "--db", db)
    assert code == 0, err
    assert "Cllr" in out and "Cllr-min" in out and "lead threshold LR >=" in out
    assert "validation plots" in out and "misleading" in out
    code, out, _ = run(capsys, "--json", "threshold", "--db", db)
    before = json.loads(out)
    assert code == 0 and before["target_rate"] == 0.01
    code, out, _ = run(capsys, "threshold", "--target-rate", "1e-6", "--db", db)
    assert code == 0 and "lead threshold LR >=" in out and "target 1e-06" in out
    code, out, _ = run(capsys, "--json", "threshold", "--db", db)
    after = json.loads(out)
    assert after["lead_log10_lr"] >= before["lead_log10_lr"]
    assert after["n_leads"] <= before["n_leads"]
    assert before["n_leads"] >= 3  # the three same-gun pairs
    code, out, _ = run(capsys, "leads", "--db", db)
    assert code == 0 and "lead at LR >=" in out
    if after["n_leads"]:
        assert "LR " in out.splitlines()[2]
    code, out, _ = run(capsys, "search", "1", "-k", "3", "--db", db)
    assert code == 0 and "LR " in out and "lead at LR >=" in out
    code, out, _ = run(capsys, "series", "--db", db)
    assert code == 0 and "lead at LR >=" in out
    exported = tmp_path / "leads.csv"
    code, _, _ = run(capsys, "leads", "--format", "csv", "-o", exported, "--db", db)
    header = exported.read_text().splitlines()[0].split(",")
    assert {"log10_lr", "lr_lo", "lr_hi", "lr_in_range", "lr_reason"} <= set(header)
    code, out, _ = run(capsys, "check", "--db", db)
    assert code == 0, out


def test_calibrate_names_unknown_files(lr_db, capsys, tmp_path):
    db, _ = lr_db
    truth = tmp_path / "t.csv"
    truth.write_text("file,firearm\nnot-here.x3p,g1\n")
    code, _, err = run(capsys, "calibrate", "--truth", truth, "--db", db)
    assert code == 2 and "not-here.x3p" in err
