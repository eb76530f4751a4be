"""The ``balllink`` command line. Library code logs; this module prints.

Every command takes ``--db PATH`` (default: the ``BALLLINK_DB`` environment variable, else
``./balllink.db``) and ``--json`` for machine-readable output. Exit codes: 0 success,
1 partial failure (some files skipped, a check that found problems), 2 bad usage or input.
``ingest`` stores scans whose preparation was flagged (exit 0) and lists them with their
flags; with ``--strict`` it skips them instead (exit 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

__all__ = ["main", "run_bench"]

log = logging.getLogger(__name__)

SCAN_SUFFIXES = {".x3p", ".npz", ".npy", ".png", ".tif", ".tiff"}


# --------------------------------------------------------------------------- helpers
def _db_path(args) -> Path:
    return Path(args.db or os.environ.get("BALLLINK_DB") or "balllink.db")


def _open(args, **kw):
    from .database import LeadDatabase

    return LeadDatabase(_db_path(args), **kw)


class _Bar:
    """A ``progress(done, total)`` callback drawing a tqdm bar (on stderr)."""

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, done, total):
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="scan", file=sys.stderr)
        self.bar.update(done - self.bar.n)  # tqdm throttles the redraws

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _emit(args, obj, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str))
    elif text is not None:
        print(text)


def _flag_codes(flags) -> str:
    return ",".join(f.code for f in flags)


def _lead_flags(lead) -> str:
    """``a:code,code b:code`` for the sides of a lead that carry preparation flags."""
    sides = [(s, _flag_codes(f)) for s, f in (("a", lead.flags_a), ("b", lead.flags_b)) if f]
    return " ".join(f"{s}:{codes}" for s, codes in sides)


def _lead_rows(leads, *, full: bool) -> list[dict]:
    """Table rows of leads; ``full`` adds the case numbers and the review status."""
    rows = []
    for x in leads:
        row = {
            "lead": x.id,
            "a": x.a,
            "b": x.b,
            "score": x.score,
            "cmc": x.cmc_count,
            "agencies": f"{x.agency_a}/{x.agency_b}",
        }
        if full:
            row["cases"] = f"{x.case_a}/{x.case_b}"
        row["cross"] = "X" if x.cross_jurisdiction else ""
        if full:
            row["status"] = x.status
        row["mirrored"] = "M" if x.mirrored else ""
        row["flags"] = _lead_flags(x)
        rows.append(row)
    return rows


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, tuple | list):
            return ",".join(fmt(x) for x in v)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _expand(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in SCAN_SUFFIXES)
        else:
            out.append(p)
    return out


def _prepare(scan):
    from .preprocessing import prepare_if_needed

    return prepare_if_needed(scan)


# --------------------------------------------------------------------------- ingest
def _read_fields(csv_path) -> dict[str, dict]:
    """file name or path -> exhibit fields, from a CSV with a ``file`` column."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{csv_path}: the fields CSV needs a 'file' column")
    return {r.pop("file"): {k: v for k, v in r.items() if v not in (None, "")} for r in rows}


def _cmd_ingest(args) -> int:
    paths = _expand(args.paths)
    if not paths:
        print("balllink ingest: no scan files given", file=sys.stderr)
        return 2
    common = {"agency": args.agency}
    for name in ("case_id", "kind", "caliber", "occurred", "make", "model", "serial"):
        if getattr(args, name, None):
            common[name] = getattr(args, name)
    per_file = _read_fields(args.fields) if args.fields else {}
    items = []
    for p in paths:
        extra = per_file.get(str(p)) or per_file.get(p.name) or {}
        items.append((p, extra))
    bar = _Bar("ingest", not args.json)
    with _open(args, rescore_k=args.rescore, threshold=args.threshold) as db:
        rep = db.ingest_many(
            items,
            correlate=not args.no_correlate,
            progress=bar,
            strict=args.strict,
            **common,
        )
    bar.close()
    _emit(args, rep.as_dict(), _ingest_text(rep))
    return 1 if rep.skipped else 0


