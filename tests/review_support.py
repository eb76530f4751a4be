"""What the review-app tests share: the small real database (simulated casings compared by
the real chain; fields with markup in them), its reviewers, signing in."""

from __future__ import annotations

import re
from pathlib import Path

import balllink as bl
from balllink.database import LeadDatabase

#: Reviewers of the test databases: name -> (role, password).
USERS = {
    "ann": ("examiner", "ann-password-1"),
    "bob": ("analyst", "bob-password-1"),
    "root": ("admin", "root-password-1"),
}
#: Fields with markup, stored as given: every page must show them as text.
EVIL_AGENCY = '<b id="evil-agency">A&B</b>'
EVIL_CASE = "<script>window.pwned=1</script>"
EVIL_NOTES = '"><img src=x id="evil-notes">'


def build_review_db(path: Path) -> Path:
    """Two guns x 3 firings (fadul-like, full size), ingested with correlation through the
    real chain, with places and dates; one agency, one case id and the notes with markup;
    the three reviewers of `USERS`."""
    stream = bl.simulate.iter_casings(2, 3, seed=5, difficulty="fadul-like")
    with LeadDatabase(path, user="setup") as db:
        for i, (scan, _truth) in enumerate(stream):
            db.ingest(
                scan,
                case_id=EVIL_CASE if i == 4 else f"2024-{i:04d}",
                agency=EVIL_AGENCY if i % 2 else "Metro PD",
                notes=EVIL_NOTES,
                occurred=f"2024-0{i + 1}-15",
                lat=39.95 + 0.01 * i,
                lon=-75.16 + 0.01 * i,
                caliber="9mm",
            )
        for name, (role, password) in USERS.items():
            db.add_user(name, role, password)
    return path


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client, name: str, password: str | None = None, *, next_url: str = "/exhibits"):
    """Sign ``name`` in through the sign-in form; returns the response of the POST."""
    token = csrf_of(client.get("/login").text)
    password = USERS[name][1] if password is None else password
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token, "next": next_url},
        follow_redirects=False,
    )
