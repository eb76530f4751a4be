"""Likelihood ratios in the lead database: schema v4 features, ``lr`` rows, the lead rule,
the target false-lead rate, models in force, calibration and their audit.

A stand-in comparer plants the congruent-cell count ``k`` of every pair (of ``n`` = 40
compared cells) and a score of 9 for all (above the legacy threshold 5), so a pair is a
lead by the LR rule exactly when the model's LR of its planted ``k`` reaches the
threshold, never by its score.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from scipy import stats

from balllink.comparison import CELL_DTYPE, CMCConfig, Comparison
from balllink.comparison._result import DirectionResult
from balllink.database import LeadDatabase
from balllink.database._audit import COVERED, row_hash
from balllink.errors import DatabaseError
from balllink.evidence import LRModel, Pairs

N = 40


def planted_comparer(k_of):
    """A comparer whose results carry planted ``k`` of ``N`` cells (two directions)."""

    def compare_many(query, candidates):
        out = []
        for c in candidates:
            k = k_of(query.source, c.source)
            dirs = tuple(
                DirectionResult("a", "b", k, k, True, 0.0, N // 2, np.zeros(0, CELL_DTYPE))
                for _ in range(2)
            )
            out.append(
                Comparison(
                    k,
                    9.0,
                    0.0,
                    (0.0, 0.0),
                    True,
                    dirs,
                    np.zeros(0, CELL_DTYPE),
                    config=CMCConfig(),
                    raw_score=k / N,
                )
            )
        return out

    return compare_many


def gun(source) -> int:
    return int(str(source).split("-")[0][3:])


def by_gun(same=30, different=1):
    return lambda a, b: same if gun(a) == gun(b) else different


@pytest.fixture(scope="module")
def model():
    """A count model fitted on planted pairs (same: k ~ Bin(40, .5); different: Bin(40, .02))."""
    rng = np.random.default_rng(1)
    guns = np.repeat(np.arange(20), 12).astype(str)
    same = np.tile(np.r_[np.ones(4, bool), np.zeros(8, bool)], 20)
    k = np.where(same, stats.binom.rvs(N, 0.5, size=240, random_state=rng),
                 stats.binom.rvs(N, 0.02, size=240, random_state=rng))  # fmt: skip
    other = np.where(same, guns, "x" + guns)
    pairs = Pairs.build(k=k, n=np.full(240, N), same=same, firearm_a=guns, firearm_b=other)
    return LRModel.fit(pairs, n_boot=20, target_rate=1e-2)


def open_lr_db(path, k_of, **kw):
    from tests.conftest import FakeIndex, passthrough

    kw.setdefault("threshold", 5.0)
    return LeadDatabase(path, index_class=FakeIndex, preparer=passthrough,
                        comparer=planted_comparer(k_of), **kw)  # fmt: skip


def items(scans):
    return [(s, {"agency": f"A{i % 2}", "case_id": f"C{i}"}) for i, s in enumerate(scans)]


def v3_row_hash(table, row) -> str:
    """The row hash as schema version 3 computed it (before the LR features)."""
    payload = json.dumps([table, [row[c] for c in COVERED[table]]], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _as_v3(sqlite_path):
    """Turn a database whose comparisons have no LR features back into schema version 3."""
    con = sqlite3.connect(sqlite_path)
    assert (
        con.execute("SELECT count(*) FROM comparisons WHERE n_cells IS NOT NULL").fetchone()[0] == 0
    )
    for col in ("n_cells", "raw_score", "source_spacing_um"):
        con.execute(f"ALTER TABLE comparisons DROP COLUMN {col}")
    con.execute("DROP TABLE lr")
    con.execute("DROP TABLE users")  # schema version 5
    con.execute("DROP TABLE comments")
    con.execute("DELETE FROM schema_version WHERE version >= 4")
    con.commit()
    con.close()


def test_v3_database_migrates_and_still_verifies(tmp_path, open_db, fake_scans, items_for):
    scans, _ = fake_scans(2, 3, seed=4)
    path = tmp_path / "l.db"
    with open_db(path) as db:  # stand-in comparer: no cell counts, so no LR features
        db.ingest_many(items_for(scans[:5]))
        before = [(x.id, x.score) for x in db.leads()]
    _as_v3(path / "leads.sqlite")
    con = sqlite3.connect(path / "leads.sqlite")
    con.row_factory = sqlite3.Row
    assert "n_cells" not in [r[1] for r in con.execute("PRAGMA table_info(comparisons)")]
    old = {r["id"]: v3_row_hash("comparisons", r) for r in con.execute("SELECT * FROM comparisons")}
    con.close()
    with open_db(path) as db:
        con = db._sql()
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 5
        rows = con.execute("SELECT * FROM comparisons").fetchall()
        assert all(r["n_cells"] is None for r in rows)
        assert {r["id"]: row_hash("comparisons", r) for r in rows} == old  # hash as before
        assert db.verify_audit().ok and db.check().ok
        assert [(x.id, x.score) for x in db.leads()] == before  # legacy rule
        assert all(np.isnan(x.log10_lr) and x.lr_in_range is None for x in db.leads())


def test_new_comparisons_store_features_and_lr_rows(tmp_path, fake_scans):
    scans, _ = fake_scans(2, 2, seed=5)
    path = tmp_path / "l.db"
    with open_lr_db(path, by_gun()) as db:
        db.ingest_many(items(scans))
        con = db._sql()
        rows = con.execute("SELECT * FROM comparisons ORDER BY id").fetchall()
        assert len(rows) == 6
        assert all(r["n_cells"] == N and r["source_spacing_um"] == 6.25 for r in rows)
        assert {r["raw_score"] for r in rows} == {30 / N, 1 / N}
        mid = db.lr_model_id  # the shipped model, pinned at first use
        lr = con.execute("SELECT * FROM lr WHERE model=?", (mid,)).fetchall()
        assert len(lr) == 6
        f = path / "models" / f"{mid}.json"
        assert LRModel.load(f).id == mid and (f.stat().st_mode & 0o777) == 0o600
        assert [r["action"] for r in db.audit()].count("lr_model") == 1
        assert db.verify_audit().ok and db.check().ok
        assert db.check().counts["lr_rows_checked"] == 6
    # an edited feature is found by the audit; an edited LR by check
    con = sqlite3.connect(path / "leads.sqlite")
    con.execute("UPDATE comparisons SET n_cells = 30 WHERE id = 2")
    con.execute("UPDATE lr SET log10_lr = log10_lr + 1 WHERE comparison = 3")
    con.commit()
    con.close()
    with open_lr_db(path, by_gun()) as db:
        rep = db.verify_audit()
        assert not rep.ok and any("comparisons row 2 was changed" in p for p in rep.problems)
        problems = db.check().problems
        assert any("LR row(s)" in p and "3" in p for p in problems)


def test_leads_follow_the_lr_rule_and_the_lead_rate(tmp_path, fake_scans, model):
    t = model.lead_log10_lr
    ks = np.arange(N + 1)
    llr = model.evaluate(ks, np.full(N + 1, N)).log10_lr
    k_hi = int(ks[llr >= t][0])  # the smallest k that is a lead
    k_lo = k_hi - 1  # just below: not a lead, although its score (9) passes 5
    strict = model.with_target(model.predicted_rate / 100)
    assert strict.lead_log10_lr > t
    k_top = int(ks[llr >= strict.lead_log10_lr][0])
    plant = {(0, 1): k_hi, (0, 2): k_lo, (1, 2): k_top, (3, 4): 25}
    scans, _ = fake_scans(5, 1, seed=6)
    index = {s.source: i for i, s in enumerate(scans)}

    def k_of(a, b):
        return plant.get(tuple(sorted((index[a], index[b]))), 0)

    with open_lr_db(tmp_path / "l.db", k_of) as db:
        db.use_model(model)
        assert db.lr_model.id == model.id
        rep = db.ingest_many(items(scans))
        ids = rep.ingested
        want = {(ids[i], ids[j]) for (i, j), k in plant.items() if k >= k_hi}
        leads = db.leads()
        assert {(x.a, x.b) for x in leads} == want
        assert set(rep.new_leads) == {x.id for x in leads}  # ingest used the same rule
        assert all(x.log10_lr >= t - 1e-9 and x.lr_model == model.id for x in leads)
        assert [x.log10_lr for x in leads] == sorted((x.log10_lr for x in leads), reverse=True)
        assert {len(s.exhibits) for s in db.series()} == {3, 2}
        res = db.search(ids[0], k=4)
        assert {c.exhibit_id for c in res if c.lead} == {ids[1]}
        assert res.lr_threshold == pytest.approx(t)
        # a stricter target rate: a higher threshold and a subset of the leads
        db.set_lead_rate(strict.target_rate)
        assert db.lr_model.lead_log10_lr == pytest.approx(strict.lead_log10_lr)
        fewer = {(x.a, x.b) for x in db.leads()}
        assert fewer < want and fewer == {(ids[1], ids[2]), (ids[3], ids[4])}
        assert db.audit()[-1]["action"] == "lead_rate"
        assert db.verify_audit().ok and db.check().ok
    with open_lr_db(tmp_path / "l.db", k_of, readonly=True) as db:  # kept in the database
        assert {(x.a, x.b) for x in db.leads()} == fewer


def test_calibrate_fits_validates_and_uses_a_model(tmp_path, fake_scans):
    rng = np.random.default_rng(7)
    scans, guns = fake_scans(4, 3, seed=7, shape=(60, 60))
    ks = {}

    def k_of(a, b):
        key = tuple(sorted((a, b)))
        if key not in ks:
            same = gun(a) == gun(b)
            ks[key] = int(rng.binomial(N, 0.5 if same else 0.03))
        return ks[key]

    path = tmp_path / "l.db"
    with open_lr_db(path, k_of) as db:
        ids = db.ingest_many(items(scans[:9])).ingested  # compared at ingest
        ids += db.ingest_many(items(scans[9:]), correlate=False).ingested  # never compared
        truth = {eid: f"g{g}" for eid, g in zip(ids, guns)}
        cal = db.calibrate(truth, n_boot=10, target_rate=1e-2)
        assert (cal.n_same, cal.n_different) == (12, 54) and cal.n_compared == 3 * 9 + 3
        assert cal.model_file.exists() and (cal.folder / "validation.json").exists()
        assert db.lr_model_id == LRModel.load(cal.model_file).id
        assert 0 <= cal.validation["cllr"] < 1
        rec = [r for r in db.audit() if r["action"] == "calibrate"][-1]["detail"]
        assert rec["model"] == db.lr_model_id and rec["n_same"] == 12 and "cllr" in rec
        assert db._sql().execute("SELECT count(*) FROM lr WHERE model=?",
                                 (db.lr_model_id,)).fetchone()[0] == 66  # fmt: skip
        assert db.check().ok and db.verify_audit().ok
        lead_pairs = {(x.a, x.b) for x in db.leads()}
        same = {(a, b) for a in ids for b in ids if a < b and truth[a] == truth[b]}
        assert len(lead_pairs & same) >= 10 and not lead_pairs - same


def test_calibrate_refuses_bad_truth_and_read_only(tmp_path, fake_scans):
    scans, _ = fake_scans(2, 2, seed=8)
    path = tmp_path / "l.db"
    with open_lr_db(path, by_gun()) as db:
        ids = db.ingest_many(items(scans)).ingested
        truth = tmp_path / "truth.csv"
        truth.write_text("file,firearm\ngun0-fire0,g0\nmissing-casing.x3p,g0\n")
        with pytest.raises(DatabaseError, match=r"missing-casing\.x3p"):
            db.calibrate(truth)
        truth.write_text("file,firearm\n" + "".join(f"{s.source},g0\n" for s in scans))
        with pytest.raises(DatabaseError, match="at least 2 firearms"):
            db.calibrate(truth)
        with pytest.raises(DatabaseError, match="no exhibit with id 999"):
            db.calibrate({ids[0]: "g0", 999: "g1"})
    with open_lr_db(path, by_gun(), readonly=True) as db:
        with pytest.raises(DatabaseError, match="read-only"):
            db.calibrate({i: f"g{n // 2}" for n, i in enumerate(ids)})