def _ingest_text(rep) -> str:
    """The ingest summary: counts, then every flagged exhibit and every skipped file."""
    lines = [
        f"ingested {len(rep.ingested)} exhibit(s) ({len(rep.flagged)} flagged), "
        f"{len(rep.duplicates)} already stored, {len(rep.skipped)} skipped; "
        f"{rep.n_compared} comparisons, {len(rep.new_leads)} new lead(s)"
    ]
    if rep.flagged:
        lines.append("flagged (stored and compared; check these scans before relying on them):")
        for f in rep.flagged:
            lines.append(f"  exhibit {f.exhibit_id}  {f.name}")
            lines += [f"    {flag}" for flag in f.flags]
    if rep.skipped:
        lines.append("skipped (could not be used):")
        lines += [f"  {name}: {why.removeprefix(f'{name}: ')}" for name, why in rep.skipped]
    return "\n".join(lines)


# --------------------------------------------------------------------------- search
def _scope(args):
    from .leads import Scope

    bbox = tuple(float(v) for v in args.bbox.split(",")) if args.bbox else None
    return Scope(
        agencies=args.agency or None,
        since=args.since,
        until=args.until,
        caliber=args.caliber,
        kind=args.kind,
        bbox=bbox,
        max_rescore=args.max_rescore or max(args.k, 50),
    )


def _cmd_search(args) -> int:
    with _open(args) as db:
        query = int(args.query) if args.query.isdigit() else args.query
        res = db.search(query, k=args.k, scope=_scope(args))
    rows = [
        {
            "rank": c.rank,
            "exhibit": c.exhibit_id,
            "case": c.case_id,
            "agency": c.agency,
            "score": c.score,
            "cmc": c.cmc_count,
            "rot°": c.rotation_deg,
            "p_chance": c.p_chance,
            "lead": "LEAD" if c.score >= res.threshold else "",
            "mirrored": "M" if c.mirrored else "",
            "flags": _flag_codes(c.flags),
        }
        for c in res
    ]
    head = f"{res.n_in_scope} exhibit(s) in scope, {res.n_rescored} rescored"
    if res.query_flags:
        head += "\nquery flagged: " + "; ".join(map(str, res.query_flags))
    _emit(args, res.as_dict(), head + "\n" + _table(rows))
    return 0


# --------------------------------------------------------------------------- leads
def _cmd_leads(args) -> int:
    from . import report

    with _open(args) as db:
        leads = db.leads(
            args.threshold, since=args.since, status=args.status, cross_only=args.cross_only
        )
        fmt = "json" if args.json and args.format == "table" else args.format
        out = open(args.output, "w", newline="") if args.output else sys.stdout
        try:
            if fmt == "csv":
                report.leads_csv(leads, out)
            elif fmt == "json":
                out.write(json.dumps([lead.as_dict() for lead in leads], indent=2) + "\n")
            elif fmt == "geojson":
                out.write(json.dumps(report.leads_geojson(db, leads), indent=2) + "\n")
            else:
                rows = _lead_rows(leads, full=True)
                out.write(f"{len(leads)} lead(s) at threshold {db.threshold:g}\n")
                out.write(_table(rows) + "\n")
        finally:
            if args.output:
                out.close()
        if fmt != "table" or args.output:
            db.log_event("export", what="leads", format=fmt, n=len(leads), path=args.output)
    return 0


def _series_rows(series) -> list[dict]:
    return [
        {
            "series": n + 1,
            "exhibits": len(s.exhibits),
            "ids": ",".join(map(str, s.exhibits)),
            "agencies": ",".join(s.agencies),
            "cases": len(s.cases),
            "first": s.first,
            "last": s.last,
        }
        for n, s in enumerate(series)
    ]


