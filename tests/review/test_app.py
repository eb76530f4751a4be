"""The review app through HTTP (Starlette's test client): sign-in, roles, CSRF, the
pages, the actions and the audit trail, escaping of every stored field."""

from __future__ import annotations

import re

import numpy as np
import pytest

from balllink.database import LeadDatabase
from review_support import EVIL_AGENCY, EVIL_CASE, EVIL_NOTES, USERS, csrf_of, sign_in

PAGES = ["/exhibits", "/exhibits/1", "/leads", "/series", "/audit", "/health"]


def _first_lead(path):
    with LeadDatabase(path, readonly=True) as db:
        leads = db.leads()
    assert leads, "the review database should hold leads (same-gun pairs)"
    return leads[0]


def test_signed_out_requests_are_redirected_to_sign_in(client_of, review_db):
    client = client_of()
    lead = _first_lead(review_db)
    for url in [*PAGES, "/admin", f"/pairs/{lead.a}/{lead.b}", "/img/exhibit/1.png", "/leads.csv"]:
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303, url
        assert r.headers["location"].startswith("/login?next="), url
    r = client.post(
        f"/leads/{lead.id}/status", data={"status": "confirmed"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert _first_lead(review_db).status == "new"


def test_sign_in_checks_the_password_and_renews_the_session(client_of):
    client = client_of()
    r = sign_in(client, "ann", "not her password")
    assert r.status_code == 401 and "Wrong name or password" in r.text
    r = sign_in(client, "nobody", "whatever-password")
    assert r.status_code == 401
    anonymous = client.cookies.get("balllink_session")
    r = sign_in(client, "ann", next_url="/leads")
    assert r.status_code == 303 and r.headers["location"] == "/leads"
    assert client.cookies.get("balllink_session") != anonymous  # no session fixation
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "ann (examiner)" in client.get("/exhibits").text


def test_sign_in_never_redirects_off_site(client_of):
    r = sign_in(client_of(), "ann", next_url="//evil.example/steal")
    assert r.headers["location"] == "/exhibits"


def test_sign_in_form_needs_its_csrf_token(client_of):
    client = client_of()
    client.get("/login")
    r = client.post("/login", data={"name": "ann", "password": USERS["ann"][1]})
    assert r.status_code == 403 and "CSRF" in r.text


def test_sign_out_ends_the_session_on_the_server(client_of):
    client = client_of("ann")
    key = client.cookies.get("balllink_session")
    token = csrf_of(client.get("/exhibits").text)
    r = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    client.cookies.set("balllink_session", key)  # a copy of the old cookie is worth nothing
    assert client.get("/exhibits", follow_redirects=False).status_code == 303


def test_every_page_answers_with_security_headers(client_of, review_db):
    client = client_of("root")
    lead = _first_lead(review_db)
    for url in [*PAGES, "/admin", f"/pairs/{lead.a}/{lead.b}"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[-500:])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert "http://" not in r.text and "https://" not in r.text, url  # nothing fetched
    png = client.get("/img/exhibit/1.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_stored_markup_is_shown_as_text_on_every_page(client_of, review_db):
    client = client_of("ann")
    lead = _first_lead(review_db)
    with LeadDatabase(review_db, readonly=True) as db:
        evil = next(e for e in db.exhibits() if e.case_id == EVIL_CASE)
        evil_lead = next(
            (x for x in db.leads() if evil.id in (x.a, x.b)), db.comparisons_of(evil.id)[0][0][0]
        )
    token = csrf_of(client.get("/exhibits").text)
    client.post(f"/leads/{lead.id}/comment", data={"note": EVIL_NOTES, "csrf_token": token})
    pages = [
        *PAGES,
        f"/exhibits/{evil.id}",
        f"/pairs/{lead.a}/{lead.b}",
        f"/pairs/{evil_lead.a}/{evil_lead.b}",
        "/audit?action=comment",
        "/exhibits?q=" + "%3Cscript%3E",
    ]
    for url in pages:
        html = client.get(url).text
        for raw in (EVIL_AGENCY, EVIL_CASE, EVIL_NOTES):
            assert raw not in html, (url, raw)
        assert 'id="evil-agency"' not in html and 'id="evil-notes"' not in html
    html = client.get(f"/exhibits/{evil.id}").text
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html  # shown, as text
    assert "&lt;b id=&#34;evil-agency&#34;&gt;A&amp;B&lt;/b&gt;" in client.get("/leads").text


def test_examiner_confirms_a_lead_and_the_audit_trail_names_them(client_of, review_db):
    client = client_of("ann")
    lead = _first_lead(review_db)
    page = client.get(f"/pairs/{lead.a}/{lead.b}").text
    r = client.post(
        f"/leads/{lead.id}/status",
        data={"status": "confirmed", "note": "same marks", "csrf_token": csrf_of(page)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with LeadDatabase(review_db, readonly=True) as db:
        assert db.lead(lead.id).status == "confirmed"
        assert db.lead(lead.id).examiner == "ann"
        last = db.audit()[-1]
        assert (last["who"], last["action"], last["detail"]["lead"]) == ("ann", "status", lead.id)
        assert db.check().ok, db.check().problems
    leads = client.get("/leads?status=confirmed").text
    assert f'data-lead="{lead.id}"' in leads and "ann" in leads
    assert re.search(r'class="who">ann</td><td class="action">status', client.get("/audit").text)


def test_analyst_comments_but_cannot_confirm(client_of, review_db):
    client = client_of("bob")
    lead = _first_lead(review_db)
    page = client.get(f"/pairs/{lead.a}/{lead.b}").text
    assert 'id="status-form"' not in page  # no form for a decision they cannot make
    token = csrf_of(page)
    r = client.post(f"/leads/{lead.id}/status", data={"status": "confirmed", "csrf_token": token})
    assert r.status_code == 403 and "examiner role" in r.text
    r = client.post(
        f"/leads/{lead.id}/comment", data={"note": "look at 3 o'clock", "csrf_token": token}
    )
    assert r.status_code == 200  # followed the redirect back to the pair
    with LeadDatabase(review_db, readonly=True) as db:
        assert db.lead(lead.id).status == "new"
        history = db.lead_history(lead.id)
        assert history[-1]["who"] == "bob" and history[-1]["kind"] == "comment"
        assert db.audit()[-1]["action"] == "comment"
        assert db.check().ok
    assert "look at 3 o&#39;clock" in client.get(f"/pairs/{lead.a}/{lead.b}").text


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_post_without_the_csrf_token_is_refused(client_of, review_db, token):
    client = client_of("ann")
    lead = _first_lead(review_db)
    data = {"status": "confirmed"} | ({} if token is None else {"csrf_token": token})
    r = client.post(f"/leads/{lead.id}/status", data=data)
    assert r.status_code == 403 and "CSRF" in r.text
    assert _first_lead(review_db).status == "new"


def test_admin_only_pages_and_user_management(client_of, review_db):
    assert client_of("ann").get("/admin").status_code == 403
    client = client_of("root")
    token = csrf_of(client.get("/admin").text)
    r = client.post(
        "/admin/users",
        data={"name": "cy", "role": "analyst", "password": "cy-password-1",
              "password2": "cy-password-1", "csrf_token": token},
    )  # fmt: skip
    assert r.status_code == 200 and "user cy added" in r.text
    bob = client_of("bob")
    assert bob.get("/exhibits").status_code == 200
    client.post("/admin/users/bob", data={"action": "disable", "csrf_token": token})
    assert bob.get("/exhibits", follow_redirects=False).status_code == 303  # session ended
    assert sign_in(client_of(), "bob").status_code == 401
    with LeadDatabase(review_db, readonly=True) as db:
        assert {u.name: u.disabled for u in db.users()}["bob"]
        changes = [r for r in db.audit() if r["action"].startswith("user ")]
        assert [(r["action"], r["who"]) for r in changes[-2:]] == [
            ("user add", "root"),
            ("user change", "root"),
        ]


def test_a_role_raised_in_sqlite_is_found_by_check(review_db):
    import sqlite3

    con = sqlite3.connect(review_db / "leads.sqlite")
    con.execute("UPDATE users SET role = 'admin' WHERE name = 'bob'")
    con.commit()
    con.close()
    with LeadDatabase(review_db, readonly=True) as db:
        rep = db.check()
    assert not rep.ok and any("users row" in p for p in rep.problems)


def test_read_only_serving_refuses_every_change(review_db):
    from starlette.testclient import TestClient

    from balllink.review import create_app

    client = TestClient(create_app(review_db, readonly=True))
    assert sign_in(client, "ann").status_code == 303
    lead = _first_lead(review_db)
    page = client.get(f"/pairs/{lead.a}/{lead.b}").text
    assert "served read-only" in page and 'id="status-form"' not in page
    r = client.post(
        f"/leads/{lead.id}/status", data={"status": "confirmed", "csrf_token": csrf_of(page)}
    )
    assert r.status_code == 400 and "read-only" in r.text
    assert _first_lead(review_db).status == "new"


def test_pair_view_shows_the_aligned_pair_and_its_cells(client_of, review_db):
    from balllink.review._images import posed  # the picture laid over A

    client = client_of("ann")
    lead = _first_lead(review_db)
    html = client.get(f"/pairs/{lead.a}/{lead.b}").text
    n_congruent = html.count('class="congruent"')
    assert n_congruent >= 1  # outlined congruent cells (SVG) and their table rows
    assert 'id="agrees" class="ok"' in html  # recomputed = stored
    src = re.search(r'id="over" src="(/img/pair/(\d+)/(\d+)/posed.png)"', html)
    assert src and {int(src.group(2)), int(src.group(3))} == {lead.a, lead.b}
    assert client.get(src.group(1)).content[:4] == b"\x89PNG"
    # the posed B lies on A: their heights agree far better than A and B as stored
    import balllink as bl

    with LeadDatabase(review_db, readonly=True) as db:
        row = db.comparison(lead.a, lead.b)
        q, o = row["query"], row["b"] if row["a"] == row["query"] else row["a"]
        a, b = db.scan(q), db.scan(o)
    cmp = bl.compare(a, b, model=False)
    za, zb = a.masked_heights(), posed(a, b, cmp)
    both = np.isfinite(za) & np.isfinite(zb)
    aligned = np.corrcoef(za[both], zb[both])[0, 1]
    raw = b.masked_heights()
    both_raw = np.isfinite(za) & np.isfinite(raw)
    unaligned = abs(np.corrcoef(za[both_raw], raw[both_raw])[0, 1])
    assert aligned > 0.3 and aligned > unaligned + 0.2, (aligned, unaligned)


def test_unknown_things_give_a_page_not_a_traceback(client_of):
    client = client_of("ann")
    assert client.get("/exhibits/99999").status_code == 404
    assert client.get("/pairs/1/99999").status_code in (400, 404)
    assert client.get("/leads?status=maybe").status_code == 400
    assert client.get("/exhibits?kind=<x>").status_code == 400
    assert client.get("/exhibits?offset=-5").status_code == 200


def test_exports_and_filters(client_of, review_db):
    client = client_of("ann")
    csv_text = client.get("/leads.csv").text
    assert csv_text.splitlines()[0].startswith("id,") or "lead" in csv_text.splitlines()[0]
    geo = client.get("/leads.geojson").json()
    assert geo["type"] == "FeatureCollection"
    with LeadDatabase(review_db, readonly=True) as db:
        assert db.audit()[-1]["action"] == "export"
        n = len(db.leads())
    assert len(csv_text.strip().splitlines()) == n + 1
    page = client.get("/leads?cross=1").text
    assert page.count("data-lead=") <= n
