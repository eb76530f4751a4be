"""``balllink validate``: LR quality on a labelled folder (issue 13)."""

from __future__ import annotations

import csv
import json

import pytest

import balllink as bl
from balllink.cli import main
from helpers import labelled_x3p_folder


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """3 simulated guns x 3 firings as X3P files with a truth CSV."""
    folder = tmp_path_factory.mktemp("labelled")
    sims = bl.simulate.casings(3, 3, seed=31, difficulty="fadul-like")
    labelled_x3p_folder(folder, sims)
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_with_the_shipped_model_and_reuse_of_pairs(labelled, tmp_path, capsys):
    out = tmp_path / "v"
    code, text, err = run(
        capsys, "validate", labelled, "--truth", labelled / "truth.csv", "-o", out
    )
    assert code == 0, err
    assert "Cllr" in text and "misleading" in text
    summary = json.loads((out / "validation.json").read_text())
    assert (summary["n_same"], summary["n_different"]) == (9, 27)
    # the shipped model separates these easy simulated guns: small cost, nothing misleading
    assert summary["cllr"] < 0.3 and summary["misleading_same"] == 0.0
    assert summary["misleading_different"] == 0.0
    assert summary["how"]["model"] == bl.evidence.default_model().id
    for png in ("tippett.png", "ece.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # the pairs written can be validated again without comparing anything
    out2 = tmp_path / "v2"
    code, _, _ = run(capsys, "validate", "--pairs", out / "pairs.csv", "--cross", "-o", out2)
    assert code == 0
    lofo = json.loads((out2 / "validation.json").read_text())
    assert lofo["how"]["scheme"] == "leave-one-firearm-out"
    assert lofo["n_same"] == 9 and 0 <= lofo["cllr_min"] <= lofo["cllr"]


def test_validate_needs_a_folder_and_truth_or_pairs(tmp_path, capsys):
    code, _, err = run(capsys, "validate", tmp_path, "-o", tmp_path / "o")
    assert code == 2 and "--truth" in err


def test_validate_refuses_a_folder_without_both_kinds_of_pair(labelled, tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    rows = list(csv.reader((labelled / "truth.csv").read_text().splitlines()))
    with open(truth, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [r for r in rows[1:] if r[1] == "gun0"])
    code, _, err = run(capsys, "validate", labelled, "--truth", truth, "-o", tmp_path / "o")
    assert code == 2 and "0 different-source" in err
