"""Labelled comparisons for the LR models (issue 13): every pair of a set compared with the
default configuration, written as a pairs CSV (`balllink.evidence.Pairs`).

    .venv/bin/python benchmarks/evidence_pairs.py --fadul            # 780 Fadul pairs
    .venv/bin/python benchmarks/evidence_pairs.py --sim medium:12:12x4 --sim fadul-like:11:12x4
    .venv/bin/python benchmarks/evidence_pairs.py --sim medium:40:448x1 --limit 100000

``--sim DIFFICULTY:SEED:FxK`` simulates F firearms fired K times (full-size prepared
scans, 545 x 545 px at 6.25 µm, unless ``--shape``). Writes
``benchmarks/results/pairs_<name>.csv`` (the comparisons themselves are not kept) and prints
pairs per second. Sets with one casing per firearm hold only different-source pairs: the
held-out non-matches of the threshold figure.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

import balllink as bl
from balllink.comparison import prepared
from balllink.evidence import Pairs, source_spacing_um
from balllink.preprocessing import prepare_if_needed

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"


def all_pairs(names, firearms, scans, cfg, label, limit=None, seed=0, checkpoint=None):
    """Compare every pair (or ``limit`` random ones) with compare_many, one query at a time.

    With ``checkpoint`` (a pairs CSV path), each finished query's pairs are appended to it
    and a rerun skips the queries already there, so a long run can be stopped and resumed.
    """
    t0 = time.perf_counter()
    todo = list(itertools.combinations(range(len(names)), 2))
    if limit and limit < len(todo):
        rng = np.random.default_rng(seed)
        todo = [todo[i] for i in sorted(rng.choice(len(todo), limit, replace=False))]
    by_query: dict[int, list[int]] = {}
    for i, j in todo:
        by_query.setdefault(i, []).append(j)
    done_queries: set[str] = set()
    if checkpoint is not None and Path(checkpoint).exists():
        with open(checkpoint, newline="") as fh:
            done_queries = {r["a"] for r in csv.DictReader(fh)}
    need = {i for i in by_query if names[i] not in done_queries}
    need |= {j for i in need for j in by_query[i]}
    ready = {i: prepare_if_needed(scans[i]) for i in sorted(need)}
    for s in ready.values():  # the mirror images are prepared when a pair needs them
        prepared(s, cfg)
    t_prep = time.perf_counter() - t0
    comps = []
    t1 = time.perf_counter()
    done = n_new = 0
    for i, js in by_query.items():
        done += len(js)
        if names[i] in done_queries:
            continue
        cmp = bl.compare_many(ready[i], [ready[j] for j in js], config=cfg, model=False)
        part = Pairs.from_comparisons(
            cmp, [(firearms[i], firearms[j]) for j in js],
            spacing_um=[max(source_spacing_um(scans[i]), source_spacing_um(scans[j])) for j in js],
            names=[(names[i], names[j]) for j in js], set=label,
        )  # fmt: skip
        if checkpoint is not None:
            _append(part, checkpoint)
        comps.append(part)
        n_new += len(js)
        el = time.perf_counter() - t1
        print(f"\r{label}: {done}/{len(todo)} pairs, {n_new / el:.1f}/s", end="", file=sys.stderr)
    t_cmp = time.perf_counter() - t1
    print(file=sys.stderr)
    if checkpoint is not None:
        return Pairs.from_csv(checkpoint), t_prep, t_cmp, n_new
    pairs = comps[0]
    for p in comps[1:]:
        pairs = pairs + p
    return pairs, t_prep, t_cmp, n_new


def _append(part: Pairs, path) -> None:
    """Append pairs to a pairs CSV (header first when new)."""
    tmp = Path(str(path) + ".part")
    part.to_csv(tmp)
    lines = tmp.read_text().splitlines(keepends=True)
    tmp.unlink()
    new = not Path(path).exists()
    with open(path, "a") as fh:
        fh.writelines(lines if new else lines[1:])
        fh.flush()
        os.fsync(fh.fileno())


def fadul(data: Path):
    with open(data / "truth.csv", newline="") as fh:
        truth = {r["file"]: r["firearm"] for r in csv.DictReader(fh)}
    names = sorted(truth)
    return names, [truth[n] for n in names], [bl.read_scan(data / n) for n in names]


def simulated(spec: str, shape, raw=False):
    difficulty, seed, size = spec.split(":")
    f, k = (int(x) for x in size.lower().split("x"))
    sim = bl.simulate.casings(f, k, seed=int(seed), difficulty=difficulty, shape=shape,
                              keep_truth_arrays=False, raw=raw)  # fmt: skip
    names = [s.name for s in sim.scans]
    firearms = [f"sim{seed}-{int(t['firearm_id'])}" for t in sim.truth]
    return names, firearms, list(sim.scans)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fadul", nargs="?", const=str(SHARED / "data" / "fadul"), default=None)
    ap.add_argument("--sim", action="append", default=[], metavar="DIFFICULTY:SEED:FxK")
    ap.add_argument("--shape", default=None, help="simulated grid, e.g. 272x272")
    ap.add_argument("--raw", action="store_true", help="raw simulated exports (3.125 µm)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pairs per set")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split("x")) if args.shape else None
    cfg = bl.CMCConfig()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if args.fadul:
        jobs.append(("fadul", lambda: fadul(Path(args.fadul))))
    for spec in args.sim:
        label = (
            "sim:" + spec + (f":{args.shape}" if args.shape else "") + (":raw" if args.raw else "")
        )
        jobs.append((label, lambda spec=spec: simulated(spec, shape, args.raw)))
    for label, load in jobs:
        names, firearms, scans = load()
        path = out / ("pairs_" + label.replace(":", "_") + ".csv")
        partial = Path(str(path) + ".partial")
        pairs, t_prep, t_cmp, n_new = all_pairs(
            names, firearms, scans, cfg, label, args.limit, checkpoint=partial
        )
        pairs.to_csv(path)
        partial.unlink()
        print(f"{label}: {len(pairs)} pairs ({pairs.n_same} same-source), preparation "
              f"{t_prep:.0f} s, comparisons {t_cmp:.0f} s ({n_new / max(t_cmp, 1e-9):.1f} pairs/s) "
              f"-> {path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
