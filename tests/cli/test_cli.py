"""The ``balllink`` command line, end to end on small simulated scans (the real stack)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import balllink as bl
from balllink.cli import main


@pytest.fixture(scope="module")
def sim_folder(tmp_path_factory):
    """3 guns x 2 firings as X3P files, a truth CSV and one unreadable file."""
    folder = tmp_path_factory.mktemp("scans")
    sims = bl.simulate.casings(3, 2, seed=21, difficulty="fadul-like")
    truth = {}
    for scan, row in zip(sims.scans, sims.truth):
        name = f"g{row['firearm_id']}-c{row['casing_id']}.x3p"
        bl.write_scan(scan, folder / name)
        truth[name] = int(row["firearm_id"])
    with open(folder / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "firearm"])
        w.writerows(truth.items())
    return folder, truth


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def built_db(sim_folder, tmp_path_factory):
    folder, truth = sim_folder
    db = tmp_path_factory.mktemp("db") / "leads.db"
    names = sorted(truth)
    fields = db.parent / "fields.csv"
    with open(fields, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "agency", "lat", "lon", "occurred"])
        for n, name in enumerate(names):
            w.writerow([name, ["A", "B", "C"][n % 3], 39 + n / 100, -94 - n / 100, "2025-05-01"])
    code = main(["ingest", str(folder), "--agency", "X", "--fields", str(fields), "--db", str(db)])
    assert code == 0
    return db, names, truth


def test_ingest_reports_json_and_skips_bad_files(sim_folder, tmp_path, capsys):
    folder, truth = sim_folder
    bad = tmp_path / "broken.x3p"
    bad.write_bytes(b"PK\x03\x04 truncated")
    db = tmp_path / "l.db"
    code, out, _ = run(capsys, "ingest", folder / sorted(truth)[0], bad, "--agency", "A",
                       "--db", db, "--json")  # fmt: skip
    rep = json.loads(out)
    assert code == 1  # partial failure
    assert len(rep["ingested"]) == 1
    ((path, reason),) = rep["skipped"]
    assert path == str(bad) and "broken.x3p" in reason
    code, out, _ = run(capsys, "ingest", folder / sorted(truth)[0], "--agency", "A", "--db", db)
    assert code == 0 and "1 already stored" in out


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A usable scan that preparation flags (a quarter of a breech face: small area) and
    a file with nothing measured in it."""
    folder = tmp_path_factory.mktemp("odd")
    scan = bl.simulate.casings(1, 1, seed=22, difficulty="fadul-like").scans[0]
    n = scan.shape[0]
    quarter = scan.replace(heights=scan.heights[: n // 2, : n // 2], mask=None, meta={})
    bl.write_scan(quarter, folder / "quarter.x3p")
    bl.write_scan(bl.Scan(np.full((40, 40), np.nan), spacing_um=6.25), folder / "empty.x3p")
    return folder / "quarter.x3p", folder / "empty.x3p"


def test_ingest_lists_flagged_and_unusable_files(sim_folder, odd_files, tmp_path, capsys):
    from balllink.preprocessing import flags_of, prepare_if_needed

    folder, truth = sim_folder
    good = folder / sorted(truth)[0]
    quarter, empty = odd_files
    broken = tmp_path / "broken.x3p"
    broken.write_bytes(b"PK\x03\x04 truncated")
    expected = [f for f in flags_of(prepare_if_needed(bl.read_scan(quarter)))
                if f["code"] != "auto_prepared"]  # fmt: skip
    assert expected  # the quarter scan is flagged by preparation
    files = [good, broken, quarter, empty]
    code, out, _ = run(capsys, "ingest", *files, "--agency", "A", "--db", tmp_path / "j.db",
                       "--json")  # fmt: skip
    rep = json.loads(out)
    assert code == 1  # some files could not be used
    assert rep["counts"] == {"ingested": 2, "flagged": 1, "duplicates": 0, "skipped": 2,
                             "compared": 1, "new_leads": 0}  # fmt: skip
    ((flag,),) = [[f for f in rep["flagged"] if f["name"] == str(quarter)]]
    assert flag["flags"] == expected and flag["exhibit_id"] in rep["ingested"]
    assert {name for name, _ in rep["skipped"]} == {str(broken), str(empty)}
    assert all(reason for _, reason in rep["skipped"])
    with bl.LeadDatabase(tmp_path / "j.db") as db:
        assert [f.as_dict() for f in db.exhibit(flag["exhibit_id"]).flags] == expected

    code, out, _ = run(capsys, "ingest", *files, "--agency", "A", "--db", tmp_path / "t.db")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("ingested 2 exhibit(s) (1 flagged), 0 already stored, 2 skipped")
    flagged_part = out.split("flagged (stored and compared")[1].split("skipped (could not")[0]
    assert f"exhibit {flag['exhibit_id']}  {quarter}" in flagged_part
    for f in expected:
        assert f"{f['code']}: {f['message']}" in flagged_part
    skipped_part = out.split("skipped (could not be used):")[1]
    assert f"  {broken}: " in skipped_part and f"  {empty}: " in skipped_part

    code, out, _ = run(capsys, "ingest", quarter, "--agency", "A", "--db", tmp_path / "s.db",
                       "--strict", "--json")  # fmt: skip
    rep = json.loads(out)
    assert code == 1 and not rep["ingested"] and not rep["flagged"]
    ((name, reason),) = rep["skipped"]
    assert name == str(quarter) and "strict" in reason and expected[0]["code"] in reason


def test_flags_and_mirroring_shown_in_leads_search_and_report(sim_folder, tmp_path, capsys):
    from balllink.preprocessing import prepare_if_needed

    folder, truth = sim_folder
    gun0 = [n for n in sorted(truth) if truth[n] == 0]
    other = next(n for n in sorted(truth) if truth[n] != 0)
    note = {"code": "ring_irregular", "message": "ring fit quality 0.21 (test)"}

    def flagging(scan):  # the real preparation, plus a flag on the second firing of gun 0
        prep = prepare_if_needed(scan)
        if scan.source and scan.source.endswith(gun0[1]):
            prepared = {**prep.meta.get("prepared", {}), "flags": [note]}
            prep = prep.replace(meta={**prep.meta, "prepared": prepared})
        return prep

    db = tmp_path / "f.db"
    files = [folder / gun0[0], folder / gun0[1], folder / other]
    with bl.LeadDatabase(db, preparer=flagging) as d:  # the CLI reads what was stored
        rep = d.ingest_many(files, agency="A")
    assert rep.counts()["flagged"] == 1 and rep.counts()["new_leads"] == 1
    flagged_id = rep.flagged[0].exhibit_id

    code, out, _ = run(capsys, "leads", "--db", db, "--json")
    (lead,) = json.loads(out)
    side = "a" if lead["a"] == flagged_id else "b"
    assert lead[f"flags_{side}"] == [note] and lead["flagged"]
    assert lead["flags_b" if side == "a" else "flags_a"] == []
    assert lead["mirrored"] is False  # the simulated files share one handedness
    code, out, _ = run(capsys, "leads", "--db", db)
    assert f"{side}:ring_irregular" in out.splitlines()[2] and "flags" in out.splitlines()[1]
    code, out, _ = run(capsys, "leads", "--db", db, "--format", "csv")
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row[f"flags_{side}"] == "ring_irregular: ring fit quality 0.21 (test)"
    assert (row["flagged"], row["mirrored"]) == ("True", "False")
    code, out, _ = run(capsys, "leads", "--db", db, "--format", "geojson")
    assert json.loads(out)["properties"]["n_without_location"] == 1

    unflagged = lead["b"] if side == "a" else lead["a"]
    code, out, _ = run(capsys, "search", unflagged, "--db", db, "--json")
    cands = {c["exhibit_id"]: c for c in json.loads(out)["candidates"]}
    assert cands[flagged_id]["flags"] == [note] and cands[flagged_id]["mirrored"] is False
    code, out, _ = run(capsys, "search", flagged_id, "--db", db)
    assert code == 0 and "query flagged: ring_irregular: ring fit quality 0.21 (test)" in out

    html = tmp_path / "lead.html"
    with bl.LeadDatabase(db) as d:
        n_audit = len(d.audit())
    assert run(capsys, "report", lead["id"], "--db", db, "-o", html)[0] == 0
    text = html.read_text()
    assert "Preparation flags." in text and "ring fit quality 0.21 (test)" in text
    with bl.LeadDatabase(db) as d:  # the export is recorded once; the report searched nothing
        (record,) = d.audit()[n_audit:]
    assert record["action"] == "export" and record["detail"]["what"] == "lead_report"
    assert record["detail"]["lead"] == lead["id"] and record["detail"]["path"] == str(html)


def test_leads_series_exports(built_db, capsys, tmp_path):
    db, names, truth = built_db
    code, out, _ = run(capsys, "leads", "--db", db, "--json")
    leads = json.loads(out)
    assert code == 0
    with bl.LeadDatabase(db) as d:
        file_of = {e.id: e.source.rsplit("/", 1)[-1] for e in d.exhibits()}
        agencies = {e.id: e.agency for e in d.exhibits()}
    for lead in leads:
        assert lead["cross_jurisdiction"] == (agencies[lead["a"]] != agencies[lead["b"]])
    # the simulated same-gun pairs are the leads
    got = {frozenset((file_of[x["a"]], file_of[x["b"]])) for x in leads}
    want = {
        frozenset((a, b))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if truth[a] == truth[b]
    }
    assert got == want
    code, out, _ = run(capsys, "leads", "--db", db, "--format", "geojson")
    geo = json.loads(out)
    assert len(geo["features"]) == len(leads)
    for feat in geo["features"]:
        assert feat["geometry"]["type"] == "LineString"
    out_csv = tmp_path / "leads.csv"
    assert run(capsys, "leads", "--db", db, "--format", "csv", "-o", out_csv)[0] == 0
    with open(out_csv, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(leads)
    code, out, _ = run(capsys, "series", "--db", db, "--json")
    assert sorted(len(s["exhibits"]) for s in json.loads(out)) == [2, 2, 2]


def test_search_status_report_check(built_db, capsys, tmp_path, monkeypatch):
    db, _, _ = built_db
    monkeypatch.setenv("BALLLINK_DB", str(db))  # --db defaults to $BALLLINK_DB
    code, out, _ = run(capsys, "search", "1", "-k", "3", "--json")
    res = json.loads(out)
    assert code == 0 and res["n_in_scope"] == 5 and len(res["candidates"]) == 3
    code, out, _ = run(capsys, "search", "1", "--agency", "B", "--json")
    res = json.loads(out)
    assert res["n_in_scope"] == 2 and all(c["agency"] == "B" for c in res["candidates"])
    code, out, _ = run(capsys, "leads", "--json")
    lead = json.loads(out)[0]["id"]
    assert run(capsys, "status", lead, "confirmed", "--examiner", "J. Doe")[0] == 0
    code, out, _ = run(capsys, "leads", "--status", "confirmed", "--json")
    assert [x["id"] for x in json.loads(out)] == [lead]
    html = tmp_path / "lead.html"
    code, out, _ = run(capsys, "report", lead, "-o", html)
    assert code == 0 and html.read_text().count("data:image/png;base64,") == 1
    code, out, _ = run(capsys, "check", "--json")
    assert code == 0 and json.loads(out)["ok"]
    assert run(capsys, "report", 99999, "-o", html)[0] == 2  # no such lead


def test_check_fails_on_tampered_audit(built_db, tmp_path, capsys):
    import shutil

    db = tmp_path / "copy.db"
    shutil.copytree(built_db[0], db)
    con = sqlite3.connect(db / "leads.sqlite")
    con.execute("UPDATE audit SET detail='{}' WHERE seq=1")
    con.commit()
    con.close()
    code, out, _ = run(capsys, "check", "--db", db)
    assert code == 1 and "audit trail" in out


def test_score_is_resumable(sim_folder, tmp_path, capsys):
    folder, truth = sim_folder
    names = sorted(truth)
    pairs = folder / "pairs.csv"
    with open(pairs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_a", "file_b"])
        w.writerows([(names[0], names[1]), (names[0], names[2]), (names[2], names[3])])
    out = tmp_path / "scores.csv"
    code, text, _ = run(capsys, "score", pairs, "-o", out, "--json")
    assert code == 0 and json.loads(text)["scored"] == 3
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    same = {(r["file_a"], r["file_b"]): truth[r["file_a"]] == truth[r["file_b"]] for r in rows}
    scores = {(r["file_a"], r["file_b"]): float(r["score"]) for r in rows}
    km = [scores[p] for p in scores if same[p]]
    knm = [scores[p] for p in scores if not same[p]]
    assert min(km) > max(knm)
    # interrupted run: drop the last row, run again: only that pair is scored
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:-1]))
    code, text, _ = run(capsys, "score", pairs, "-o", out, "--json")
    summary = json.loads(text)
    assert (summary["already_scored"], summary["scored"]) == (2, 1)
    with open(out, newline="") as fh:
        again = {(r["file_a"], r["file_b"]): float(r["score"]) for r in csv.DictReader(fh)}
    assert again == pytest.approx(scores)


def test_evaluate_reports_auc_and_histogram(sim_folder, tmp_path, capsys):
    folder, _ = sim_folder
    outdir = tmp_path / "eval"
    code, text, _ = run(capsys, "evaluate", folder, "--truth", folder / "truth.csv", "-o",
                        outdir, "--json")  # fmt: skip
    summary = json.loads(text)
    assert code == 0
    assert (summary["n_km"], summary["n_knm"]) == (3, 12)
    assert summary["roc_auc"] == 1.0 and summary["top1"] == 1.0
    assert summary["false_positives"] == 0 and summary["false_negatives"] == 0
    assert (outdir / "histogram.png").read_bytes()[:4] == b"\x89PNG"
    with open(outdir / "scores.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 15


def test_bad_usage_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ingest"])  # missing paths and --agency
    assert exc.value.code == 2
    code, out, _ = run(capsys, "ingest", tmp_path / "nothing-here", "--agency", "A",
                       "--db", tmp_path / "l.db")  # fmt: skip
    assert code == 1 and "cannot read" in out
    code, _, err = run(capsys, "demo", "--data", tmp_path / "missing", "--out", tmp_path / "o")
    assert code == 2 and "not a folder" in err


def test_python_dash_m_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "balllink", "check", "--db", str(tmp_path / "x.db"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"]["exhibits"] == 0


def test_demo_small_region(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--out", tmp_path, "--rescore", 3, "--json")
    assert code == 0
    summary = json.loads(out)
    truth = summary["truth"]
    assert truth["same_gun_pairs_that_are_leads"] == truth["same_gun_pairs"]
    assert truth["different_gun_pairs_that_are_leads"] == 0
    assert truth["series_equal_truth"]
    assert summary["cross_jurisdiction_leads"] > 0
    assert any(f.endswith(".html") for f in summary["files"])
    np.testing.assert_equal(summary["check_ok"], True)
