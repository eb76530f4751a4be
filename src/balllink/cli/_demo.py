"""``balllink demo``: the main job end to end on a simulated region (or a folder of scans)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import report, simulate
from ..database import LeadDatabase
from ._commands import write_lead_report
from ._common import SCAN_SUFFIXES, Bar, format_table, lead_rows, read_truth, series_rows

__all__ = ["AGENCIES", "DEMO_MARKER", "MIRRORING_AGENCY", "cmd_demo"]

#: The file ``demo`` writes into the database it makes: only such a database is replaced by
#: the next ``demo`` run (any other needs ``--force``).
DEMO_MARKER = "made-by-balllink-demo"


AGENCIES = {
    "METRO-PD": (39.10, -94.58),
    "RIVER-CO-SO": (39.25, -94.40),
    "STATE-HP": (38.95, -94.75),
}


#: The demo's county sheriff scans on an instrument whose exporter writes mirror images and
#: says nothing about it (unknown handedness), as real exporters do.
MIRRORING_AGENCY = "RIVER-CO-SO"


class Region(NamedTuple):
    """The demo's casings: ingest items (``scan`` plus exhibit fields) and their guns
    (None where unknown), in the same order."""

    items: list[dict]
    labels: list


def _simulated_region(seed: int = 7, shape=None, difficulty: str = "fadul-like") -> Region:
    """A year of shootings in three agencies: guns, casings, test fires, with truth.

    The casings are cut to their breech face in varied ways (off-centre, touching or open
    firing-pin holes, missing sectors, clipped outlines), and one agency's exporter writes
    mirror images with no handedness: the links must survive both."""
    rng = np.random.default_rng(seed)
    # gun -> [agencies of its shootings]; two guns cross jurisdictions, one is recovered
    plan = [
        ["METRO-PD", "METRO-PD", "RIVER-CO-SO"],
        ["STATE-HP", "METRO-PD"],
        ["RIVER-CO-SO", "RIVER-CO-SO"],
        ["METRO-PD", "METRO-PD", "STATE-HP"],
        ["STATE-HP"],
        ["METRO-PD"],
        ["RIVER-CO-SO"],
    ]
    recovered = {0: ("Glock", "19", "BHX123"), 3: ("Smith & Wesson", "SD9VE", "FCK4471")}
    per = max(len(p) + (g in recovered) for g, p in enumerate(plan))
    sims = simulate.casings(
        len(plan), per, seed=seed, shape=shape, difficulty=difficulty, geometry="varied"
    )
    items, truth = [], []
    case_no = 100
    for g, agencies in enumerate(plan):
        firings = [s for s, t in zip(sims.scans, sims.truth) if t["firearm_id"] == g]
        for n, agency in enumerate(agencies):
            lat0, lon0 = AGENCIES[agency]
            day = int(rng.integers(0, 330))
            case_no += 1
            scan = firings[n]
            if agency == MIRRORING_AGENCY:
                flipped = scan.mirrored()
                scan = flipped.replace(meta={**flipped.meta, "handedness": None})
            items.append(
                {
                    "scan": scan,
                    "agency": agency,
                    "case_id": f"{agency[:3]}-2025-{case_no}",
                    "kind": "crime_scene",
                    "occurred": str(np.datetime64("2025-01-01") + day),
                    "lat": round(lat0 + rng.normal(0, 0.04), 5),
                    "lon": round(lon0 + rng.normal(0, 0.04), 5),
                    "caliber": "9mm Luger",
                }
            )
            truth.append(g)
        if g in recovered:
            make, model, serial = recovered[g]
            items.append(
                {
                    "scan": firings[len(agencies)],
                    "agency": "STATE-HP",
                    "case_id": f"LAB-2025-{serial}",
                    "kind": "test_fire",
                    "make": make,
                    "model": model,
                    "serial": serial,
                    "occurred": "2025-12-01",
                    "caliber": "9mm Luger",
                    "notes": "test fire of a recovered pistol",
                }
            )
            truth.append(g)
    order = sorted(range(len(items)), key=lambda i: items[i]["occurred"])
    return Region([items[i] for i in order], [truth[i] for i in order])


def _folder_region(folder: Path, seed: int = 7) -> Region:
    """Real scans as if recovered by three agencies; truth from ``truth.csv`` if present."""
    rng = np.random.default_rng(seed)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SCAN_SUFFIXES)
    truth_file = folder / "truth.csv"
    truth = read_truth(truth_file) if truth_file.exists() else {}
    names = list(AGENCIES)
    items, labels = [], []
    for n, p in enumerate(paths):
        agency = names[int(rng.integers(0, 3))]
        lat0, lon0 = AGENCIES[agency]
        items.append(
            {
                "scan": p,
                "agency": agency,
                "case_id": f"{agency[:3]}-{n + 1:04d}",
                "occurred": str(np.datetime64("2025-01-01") + int(rng.integers(0, 365))),
                "lat": round(lat0 + rng.normal(0, 0.04), 5),
                "lon": round(lon0 + rng.normal(0, 0.04), 5),
            }
        )
        labels.append(truth.get(p.name))
    return Region(items, labels)


def _score_against_truth(db, ids, labels) -> dict:
    """Leads and series of the demo against the known guns."""
    gun = {i: g for i, g in zip(ids, labels) if i is not None and g is not None}
    if not gun:
        return {}
    leads = db.leads()
    lead_pairs = {(x.a, x.b) for x in leads}
    known = sorted(gun)
    km = knm = km_leads = knm_leads = 0
    cases = {e.id: e.case_id for e in db.exhibits()}
    for n, a in enumerate(known):
        for b in known[n + 1 :]:
            if cases[a] == cases[b]:
                continue
            same = gun[a] == gun[b]
            hit = (a, b) in lead_pairs
            km += same
            knm += not same
            km_leads += same and hit
            knm_leads += hit and not same
    groups: dict = defaultdict(set)
    for i, g in gun.items():
        groups[g].add(i)
    true_series = sorted(sorted(s) for s in groups.values() if len(s) > 1)
    got_series = sorted(sorted(s.exhibits) for s in db.series())
    return {
        "same_gun_pairs": km,
        "same_gun_pairs_that_are_leads": km_leads,
        "different_gun_pairs": knm,
        "different_gun_pairs_that_are_leads": knm_leads,
        "true_series": len(true_series),
        "found_series": len(got_series),
        "series_equal_truth": true_series == got_series,
    }


def cmd_demo(args) -> int:
    t0 = time.perf_counter()
    out_stream = sys.stderr if args.json else sys.stdout  # --json: only JSON on stdout

    def say(*parts):
        print(*parts, file=out_stream)

    out = Path(args.out)
    dbdir = out / "balllink.db"
    if dbdir.exists() and not (args.force or (dbdir / DEMO_MARKER).is_file()):
        print(
            f"balllink demo: {dbdir} exists and was not made by 'balllink demo'; refusing to "
            "replace it (it may be a real lead database). Choose another --out, or give --force "
            "to delete it",
            file=sys.stderr,
        )
        return 2
    data = Path(args.data) if args.data else None
    if data is not None:
        if not data.is_dir():
            print(f"balllink demo: {data} is not a folder", file=sys.stderr)
            return 2
        items, labels = _folder_region(data)
        if not items:
            print(
                f"balllink demo: no scans ({', '.join(SCAN_SUFFIXES)}) in {data}", file=sys.stderr
            )
            return 2
    if dbdir.is_dir() and not dbdir.is_symlink():
        shutil.rmtree(dbdir)
    elif dbdir.exists() or dbdir.is_symlink():
        dbdir.unlink()  # --force on a file or a link: the link goes, not its target
    out.mkdir(parents=True, exist_ok=True)
    if data is not None:
        say(f"Real scans from {data}: {len(items)} files, as if from {len(AGENCIES)} agencies")
    else:
        say("Simulating a region of 3 agencies over 2025 (balllink.simulate)...")
        items, labels = _simulated_region(shape=(args.size, args.size) if args.size else None)
        say(
            f"  {len(items)} casings from {len(set(labels))} guns "
            f"({sum(i['kind'] == 'test_fire' for i in items)} test fires of recovered guns)"
        )
    rescore = args.rescore or (50 if data is not None else 6)
    db = LeadDatabase(dbdir, rescore_k=rescore, threshold=args.threshold)
    (dbdir / DEMO_MARKER).write_text("made by 'balllink demo'; demo replaces it on its next run\n")
    bar = Bar("ingest", not args.json)
    ids: list = []
    skipped, flagged = [], []
    for n, it in enumerate(items):
        fields = {k: v for k, v in it.items() if k != "scan"}
        rep = db.ingest_many([(it["scan"], fields)])
        ids.append((rep.ingested or [d for _, d in rep.duplicates] or [None])[0])
        skipped += rep.skipped
        flagged += rep.flagged
        bar(n + 1, len(items))
    bar.close()
    for f in flagged:
        say(f"  flagged exhibit {f.exhibit_id} {f.name}: " + "; ".join(map(str, f.flags)))
    for f, why in skipped:
        say(f"  skipped {f}: {why}")
    leads = db.leads()
    cross = [x for x in leads if x.cross_jurisdiction]
    say(f"\n{len(leads)} lead(s) at threshold {db.threshold:g}, {len(cross)} cross-jurisdiction")
    say(format_table(lead_rows(leads[:25], full=False)))
    if len(leads) > 25:
        say(f"... {len(leads) - 25} more (balllink leads --db {dbdir})")
    series = db.series()
    say(f"\n{len(series)} series (one gun, several shootings)")
    say(format_table(series_rows(series)))
    written = []
    if leads:
        best = (cross or leads)[0]
        html = out / f"lead-{best.id}.html"
        write_lead_report(db, best.id, html)
        written.append(html)
        geo = out / "leads.geojson"
        geo.write_text(json.dumps(report.leads_geojson(db, leads), indent=2))
        db.log_event("export", what="leads", format="geojson", n=len(leads), path=str(geo))
        written.append(geo)
    versus = _score_against_truth(db, ids, labels)
    check = db.check()
    audit = db.verify_audit()
    db.close()
    summary = {
        "exhibits": len([i for i in ids if i is not None]),
        "flagged": len(flagged),
        "skipped": len(skipped),
        "leads": len(leads),
        "cross_jurisdiction_leads": len(cross),
        "series": len(series),
        "check_ok": check.ok,
        "audit_ok": audit.ok,
        "seconds": round(time.perf_counter() - t0, 1),
        "database": str(dbdir),
        "files": [str(p) for p in written],
        **({"truth": versus} if versus else {}),
    }
    say("\nSummary")
    for k, v in summary.items():
        say(f"  {k:26s} {v}")
    venv_bin = Path(sys.executable).parent
    cmd = "balllink" if shutil.which("balllink") else f"{venv_bin / 'balllink'}"
    say(
        "\nReview these leads in the browser (a reviewer first, then the server on "
        "http://127.0.0.1:8000/):\n"
        f"  {cmd} user add examiner --role examiner --db {dbdir}\n"
        f"  {cmd} serve --db {dbdir}"
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0 if check.ok and audit.ok else 1
