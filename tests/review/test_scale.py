"""Every page of the review app answers within 1 s on a database of 1e4 exhibits (about
2.5e4 comparisons, 2.5e3 leads, 1e4 audit records): lists are paged, nothing reads a whole
table for one page. The rows beyond the first six exhibits are written straight into
SQLite (`review_support.extend_db`); the first pair view compares two real full-size
scans (not cached). Larger sizes: ``benchmarks/bench_review.py``."""

from __future__ import annotations

import time

import pytest

from balllink.database import LeadDatabase
from review_support import extend_db, sign_in

N = 10_000
LIMIT_S = 1.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_db(plain_master, tmp_path_factory):
    import shutil

    path = shutil.copytree(plain_master, tmp_path_factory.mktemp("scale") / "leads.db")
    extend_db(path, N)
    return path


def test_every_page_answers_within_a_second_at_1e4_exhibits(big_db):
    from starlette.testclient import TestClient

    from balllink.review import create_app

    with LeadDatabase(big_db, readonly=True) as db:
        assert db.count() == N
        real = db.leads_page(agencies=["Metro PD"], limit=1)[0][0]  # a real, full-size pair
        busy = db.comparisons_of(N, limit=1)[1]
        n_leads = db.leads_page(limit=1)[1]
    assert busy >= 1 and n_leads > 1000
    client = TestClient(create_app(big_db))
    assert sign_in(client, "root").status_code == 303
    urls = [
        "/exhibits",
        "/exhibits?agency=Agency+03&kind=crime_scene&since=2023-01-01",
        "/exhibits?q=2023-00999",
        f"/exhibits?offset={N - 60}",
        f"/exhibits/{N}",
        f"/exhibits/{real.a}",
        f"/pairs/{real.a}/{real.b}",
        "/leads",
        "/leads?status=confirmed&cross=1",
        f"/leads?offset={n_leads - 10}",
        "/series",
        "/audit",
        f"/audit?offset={N - 50}",
        "/audit?action=status",
        "/health",
        "/admin",
        f"/img/exhibit/{real.a}.png",
    ]
    slow = {}
    for url in urls:
        t0 = time.perf_counter()
        r = client.get(url, follow_redirects=True)
        seconds = time.perf_counter() - t0
        assert r.status_code == 200, (url, r.text[-400:])
        if seconds > LIMIT_S:
            slow[url] = round(seconds, 2)
    assert not slow, f"pages slower than {LIMIT_S} s at {N} exhibits: {slow}"
