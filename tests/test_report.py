"""Reports: alignment for the overlay, HTML lead report, GeoJSON/CSV exports, evaluation."""

from __future__ import annotations

import base64
import csv
import io
import re

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift
from skimage.transform import rotate

import balllink as bl
from balllink import report
from balllink.comparison import CELL_DTYPE
from balllink.leads import Flag


def _surface(seed=0, n=90):
    return gaussian_filter(np.random.default_rng(seed).normal(size=(n, n)), 3)


@pytest.mark.parametrize(
    ("theta", "dy", "dx"), [(0.0, 0.0, 0.0), (37.0, 5.0, -3.0), (250.0, -4, 6)]
)
def test_align_to_recovers_planted_pose(theta, dy, dx):
    z = _surface()
    b = bl.Scan(z, spacing_um=2.5)
    # a = b rotated counter-clockwise by theta (skimage sense), then moved by (dy, dx) px
    za = shift(
        rotate(z, theta, order=1, cval=np.nan, preserve_range=True), (dy, dx), order=1, cval=np.nan
    )
    a = bl.Scan(za, spacing_um=2.5)
    aligned = report.align_to(a, b, theta, (dy * 2.5, dx * 2.5))
    ok = np.isfinite(aligned) & np.isfinite(za)
    assert ok.mean() > 0.4
    assert np.corrcoef(aligned[ok], za[ok])[0, 1] > 0.99
    wrong = report.align_to(a, b, theta + 90.0, (dy * 2.5, dx * 2.5))
    ok = np.isfinite(wrong) & np.isfinite(za)
    assert abs(np.corrcoef(wrong[ok], za[ok])[0, 1]) < 0.5


def test_align_to_handles_different_grids_and_nan_pose():
    a = bl.Scan(_surface(1, 60), spacing_um=2.0)
    b = bl.Scan(_surface(1, 80), spacing_um=2.0)
    assert report.align_to(a, b, 0.0, (0, 0)).shape == (60, 60)
    z = report.align_to(a, b, float("nan"), (float("nan"), float("nan")))
    assert z.shape == (60, 60) and np.isfinite(z).all()


def _cells(a, congruent=(True, True, False, True)):
    """A 2 x 2 cell table on ``a`` (direction 0), as `compare` makes it."""
    cells = np.zeros(4, CELL_DTYPE)
    cells["row"] = [0, 0, 1, 1]
    cells["col"] = [0, 1, 0, 1]
    cells["center_y_um"] = (cells["row"] + 0.5) * a.shape[0] / 2 * a.spacing_um[0]
    cells["center_x_um"] = (cells["col"] + 0.5) * a.shape[1] / 2 * a.spacing_um[1]
    cells["corr"] = [0.9, 0.8, 0.2, 0.7]
    cells["congruent"] = congruent
    return cells


def _stored_lead(db, scans, agencies):
    ids = db.ingest_many(
        [
            (s, {"agency": ag, "case_id": f"K-{i}", "lat": 39.0 + i / 10, "lon": -94.5})
            for i, (s, ag) in enumerate(zip(scans, agencies))
        ]
    ).ingested
    return ids, db.leads()[0]


def test_lead_report_presents_the_comparison_it_is_given(
    tmp_path, open_db, fake_scans, make_comparison
):
    scans, _ = fake_scans(2, 2, seed=8)
    with open_db(tmp_path / "l.db") as db:
        ids, lead = _stored_lead(db, scans, ["NPD", "SSO", "NPD", "SSO"])
        given = make_comparison(
            0.8125, 7, rotation_deg=12.5, translation_um=(3.0, -4.0), cells=_cells(db.scan(lead.a)),
            grid=(2, 2),
        )  # fmt: skip
        cands = db.candidates(lead.a, k=3)
        n_audit = len(db.audit())
        out = tmp_path / "lead.html"
        text = report.lead_report(db, lead, given, cands, out)
        assert len(db.audit()) == n_audit  # a report records nothing
        assert out.read_text() == text
    ea, eb = db_cases = (f"K-{ids.index(lead.a)}", f"K-{ids.index(lead.b)}")
    assert ea != eb and all(f"<td>{c}</td>" in text for c in db_cases)
    scores = text.split("<h2>Scores</h2>")[1].split("<h2>")[0]
    assert "<td>legacy score (recomputed)</td><td>0.8125</td>" in scores
    assert "<td>CMC count (recomputed)</td><td>7</td>" in scores
    assert "<td>rotation of b (deg)</td><td>12.5</td>" in scores
    assert "<td>translation of b (dy, dx) µm</td><td>3, -4</td>" in scores
    assert f"<td>legacy score (stored)</td><td>{lead.score:.4g}</td>" in scores
    assert f"<td>CMC count (stored)</td><td>{lead.cmc_count}</td>" in scores
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(pngs) == 1 and base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    cand_table = text.split("Candidate list")[1].split("Per-cell")[0]
    assert cand_table.count("<tr>") == 1 + 3  # header + the 3 candidates given
    for c in cands:
        assert f"<td>{c.exhibit_id}</td><td>{c.case_id}</td>" in cand_table
    cell_table = text.split("Per-cell table")[1]
    assert cell_table.count("<tr>") == 1 + 4 and "<td>0.9</td>" in cell_table


