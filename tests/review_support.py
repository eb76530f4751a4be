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


def build_review_db(path: Path, *, markup: bool = True) -> Path:
    """Two guns x 3 firings (fadul-like, full size), ingested with correlation through the
    real chain, with places and dates; with ``markup``, one agency, one case id and the
    notes hold markup; the three reviewers of `USERS`."""
    agencies = (EVIL_AGENCY, "Metro PD") if markup else ("County SO", "Metro PD")
    stream = bl.simulate.iter_casings(2, 3, seed=5, difficulty="fadul-like")
    with LeadDatabase(path, user="setup") as db:
        for i, (scan, _truth) in enumerate(stream):
            db.ingest(
                scan,
                case_id=EVIL_CASE if markup and i == 4 else f"2024-{i:04d}",
                agency=agencies[0] if i % 2 else agencies[1],
                notes=EVIL_NOTES if markup else f"recovered at scene {i + 1}",
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


def extend_db(path: Path, n: int, *, per_exhibit: int = 5, seed: int = 0) -> dict:
    """Grow a review database to ``n`` exhibits for the page-speed tests: rows written
    straight into SQLite, not through the API (ingesting 1e4 scans takes minutes here);
    the new exhibits reuse the stored scans of the first ones.

    Each new exhibit gets ``per_exhibit`` comparisons with earlier ones (about one in ten a
    lead by its LR, some confirmed or rejected) and one audit record; 12 agencies, dates
    over three years, places around one city. The audit chain of the new records is not
    valid (`check` says so): these tests time the pages, not the evidence.
    """
    import json
    import sqlite3

    import numpy as np

    rng = np.random.default_rng(seed)
    with LeadDatabase(path, readonly=True) as db:
        model_id = db.lr_model_id
    con = sqlite3.connect(path / "leads.sqlite")
    con.row_factory = sqlite3.Row
    cols = [r[1] for r in con.execute("PRAGMA table_info(exhibits)")]
    templates = [dict(r) for r in con.execute("SELECT * FROM exhibits ORDER BY id")]
    first = max(t["id"] for t in templates) + 1
    agencies = [f"Agency {k:02d}" for k in range(12)]
    rows = []
    for i in range(first, n + 1):
        t = dict(templates[i % len(templates)])
        t.update(
            id=i,
            case_id=f"2023-{i:06d}",
            agency=agencies[i % 12],
            kind="crime_scene" if i % 5 else "test_fire",
            occurred=f"{2022 + i % 3}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            lat=39.9 + rng.normal(0, 0.05),
            lon=-75.1 + rng.normal(0, 0.05),
            notes=f"casing {i}",
            source=f"bulk/{i}.x3p",
            source_hash=f"{i:064x}",
        )
        rows.append([t[c] for c in cols])
    marks = ",".join("?" * len(cols))
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO exhibits ({','.join(cols)}) VALUES ({marks})", rows)
    comps, lrs, statuses = [], [], []
    cid = (con.execute("SELECT max(id) FROM comparisons").fetchone()[0] or 0) + 1
    for i in range(first, n + 1):
        partners = set(rng.integers(1, i, size=per_exhibit).tolist()) if i > 1 else set()
        for j in partners:
            lead = rng.random() < 0.1
            comps.append((cid, j, i, i, 0.9 if lead else 0.05, 30 if lead else 1, 12.0, 5.0,
                          -3.0, "", "2025-01-01T00:00:00", 0, 60, 0.5, 6.25))  # fmt: skip
            lrs.append((cid, model_id, 3.0 if lead else -0.5, 2.5, 3.2, 1, ""))
            if lead and rng.random() < 0.3:
                statuses.append((cid, "confirmed" if rng.random() < 0.7 else "rejected", "ann",
                                 "2025-02-01T00:00:00", "bulk"))  # fmt: skip
            cid += 1
    con.executemany(
        "INSERT INTO comparisons (id, a, b, query, score, cmc_count, rotation_deg, dy_um, "
        "dx_um, reason, created, mirrored, n_cells, raw_score, source_spacing_um) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        comps,
    )
    con.executemany("INSERT INTO lr VALUES (?,?,?,?,?,?,?)", lrs)
    con.executemany(
        "INSERT INTO lead_status (lead, status, examiner, time, note) VALUES (?,?,?,?,?)",
        statuses,
    )
    seq = con.execute("SELECT max(seq) FROM audit").fetchone()[0]
    con.executemany(
        "INSERT INTO audit (seq, time, who, action, detail, prev_hash, hash) "
        "VALUES (?,?,?,?,?,?,?)",
        [
            (
                seq + k,
                "2025-01-01T00:00:00",
                "bulk",
                "ingest",
                json.dumps({"exhibit": i}),
                "0" * 64,
                f"{seq + k:064x}",
            )
            for k, i in enumerate(range(first, n + 1), start=1)
        ],
    )
    con.execute("COMMIT")
    con.close()
    return {"exhibits": n, "comparisons": len(comps), "statuses": len(statuses)}