def _cmd_series(args) -> int:
    with _open(args) as db:
        series = db.series(args.threshold)
    text = f"{len(series)} series\n" + _table(_series_rows(series))
    _emit(args, [s.as_dict() for s in series], text)
    return 0


def _cmd_status(args) -> int:
    with _open(args) as db:
        db.set_status(args.lead, args.status, examiner=args.examiner, note=args.note)
        lead = db.lead(args.lead)
    _emit(args, lead.as_dict(), f"lead {lead.id}: {lead.status} ({lead.examiner})")
    return 0


def _cmd_report(args) -> int:
    from . import report

    out = Path(args.output or f"lead-{args.lead}.html")
    with _open(args) as db:
        report.lead_report(db, args.lead, out, k=args.k)
    _emit(args, {"report": str(out)}, f"wrote {out}")
    return 0


def _cmd_check(args) -> int:
    with _open(args) as db:
        rep = db.check(deep=args.deep)
    lines = [f"{'OK' if rep.ok else 'PROBLEMS'}: {rep.counts}"]
    lines += [f"  problem: {p}" for p in rep.problems]
    lines += [f"  warning: {w}" for w in rep.warnings]
    _emit(args, rep.as_dict(), "\n".join(lines))
    return 0 if rep.ok else 1


# --------------------------------------------------------------------------- score / evaluate
_SCORE_COLUMNS = [
    "file_a",
    "file_b",
    "score",
    "cmc_count",
    "rotation_deg",
    "dy_um",
    "dx_um",
    "lead",
    "reason",
]


def _row(a, b, cmp=None, reason="") -> dict:
    if cmp is None:
        return dict.fromkeys(_SCORE_COLUMNS, "") | {"file_a": a, "file_b": b, "reason": reason}
    dy, dx = cmp.translation_um
    return {
        "file_a": a,
        "file_b": b,
        "score": f"{float(cmp.score):.6g}",
        "cmc_count": int(cmp.cmc_count),
        "rotation_deg": f"{float(cmp.rotation_deg):.3f}",
        "dy_um": f"{float(dy):.2f}",
        "dx_um": f"{float(dx):.2f}",
        "lead": int(bool(cmp.lead)),
        "reason": cmp.reason or "",
    }


def _load_prepared(path):
    from .io import read_scan

    return _prepare(read_scan(path))


def _score_group(job):
    """Worker: one query file against its partner files (compare_many)."""
    from .comparison import compare_many

    a, partners = job
    try:
        qa = _load_prepared(a)
    except Exception as exc:
        return [_row(a, b, reason=f"{a}: {exc}") for b in partners]
    preps, rows, ok = [], {}, []
    for b in partners:
        try:
            preps.append(_load_prepared(b))
            ok.append(b)
        except Exception as exc:
            rows[b] = _row(a, b, reason=f"{b}: {exc}")
    for b, cmp in zip(ok, compare_many(qa, preps) if preps else []):
        rows[b] = _row(a, b, cmp)
    return [rows[b] for b in partners]


def _run_groups(groups, jobs: int, on_rows, bar) -> None:
    total = sum(len(p) for _, p in groups)
    done = 0
    if jobs <= 1 or len(groups) <= 1:
        for g in groups:
            rows = _score_group(g)
            on_rows(rows)
            done += len(rows)
            bar(done, total)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_score_group, g) for g in groups]
        for fut in as_completed(futures):
            rows = fut.result()
            on_rows(rows)
            done += len(rows)
            bar(done, total)


