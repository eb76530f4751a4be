"""Network scale: a bulk-loaded lead database, its bytes per casing, search latency with
top-50 rescoring, and the extrapolation to NIBIN's yearly intake.

Usage::

    .venv/bin/python benchmarks/bench_network.py [--n 10000] [--jobs 2] [--queries 20]

What is measured, on this machine, in one run:

* **Load**: ``--n`` simulated casings (fadul-like, 4 firings per gun, ``--shape`` px at
  ``--spacing`` µm; default 272 px at 12.5 µm, the full 3.4 mm Fadul field on the
  descriptor's working grid) streamed from the simulator in chunks and bulk-loaded with
  ``LeadDatabase.ingest_many(correlate=False, jobs=--jobs)`` (preparation and embedding in
  ``--jobs`` processes), then the index saved: casings/s and seconds.
* **Bytes per casing**: the stored scans, the SQLite file and the index file, each divided
  by N.
* **Query latency with top-50 rescoring**: ``db.candidates(exhibit, k=10)`` with
  ``max_rescore=50`` for ``--queries`` exhibits (index search, then 50 full comparisons):
  p50 and p99 (target < 2 s) and the index search alone, with the database's default exact
  index (FAISS ``Flat``) and with the same stored casings indexed by
  ``CasingIndex.compressed(N)`` (the network configuration, ``index_class``; its build
  time is reported too).
* **Index recall@10 vs exact** (``--recall-queries``): the share of the exact top 10 the
  compressed index also returns; the same share of the exact top-10 casings with >= 3
  agreeing keypoints (the rest of a top 10 is ordered by noise); and each index's
  same-gun recall@10 (the simulator's truth).

A 1e6-casing database does not fit this machine (about 100 KB of stored scan per casing
at the default size: 100 GB, with 78 GB free; simulating and embedding 1e6 casings at the
measured rate also takes about a day here), so the 1e6 figures of the index alone come
from ``benchmarks/bench_index.py --n 1000000`` (README, "Retrieval") and the database
figures are per casing, measured at N. The extrapolation to NIBIN (about 658 000 pieces of
evidence entered in FY2024) on a 64-core cluster is printed with every assumption it
makes. Writes ``benchmarks/results/bench_network-<n>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import balllink as bl
from balllink.database import LeadDatabase
from balllink.index import CompressedIndex

PER_GUN = 4
NIBIN_YEARLY = 658_000  # pieces of evidence entered in FY2024 (ATF NIBIN fact sheet)
CLUSTER_CORES = 64


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _load(folder: Path, args) -> tuple[dict, dict[str, int]]:
    stream = bl.simulate.iter_casings(
        -(-args.n // PER_GUN), PER_GUN, seed=args.seed, difficulty="fadul-like",
        shape=(args.shape, args.shape), spacing_um=args.spacing,
    )  # fmt: skip
    gun_of: dict[str, int] = {}
    t0 = time.perf_counter()
    with LeadDatabase(folder) as db:
        it = iter(itertools.islice(stream, args.n))
        done = 0
        while chunk := list(itertools.islice(it, args.chunk)):
            items = []
            for i, (scan, truth) in enumerate(chunk):
                gun_of[f"c{done + i}"] = int(truth["firearm_id"])
                items.append((scan, {"agency": f"AG{(done + i) % 8}", "case_id": f"c{done + i}"}))
            db.ingest_many(items, correlate=False, jobs=args.jobs)
            done += len(chunk)
            print(f"  loaded {done}/{args.n} ({done / (time.perf_counter() - t0):.1f}/s)",
                  flush=True)  # fmt: skip
        t1 = time.perf_counter()
        _ = db.index  # exhibits stored without correlation are embedded (remembered) here
        db.close()
    t2 = time.perf_counter()
    load = {"load_s": round(t1 - t0, 1), "index_s": round(t2 - t1, 1),
            "casings_per_s": round(args.n / (t2 - t0), 2)}  # fmt: skip
    return load, gun_of


def _latency(db, picks, rescore: int) -> dict:
    """``db.candidates`` with top-``rescore`` rescoring per query: p50, p99, index share."""
    index = db.index
    total, in_index = [], []
    for eid in picks:
        scan = db.scan(int(eid))
        t0 = time.perf_counter()
        index.search([scan], rescore)
        t1 = time.perf_counter()
        db.candidates(int(eid), k=10, scope={"max_rescore": rescore})
        t2 = time.perf_counter()
        in_index.append(t1 - t0)
        total.append(t2 - t1)
    return {
        "p50_s": round(float(np.percentile(total, 50)), 3),
        "p99_s": round(float(np.percentile(total, 99)), 3),
        "index_p50_s": round(float(np.percentile(in_index, 50)), 4),
        "per_comparison_s": round(
            (float(np.median(total)) - float(np.median(in_index))) / rescore, 4
        ),
    }


def _queries(folder: Path, args, gun_of: dict[str, int]) -> dict:
    rng = np.random.default_rng(args.seed)
    # the network configuration: the same stored casings, the index rebuilt compressed
    small = folder.parent / "compressed.db"
    shutil.copytree(folder, small, ignore=shutil.ignore_patterns("index*"))
    t0 = time.perf_counter()
    with LeadDatabase(small, index_class=CompressedIndex(args.n)) as db:
        _ = db.index  # rebuilt from the stored scans (embedding every one)
    build_s = time.perf_counter() - t0
    out: dict = {"queries": args.queries, "rescore": args.rescore,
                 "compressed_build_s": round(build_s, 1)}  # fmt: skip
    with (
        LeadDatabase(folder, readonly=True) as exact_db,
        LeadDatabase(small, readonly=True, index_class=CompressedIndex(args.n)) as comp_db,
    ):
        ids = [e.id for e in exact_db.exhibits()]
        gun = {e.id: gun_of[e.case_id] for e in exact_db.exhibits()}
        picks = rng.choice(ids, size=min(args.queries, len(ids)), replace=False)
        out["exact_flat"] = _latency(exact_db, picks, args.rescore)
        out["compressed"] = _latency(comp_db, picks, args.rescore)
        exact, approx = exact_db.index, comp_db.index
        overlap, strong, mates = [], [], {"exact": [], "compressed": []}
        for eid in rng.choice(ids, size=min(args.recall_queries, len(ids)), replace=False):
            scan = exact_db.scan(int(eid))
            e_ids, e_votes = (a[0] for a in exact.search([scan], 11))
            a_ids = approx.search([scan], 11)[0][0]
            e_top = [(int(i), v) for i, v in zip(e_ids, e_votes) if i >= 0 and i != eid][:10]
            a_top = set([int(i) for i in a_ids if i >= 0 and i != eid][:10])
            overlap.append(sum(i in a_top for i, _ in e_top) / max(1, len(e_top)))
            sure = [i for i, v in e_top if v >= 3]  # >= 3 keypoints agree on one pose
            if sure:
                strong.append(sum(i in a_top for i in sure) / len(sure))
            same = [i for i in ids if gun[i] == gun[int(eid)] and i != eid]
            mates["exact"].append(sum(i in dict(e_top) for i in same) / max(1, len(same)))
            mates["compressed"].append(sum(i in a_top for i in same) / max(1, len(same)))
        out["recall_queries"] = args.recall_queries
        # of the exact (Flat) top 10, the share the compressed index also returns
        out["recall_at_10_vs_exact"] = round(float(np.mean(overlap)), 4)
        # the same, of the exact top-10 casings with >= 3 agreeing keypoints (the ones a
        # vote tells apart from chance; the rest of a top 10 is ordered by noise)
        out["recall_at_10_vs_exact_3votes"] = round(float(np.mean(strong)), 4) if strong else None
        # same-gun casings in the top 10, each index
        out["same_gun_recall_at_10"] = {k: round(float(np.mean(v)), 4) for k, v in mates.items()}
    return out


def _link_efficiency() -> tuple[float, str]:
    """The 1 -> 2 worker efficiency bench_link.py measured (its JSON), else 1.0."""
    path = Path(__file__).parent / "results" / "bench_link.json"
    try:
        eff = float(json.loads(path.read_text())["scaling_efficiency_1_to_2"])
        return eff, f"{eff:.2f}, the 1 -> 2 worker efficiency bench_link.py measured"
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0, "1.0 (perfect; bench_link.py has not been run here)"


def _extrapolate(load: dict, q: dict) -> dict:
    """NIBIN's yearly intake on a 64-core cluster, from the per-core rates measured here."""
    cores_here = os.cpu_count() or 1
    eff, eff_text = _link_efficiency()
    ingest_per_core = load["casings_per_s"] / cores_here
    compare_core_s = (
        q["compressed"]["per_comparison_s"] * cores_here
    )  # the comparisons used every core
    ingest_h = NIBIN_YEARLY / (ingest_per_core * CLUSTER_CORES * eff) / 3600
    rescore_h = NIBIN_YEARLY * q["rescore"] * compare_core_s / (CLUSTER_CORES * eff) / 3600
    return {
        "yearly_intake": NIBIN_YEARLY,
        "cluster_cores": CLUSTER_CORES,
        "scaling_efficiency": eff,
        "ingest_hours": round(ingest_h, 1),
        "rescore_hours": round(rescore_h, 1),
        "per_day_hours": round((ingest_h + rescore_h) / 365, 2),
        "assumptions": [
            f"the per-core rates measured here ({cores_here} cores) hold on each of "
            f"{CLUSTER_CORES} cluster cores (same CPU generation), times a scaling "
            f"efficiency of {eff_text} (on 2 cores the client shares the cores with the "
            "workers: conservative for a cluster whose client has its own machine)",
            "a comparison's cost per core is the in-process time times the cores here "
            "(in-process the 50 candidates of a query are compared side by side, one per "
            "core)",
            "each entry is compared in full with its top-50 candidates from the index "
            "(NIBIN's correlation against the region's collection, after pre-selection)",
            "scans are at the size measured here; full-resolution Fadul-size scans "
            "(560 px at 6.25 um) cost about 2-4x more per comparison (bench_compare.py)",
            "the index search (ms per query at 1e6 with the compressed index, "
            "bench_index.py) is negligible next to the rescoring",
            "the stored scans are on shared storage all workers read (link's requirement)",
            "SQLite on one client writes the results: measured here well above the "
            "comparison rate, but one writer per database",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--shape", type=int, default=272)
    parser.add_argument("--spacing", type=float, default=12.5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--rescore", type=int, default=50)
    parser.add_argument("--recall-queries", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp) / "network.db"
        load, gun_of = _load(folder, args)
        sizes = {
            "scans_bytes_per_casing": _size(folder / "scans") // args.n,
            "sqlite_bytes_per_casing": _size(folder / "leads.sqlite") // args.n,
            "index_bytes_per_casing": sum(_size(p) for p in folder.glob("index*")) // args.n,
        }
        q = _queries(folder, args, gun_of)
        compressed = Path(tmp) / "compressed.db"
        sizes["compressed_index_bytes_per_casing"] = (
            sum(_size(p) for p in compressed.glob("index*")) // args.n
        )
    ext = _extrapolate(load, q)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n": args.n,
        "scan": f"{args.shape}x{args.shape} px at {args.spacing} um, fadul-like",
        "load": load,
        "bytes": sizes,
        "queries": q,
        "targets": {"compressed.p50_s": 2.0, "recall_at_10_vs_exact": 0.95},
        "extrapolation": ext,
    }
    for k in ("load", "bytes", "queries"):
        print(k, json.dumps(result[k]))
    print("NIBIN yearly intake on 64 cores:", {k: v for k, v in ext.items() if k != "assumptions"})
    for a in ext["assumptions"]:
        print("  assumes:", a)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench_network-{args.n}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
