"""Reports: alignment for the overlay, HTML lead report, GeoJSON/CSV exports, evaluation."""

from __future__ import annotations

import base64
import csv
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift
from skimage.transform import rotate

import balllink as bl
from balllink import report
from balllink.leads import Flag
from test_database import RING, fake_scans, flagged, open_db


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


def _fake_pair_compare(a, b):
    cells = np.zeros(4, dtype=[("direction", "i1"), ("row", "i2"), ("col", "i2"),
                               ("center_y_um", "f4"), ("center_x_um", "f4"), ("corr", "f4"),
                               ("congruent", "?")])  # fmt: skip
    cells["row"] = [0, 0, 1, 1]
    cells["col"] = [0, 1, 0, 1]
    cells["center_y_um"] = (cells["row"] + 0.5) * a.shape[0] / 2 * a.spacing_um[0]
    cells["center_x_um"] = (cells["col"] + 0.5) * a.shape[1] / 2 * a.spacing_um[1]
    cells["corr"] = [0.9, 0.8, 0.2, 0.7]
    cells["congruent"] = [True, True, False, True]
    return SimpleNamespace(
        score=8.0,
        cmc_count=3,
        rotation_deg=0.0,
        translation_um=(0.0, 0.0),
        cells=cells,
        config=SimpleNamespace(grid=(2, 2)),
        reason="",
    )


def test_lead_report_html_contents(tmp_path):
    scans, _ = fake_scans(2, 2, seed=8)
    with open_db(tmp_path / "l.db") as db:
        ids = db.ingest_many(
            [
                (s, {"agency": ag, "case_id": f"K-{i}", "lat": 39.0 + i / 10, "lon": -94.5})
                for i, (s, ag) in enumerate(zip(scans, ["NPD", "SSO", "NPD", "SSO"]))
            ]
        ).ingested
        (lead, *_) = db.leads()
        out = tmp_path / "lead.html"
        text = report.lead_report(db, lead.id, out, k=3, comparer=_fake_pair_compare)
        assert out.read_text() == text
        for needle in ("K-0", "K-1", "NPD", "SSO", "Candidate list", "Per-cell table"):
            assert needle in text
        pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
        assert len(pngs) == 1 and base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
        cand_table = text.split("Candidate list")[1].split("Per-cell")[0]
        assert cand_table.count("<tr>") == 1 + 3  # header + k rows
        cell_table = text.split("Per-cell table")[1]
        assert cell_table.count("<tr>") == 1 + 4
        assert db.audit()[-1]["action"] == "export"
        assert ids  # exhibits were stored


def test_lead_report_shows_flags_and_mirroring(tmp_path):
    scans, _ = fake_scans(1, 2, seed=10)
    scans[1] = flagged(scans[1]).replace(source="fire1-mirror")  # see fake_compare_many

    def mirrored_compare(a, b):
        return SimpleNamespace(**{**vars(_fake_pair_compare(a, b)), "mirrored": True})

    with open_db(tmp_path / "l.db") as db:
        ids = db.ingest_many([(s, {"agency": "NPD", "case_id": f"K-{i}"}) for i, s in
                              enumerate(scans)]).ingested  # fmt: skip
        (lead,) = db.leads()
        assert lead.flags_a == () and lead.flags_b == (Flag(**RING),) and lead.mirrored
        text = report.lead_report(db, lead.id, k=1, comparer=mirrored_compare)
    box = text.split('<div class="flags">')[1].split("</div>")[0]
    assert f"exhibit b ({ids[1]})" in box and RING["code"] in box and "0.21" in box
    exhibits = text.split("<h2>Exhibits</h2>")[1].split("<h2>")[0]
    assert "<td>preparation flags</td><td>none</td>" in exhibits
    assert f"{RING['code']}: {RING['message']}" in exhibits
    scores = text.split("<h2>Scores</h2>")[1].split("<h2>")[0]
    assert "mirror image (stored)</td><td>yes" in scores
    assert "mirror image (recomputed)</td><td>yes" in scores


def test_overlay_mirrors_b_when_the_comparison_did():
    z = _surface(2, 40)
    a = bl.Scan(z, spacing_um=2.0)
    b = bl.Scan(np.flipud(z), spacing_um=2.0)  # the same surface stored mirrored
    cmp = SimpleNamespace(rotation_deg=0.0, translation_um=(0.0, 0.0), mirrored=True)
    fig = report.overlay_figure(a, b, cmp)
    assert any("b mirrored and aligned" in ax.get_title() for ax in fig.axes)
    np.testing.assert_allclose(
        report.align_to(a, report._mirror(b), 0.0, (0.0, 0.0)), z, rtol=1e-5, atol=1e-5
    )
    report._matplotlib().close(fig)


def test_geojson_lines_join_incident_locations(tmp_path):
    scans, _ = fake_scans(1, 3, seed=9)
    places = [(39.1, -94.6), (39.3, -94.2), None]
    with open_db(tmp_path / "l.db") as db:
        for i, (s, p) in enumerate(zip(scans, places)):
            loc = {"lat": p[0], "lon": p[1]} if p else {}
            db.ingest(s, agency=f"A{i}", case_id=f"c{i}", **loc)
        leads = db.leads()
        assert len(leads) == 3
        geo = report.leads_geojson(db, leads)
        assert geo["type"] == "FeatureCollection"
        assert geo["properties"]["n_without_location"] == 2
        (feat,) = geo["features"]
        assert feat["geometry"] == {
            "type": "LineString",
            "coordinates": [[-94.6, 39.1], [-94.2, 39.3]],
        }
        assert feat["properties"]["cross_jurisdiction"] is True
        buf = io.StringIO()
        report.leads_csv(leads, buf)
        rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
        assert [int(r["id"]) for r in rows] == [x.id for x in leads]


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