def test_lead_report_shows_flags_and_mirroring(
    tmp_path, open_db, fake_scans, flagged, ring, make_comparison
):
    scans, _ = fake_scans(1, 2, seed=10)
    scans[1] = flagged(scans[1]).replace(source="fire1-mirror")  # see fake_compare_many
    with open_db(tmp_path / "l.db") as db:
        ids = db.ingest_many([(s, {"agency": "NPD", "case_id": f"K-{i}"}) for i, s in
                              enumerate(scans)]).ingested  # fmt: skip
        (lead,) = db.leads()
        assert lead.flags_a == () and lead.flags_b == (Flag(**ring),) and lead.mirrored
        given = make_comparison(8.0, 3, mirrored=True)
        text = report.lead_report(db, lead.id, given, db.candidates(lead.a, k=1))
    box = text.split('<div class="flags">')[1].split("</div>")[0]
    assert f"exhibit b ({ids[1]})" in box and ring["code"] in box and "0.21" in box
    exhibits = text.split("<h2>Exhibits</h2>")[1].split("<h2>")[0]
    assert "<td>preparation flags</td><td>none</td>" in exhibits
    assert f"{ring['code']}: {ring['message']}" in exhibits
    scores = text.split("<h2>Scores</h2>")[1].split("<h2>")[0]
    assert "mirror image (stored)</td><td>yes" in scores
    assert "mirror image (recomputed)</td><td>yes" in scores
    # the same lead with a comparison that did not mirror says so
    with open_db(tmp_path / "l.db") as db:
        plain = report.lead_report(db, lead, make_comparison(8.0, 3), db.candidates(lead.a, k=1))
    assert "mirror image (recomputed)</td><td>no" in plain


def test_overlay_depends_on_the_pose(make_comparison):
    z = _surface(4, 60)
    a = bl.Scan(z, spacing_um=2.0)
    b = bl.Scan(shift(z, (0, 6), order=1, cval=np.nan), spacing_um=2.0)  # b = a moved 6 px right
    aligned = report.overlay_rgb(a, b, make_comparison(translation_um=(0.0, -12.0)))
    misaligned = report.overlay_rgb(a, b, make_comparison(translation_um=(0.0, 0.0)))
    both = (aligned[..., 0] < 1) & (aligned[..., 1] < 1)
    assert both.mean() > 0.5
    # a in red and blue, aligned b in green: where both have data the channels agree
    agree = np.abs(aligned[..., 0] - aligned[..., 1])[both].mean()
    disagree = np.abs(misaligned[..., 0] - misaligned[..., 1])[both].mean()
    assert agree < 0.05 and disagree > 5 * agree, (agree, disagree)
    assert not np.allclose(aligned, misaligned)


def test_overlay_mirrors_b_when_the_comparison_did(make_comparison):
    z = _surface(2, 40)
    a = bl.Scan(z, spacing_um=2.0)
    b = bl.Scan(np.flipud(z), spacing_um=2.0)  # the same surface stored mirrored
    cmp = make_comparison(mirrored=True)
    fig = report.overlay_figure(a, b, cmp)
    assert any("b mirrored and aligned" in ax.get_title() for ax in fig.axes)
    report._matplotlib().close(fig)
    rgb = report.overlay_rgb(a, b, cmp)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() < 1e-6  # mirrored back: one surface
    unmirrored = report.overlay_rgb(a, b, make_comparison(mirrored=False))
    assert np.abs(unmirrored[..., 0] - unmirrored[..., 1]).mean() > 0.1


def test_overlay_outlines_the_congruent_cells(make_comparison):
    a = bl.Scan(_surface(5, 40), spacing_um=2.0)
    cmp = make_comparison(cells=_cells(a), grid=(2, 2))
    fig = report.overlay_figure(a, a, cmp)
    boxes = [p.get_xy() for p in fig.axes[2].patches]
    report._matplotlib().close(fig)
    # (x, y) corners of the congruent cells (row, col) (0, 0), (0, 1), (1, 1); not (1, 0)
    assert sorted(tuple(map(float, xy)) for xy in boxes) == [(0, 0), (20, 0), (20, 20)]