def _cmd_score(args) -> int:
    with open(args.pairs, newline="") as fh:
        reader = csv.reader(fh)
        rows = [r for r in reader if r and not r[0].startswith("#")]
    if rows and rows[0][:2] in (["file_a", "file_b"], ["a", "b"]):
        rows = rows[1:]
    base = Path(args.pairs).parent
    pairs = []
    for r in rows:
        if len(r) < 2:
            print(f"balllink score: {args.pairs}: a row needs two files: {r}", file=sys.stderr)
            return 2
        pairs.append((r[0].strip(), r[1].strip()))
    out = Path(args.output)
    done = set()
    if out.exists():
        with open(out, newline="") as fh:
            done = {(r["file_a"], r["file_b"]) for r in csv.DictReader(fh) if r.get("score")}
    todo = [p for p in pairs if p not in done]
    groups: dict[str, list[str]] = defaultdict(list)
    for a, b in todo:
        groups[a].append(b)

    def resolve(f):
        return str(f if Path(f).is_absolute() or Path(f).exists() else base / f)

    jobs = [(resolve(a), [resolve(b) for b in bs]) for a, bs in groups.items()]
    names = {resolve(f): f for p in todo for f in p}
    new_file = not out.exists() or out.stat().st_size == 0
    failed = 0
    with open(out, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_SCORE_COLUMNS)
        if new_file:
            writer.writeheader()

        def on_rows(rows):
            nonlocal failed
            for r in rows:
                r["file_a"], r["file_b"] = names[r["file_a"]], names[r["file_b"]]
                failed += not r["score"]
                writer.writerow(r)
            fh.flush()

        bar = _Bar("score", not args.json)
        _run_groups(jobs, args.jobs, on_rows, bar)
        bar.close()
    summary = {
        "pairs": len(pairs),
        "already_scored": len(pairs) - len(todo),
        "scored": len(todo) - failed,
        "failed": failed,
        "output": str(out),
    }
    _emit(
        args,
        summary,
        f"{summary['scored']} pair(s) scored, {summary['already_scored']} already in {out}, "
        f"{failed} failed",
    )
    return 1 if failed else 0


def _read_truth(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: empty truth CSV")
    cols = list(rows[0])
    fcol = "file" if "file" in cols else cols[0]
    gcol = next((c for c in ("firearm", "gun", "label") if c in cols), cols[1])
    return {r[fcol]: r[gcol] for r in rows}


def evaluate_folder(folder, truth: dict[str, str], *, jobs: int = 1, progress=None) -> tuple:
    """Score every pair of the labelled scans of ``folder``; returns (names, labels, S)."""
    import numpy as np

    names = sorted(f for f in truth if (Path(folder) / f).exists())
    paths = [str(Path(folder) / f) for f in names]
    groups = [(paths[i], paths[i + 1 :]) for i in range(len(paths) - 1)]
    index = {p: i for i, p in enumerate(paths)}
    scores = np.full((len(paths), len(paths)), np.nan)

    def on_rows(rows):
        for r in rows:
            i, j = index[r["file_a"]], index[r["file_b"]]
            scores[i, j] = scores[j, i] = float(r["score"]) if r["score"] else np.nan

    _run_groups(groups, jobs, on_rows, progress or (lambda d, t: None))
    return names, [truth[n] for n in names], scores


def _cmd_evaluate(args) -> int:
    import numpy as np

    from . import report
    from .leads import default_threshold

    truth = _read_truth(args.truth)
    bar = _Bar("evaluate", not args.json)
    names, labels, scores = evaluate_folder(args.folder, truth, jobs=args.jobs, progress=bar)
    bar.close()
    if len(names) < 2:
        print(f"balllink evaluate: fewer than 2 labelled scans in {args.folder}", file=sys.stderr)
        return 2
    failed = int(np.isnan(scores[np.triu_indices(len(names), 1)]).sum())
    scores = np.nan_to_num(scores, nan=-np.inf)
    thr = args.threshold if args.threshold is not None else default_threshold()
    summary = report.evaluation_summary(names, labels, scores, thr)
    summary["failed_pairs"] = failed
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    iu = np.triu_indices(len(names), 1)
    same = np.asarray(labels)[iu[0]] == np.asarray(labels)[iu[1]]
    pair_scores = scores[iu]
    fin = np.isfinite(pair_scores)
    report.score_histogram(
        pair_scores[fin], same[fin], thr, outdir / "histogram.png", title=str(args.folder)
    )
    with open(outdir / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_a", "file_b", "score", "same_firearm"])
        for i, j in zip(*iu):
            w.writerow([names[i], names[j], f"{scores[i, j]:.6g}", int(labels[i] == labels[j])])
    summary["histogram"] = str(outdir / "histogram.png")
    report.write_json(summary, outdir / "evaluation.json")
    text = "\n".join(
        f"{k:16s} {v:.4g}" if isinstance(v, float) else f"{k:16s} {v}" for k, v in summary.items()
    )
    _emit(args, summary, text)
    return 1 if failed else 0


# --------------------------------------------------------------------------- demo
AGENCIES = {
    "METRO-PD": (39.10, -94.58),
    "RIVER-CO-SO": (39.25, -94.40),
    "STATE-HP": (38.95, -94.75),
}


#: The demo's county sheriff scans on an instrument whose exporter writes mirror images and
#: says nothing about it (unknown handedness), as real exporters do.
MIRRORING_AGENCY = "RIVER-CO-SO"


def _simulated_region(seed: int = 7, shape=None, difficulty: str = "fadul-like"):
    """A year of shootings in three agencies: guns, casings, test fires, with truth.

    The casings are cut to their breech face in varied ways (off-centre, touching or open
    firing-pin holes, missing sectors, clipped outlines), and one agency's exporter writes
    mirror images with no handedness: the links must survive both."""
    import numpy as np

    from . import simulate

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
    return [items[i] for i in order], [truth[i] for i in order]


def _folder_region(folder: Path, seed: int = 7):
    """Real scans as if recovered by three agencies; truth from ``truth.csv`` if present."""
    import numpy as np

    rng = np.random.default_rng(seed)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SCAN_SUFFIXES)
    truth_file = folder / "truth.csv"
    truth = _read_truth(truth_file) if truth_file.exists() else {}
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
    return items, labels


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


def _cmd_demo(args) -> int:
    from . import report

    t0 = time.perf_counter()
    out_stream = sys.stderr if args.json else sys.stdout  # --json: only JSON on stdout

    def say(*parts):
        print(*parts, file=out_stream)

    out = Path(args.out)
    dbdir = out / "balllink.db"
    if dbdir.exists():
        shutil.rmtree(dbdir)
    out.mkdir(parents=True, exist_ok=True)
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
        say(f"Real scans from {data}: {len(items)} files, as if from {len(AGENCIES)} agencies")
    else:
        say("Simulating a region of 3 agencies over 2025 (balllink.simulate)...")
        items, labels = _simulated_region(shape=(args.size, args.size) if args.size else None)
        say(
            f"  {len(items)} casings from {len(set(labels))} guns "
            f"({sum(i['kind'] == 'test_fire' for i in items)} test fires of recovered guns)"
        )
    from .database import LeadDatabase

    rescore = args.rescore or (50 if data is not None else 6)
    db = LeadDatabase(dbdir, rescore_k=rescore, threshold=args.threshold)
    bar = _Bar("ingest", not args.json)
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
    say(_table(_lead_rows(leads[:25], full=False)))
    if len(leads) > 25:
        say(f"... {len(leads) - 25} more (balllink leads --db {dbdir})")
    series = db.series()
    say(f"\n{len(series)} series (one gun, several shootings)")
    say(_table(_series_rows(series)))
    written = []
    if leads:
        best = (cross or leads)[0]
        html = out / f"lead-{best.id}.html"
        report.lead_report(db, best.id, html)
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
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0 if check.ok and audit.ok else 1


# --------------------------------------------------------------------------- bench
def run_bench(
    sizes=(1000,),
    *,
    shape=(128, 128),
    spacing_um: float = 12.5,
    n_ingest: int = 50,
    n_queries: int = 5,
    rescore: int = 50,
    workdir=None,
    keep: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Ingest rate and search latency of a lead database of simulated exhibits.

    For each size N: N small simulated casings (``shape`` pixels at ``spacing_um``,
    prepared-like) are stored without correlation (bulk load), then ``n_ingest`` new
    firings of stored guns are ingested with full correlation (retrieval + rescoring of up
    to ``rescore`` candidates each), then ``n_queries`` searches each rescore the top
    ``rescore``. Peak memory is the process's maximum resident set size so far. With
    ``keep``, databases stay in ``workdir`` and are reused by the next run (bulk load and
    correlated ingest are then not measured again).
    """
    import resource
    import tempfile

    import numpy as np

    from . import simulate
    from .database import LeadDatabase

    def prepared(scan):
        return scan.replace(meta={"prepared": {"simulated": True}})

    results = []
    for size in sizes:
        if keep:
            folder = Path(workdir or ".") / f"bench-{size}-{shape[0]}x{shape[1]}"
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(tempfile.mkdtemp(prefix="balllink-bench-", dir=workdir))
        try:
            db = LeadDatabase(folder / "bench.db", rescore_k=rescore)
            reused = db.count() >= size
            per = 4  # stored firings per gun; firing `per` of the first guns are new casings
            n_fire = math.ceil(size / per)
            stream = simulate.iter_casings(
                n_fire, per + 1, seed=seed, shape=shape, spacing_um=spacing_um
            )
            extra: list = []

            def bulk(stream=stream, extra=extra, size=size, per=per, reused=reused):
                k = 0
                for scan, _ in stream:
                    if scan.meta["simulation"]["firing_index"] == per:
                        if len(extra) < n_ingest + n_queries:
                            extra.append(prepared(scan))
                        elif reused:
                            return
                    elif k < size and not reused:
                        yield prepared(scan), {"agency": "A", "case_id": f"c{k}"}
                        k += 1

            load_rate = ingest_rate = None
            t = time.perf_counter()
            bar = _Bar(f"load {size}", progress and not reused)
            rep = db.ingest_many(bulk(), correlate=False, progress=bar)
            bar.close()
            if not reused:
                load_rate = round(len(rep.ingested) / (time.perf_counter() - t), 1)
            t = time.perf_counter()
            new = [(s, {"agency": "B", "case_id": f"n{k}"}) for k, s in enumerate(extra[:n_ingest])]
            rep = db.ingest_many(new)
            if rep.ingested:
                ingest_rate = round(len(rep.ingested) / (time.perf_counter() - t), 2)
            lat, rescore_only = [], []
            for q in extra[n_ingest:]:
                t = time.perf_counter()
                res = db.search(q, k=10, scope={"max_rescore": rescore})
                lat.append(time.perf_counter() - t)
                ids, _, _ = db._candidates(q, res.scope)
                cands = [db.scan(i) for i in ids]
                t = time.perf_counter()
                db._compare_many(q, cands)
                rescore_only.append(time.perf_counter() - t)
            n = db.count()
            db.close()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            results.append(
                {
                    "exhibits": n,
                    "shape": "x".join(map(str, shape)),
                    "spacing_um": spacing_um,
                    "bulk_load_per_s": load_rate,
                    "ingest_correlated_per_s": ingest_rate,
                    "search_rescored": res.n_rescored if lat else 0,
                    "search_p50_s": round(float(np.median(lat)), 3) if lat else None,
                    "search_max_s": round(float(np.max(lat)), 3) if lat else None,
                    "rescore_only_p50_s": round(float(np.median(rescore_only)), 3) if lat else None,
                    "peak_rss_mb": round(peak, 1),
                    "disk_kb_per_exhibit": round(disk / 1024 / max(1, n), 1),
                }
            )
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
    return results


def _cmd_bench(args) -> int:
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    res = run_bench(sizes, n_ingest=args.ingest, n_queries=args.queries, progress=not args.json)
    _emit(args, res, _table(res))
    return 0


# --------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", help="lead database folder (default: $BALLLINK_DB, else ./balllink.db)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser = argparse.ArgumentParser(prog="balllink", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="add scans; correlate; store leads")
    p.add_argument("paths", nargs="+", help="scan files or folders of scans")
    p.add_argument("--agency", required=True, help="jurisdiction code of the submitting agency")
    p.add_argument("--case", dest="case_id", help="case number (default: the file name)")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--caliber")
    p.add_argument("--occurred", help="incident date YYYY-MM-DD")
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--serial")
    p.add_argument("--fields", help="CSV with a 'file' column and exhibit fields per file")
    p.add_argument("--rescore", type=int, default=50, help="candidates compared in full")
    p.add_argument("--threshold", type=float, help="set the database's lead threshold")
    p.add_argument("--no-correlate", action="store_true", help="store only (bulk archive load)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="skip scans whose preparation was flagged (default: store them, flagged)",
    )
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("search", parents=[common], help="ranked candidates for a file or id")
    p.add_argument("query", help="scan file or exhibit id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--agency", action="append", help="only these agencies (repeatable)")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--caliber")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--bbox", help="min_lat,min_lon,max_lat,max_lon")
    p.add_argument("--max-rescore", type=int, help="candidates compared in full (default 50)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("leads", parents=[common], help="list or export leads")
    p.add_argument("--since", help="created at or after (ISO date/time)")
    p.add_argument("--threshold", type=float)
    p.add_argument("--status", action="append", choices=("new", "confirmed", "rejected"))
    p.add_argument("--cross-only", action="store_true", help="cross-jurisdiction leads only")
    p.add_argument("--format", choices=("table", "csv", "json", "geojson"), default="table")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_leads)

    p = sub.add_parser("series", parents=[common], help="groups of linked exhibits")
    p.add_argument("--threshold", type=float)
    p.set_defaults(func=_cmd_series)

    p = sub.add_parser("status", parents=[common], help="confirm or reject a lead")
    p.add_argument("lead", type=int)
    p.add_argument("status", choices=("new", "confirmed", "rejected"))
    p.add_argument("--examiner", required=True)
    p.add_argument("--note")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("report", parents=[common], help="HTML report of one lead")
    p.add_argument("lead", type=int)
    p.add_argument("-o", "--output", help="output .html (default lead-ID.html)")
    p.add_argument("-k", type=int, default=10, help="length of the candidate list")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("score", parents=[common], help="score a CSV of file pairs (resumable)")
    p.add_argument("pairs", help="CSV: file_a,file_b per row (header optional)")
    p.add_argument("-o", "--output", required=True, help="scores CSV (appended; resumable)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("evaluate", parents=[common], help="accuracy on a labelled folder")
    p.add_argument("folder")
    p.add_argument("--truth", required=True, help="CSV: file,firearm")
    p.add_argument("--threshold", type=float, help="lead threshold (default: shipped)")
    p.add_argument("-o", "--output", default="evaluation", help="folder for PNG/CSV/JSON")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", parents=[common], help="the main job end to end")
    p.add_argument("--data", help="a folder of real scans (default: a simulated region)")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--size", type=int, default=0, help="simulated scan side, px (0: 545)")
    p.add_argument(
        "--rescore", type=int, help="candidates compared per casing (default 6, 50 with --data)"
    )
    p.add_argument("--threshold", type=float, help="lead threshold (default: shipped)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("check", parents=[common], help="SQLite, index, scans, audit agree?")
    p.add_argument("--deep", action="store_true", help="re-hash every stored scan")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("bench", parents=[common], help="ingest rate and search latency")
    p.add_argument("--sizes", default="1000", help="comma-separated database sizes")
    p.add_argument("--ingest", type=int, default=50, help="exhibits ingested with correlation")
    p.add_argument("--queries", type=int, default=5)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``balllink`` command; returns the exit code."""
    from .errors import BalllinkError

    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (BalllinkError, ValueError, OSError) as exc:
        print(f"balllink {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"balllink {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