def test_geojson_lines_join_incident_locations(tmp_path, open_db, fake_scans):
    scans, _ = fake_scans(1, 4, seed=9)
    places = [(39.1, -94.6), (39.3, -94.2), None, (38.9, -94.8)]
    with open_db(tmp_path / "l.db") as db:
        ids = [
            db.ingest(s, agency=f"A{i}", case_id=f"c{i}", occurred=f"2025-0{i + 1}-01",
                      **({"lat": p[0], "lon": p[1]} if p else {}))
            for i, (s, p) in enumerate(zip(scans, places))
        ]  # fmt: skip
        leads = db.leads()
        assert len(leads) == 6
        geo = report.leads_geojson(db, leads)
    place = dict(zip(ids, places))
    assert geo["type"] == "FeatureCollection"
    assert geo["properties"]["n_without_location"] == 3  # every lead of the exhibit without
    assert len(geo["features"]) == 3
    by_id = {x.id: x for x in leads}
    for feat in geo["features"]:
        lead = by_id[feat["properties"]["id"]]
        (lat_a, lon_a), (lat_b, lon_b) = place[lead.a], place[lead.b]
        assert feat["geometry"] == {
            "type": "LineString",
            "coordinates": [[lon_a, lat_a], [lon_b, lat_b]],  # GeoJSON: lon, lat
        }
        assert feat["properties"]["occurred_a"] == f"2025-0{ids.index(lead.a) + 1}-01"
        assert feat["properties"]["cross_jurisdiction"] is True


def test_csv_rows_are_the_leads_given(tmp_path, open_db, fake_scans, flagged):
    scans, _ = fake_scans(1, 3, seed=11)
    scans[2] = flagged(scans[2])
    with open_db(tmp_path / "l.db") as db:
        for i, s in enumerate(scans):
            db.ingest(s, agency=f"A{i % 2}", case_id=f"c{i}")
        leads = db.leads()
    assert len(leads) == 3
    chosen = leads[::-1][:2]  # any leads, in the order given
    buf = io.StringIO()
    report.leads_csv(chosen, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows == [{k: "" if v is None else str(v) for k, v in x.as_row().items()} for x in chosen]
    assert any("ring_irregular: ring fit quality 0.21" in r["flags_a"] + r["flags_b"] for r in rows)


def test_evaluation_summary_planted_scores():
    labels = np.array([0, 0, 0, 1, 1, 2])
    same = labels[:, None] == labels[None, :]
    scores = np.where(same, 10.0, 1.0)
    scores[2, 4] = scores[4, 2] = 12.0  # one KNM above every KM: casing 2 ranks it first
    np.fill_diagonal(scores, 0)
    r = report.evaluation_summary(list("abcdef"), labels, scores, threshold=5.0)
    assert (r["n_km"], r["n_knm"]) == (4, 11)
    assert r["false_positives"] == 1 and r["false_negatives"] == 0
    assert r["fpr"] == pytest.approx(1 / 11)
    assert r["queries"] == 5  # casing f has no mate
    assert r["top1"] == pytest.approx(3 / 5)  # c and e put each other first
    assert r["top10"] == 1.0
    assert r["roc_auc"] == pytest.approx(1 - 4 / 44)


def test_score_histogram_writes_png(tmp_path):
    path = tmp_path / "h.png"
    report.score_histogram([1, 2, 9, 10], [False, False, True, True], 5.0, path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_lead_report_says_what_the_lr_means_and_escapes_it():
    from balllink._lr_text import lr_html

    lead = bl.leads.Lead(
        1, 2, 3, 9.5, 12, "PD1", "PD2", "c1", "c2", True, "new", None, None, "2025-01-01",
        log10_lr=2.84, lr_interval=(410.0, 692.0), lr_in_range=False,
        lr_reason="=cmd() <b>measured at 3 µm</b>", lr_at_bound=True, lr_model="count-x",
    )  # fmt: skip
    text = lr_html(lead)
    assert "The observed agreement is about 6.9e+02 times more probable if the two casings" in text
    assert "fired by the same firearm than by two different firearms" in text
    assert "&lt;b&gt;measured" in text and "<b>measured" not in text
    assert "held at a bound" in text and "count-x" in text
    buf = io.StringIO()
    report.leads_csv([lead], buf)
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row["log10_lr"] == "2.84" and row["lr_lo"] == "410.0"
    assert row["lr_reason"].startswith("'=")  # neutralised against formula injection
    assert bl.leads.lr_text(2.84, (410.0, 692.0), True, "", True) == (
        "LR 6.9e+02 [4.1e+02, 6.9e+02] (at bound)"
    )
