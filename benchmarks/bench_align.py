"""Benchmark of the coarse global alignment (balllink.align) on the Fadul scans.

For every same-gun (KM) pair of truth.csv it finds a reference pose once by brute force (a
full-circle search at 25 µm with 2° steps and Padfield's exact masked NCC, refined like the
fast search), checks it against cmcR's modal theta where the reference run has the pair,
then measures for several settings of ``coarse_align``:

* top-1 / top-3 hit rates: the share of KM pairs whose reference pose is within ±6° and
  ±40 µm of the best candidate / of one of the best three;
* the same with the second scan turned by a random extra angle (0..360°, seeded), so the
  search cannot profit from Fadul's scans being roughly pre-oriented;
* ms per pair with prepared templates (wall clock and process CPU time; the machine is
  shared, so compare settings as ratios within one run), ms per scan to prepare.

The default setting is also run on all 780 pairs: ROC AUC of the best coarse score.

Usage: ``python benchmarks/bench_align.py [--data DIR] [--recompute-truth] [--quick]``.
Prints a table and writes ``benchmarks/results/bench_align.json``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import balllink as bl
from balllink.align import coarse_align, prepare_alignment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOL_DEG, TOL_UM = 6.0, 40.0
TRUTH_OPTS = {
    "search_um": 25.0,
    "refine_um": 25.0,
    "angle_step_deg": 2.0,
    "exact_search": True,
    "highpass_um": 0.0,
}
SETTINGS = {
    "default": {},
    "step 3°": {"angle_step_deg": 3.0},
    "step 5°": {"angle_step_deg": 5.0},
    "exact search": {"exact_search": True},
    "no high-pass": {"highpass_um": 0.0},
    "refine 25 µm": {"refine_um": 25.0},
    "no angle refine": {"refine_angle_deg": 0.0},
}


def angle_err(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def turned(scan: bl.Scan, phi: float) -> bl.Scan:
    """``scan`` rotated by ``phi`` about its centre (NaN-aware), grown to hold all of it."""
    z = scan.masked_heights()
    ok = np.isfinite(z)
    v = ndi.rotate(np.where(ok, z, 0.0), phi, reshape=True, order=1)
    w = ndi.rotate(ok.astype(float), phi, reshape=True, order=1)
    out = np.where(w > 0.99, v / np.maximum(w, 1e-9), np.nan)
    return bl.Scan(out, spacing_um=scan.spacing_um, source=f"{scan.name}@{phi:.1f}")


def hit_rank(poses, truth) -> int | None:
    for r, p in enumerate(poses):
        if (
            angle_err(p.rotation_deg, truth[0]) <= TOL_DEG
            and math.hypot(p.dy_um - truth[1], p.dx_um - truth[2]) <= TOL_UM
        ):
            return r
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fadul")
    ap.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference")
    ap.add_argument("--recompute-truth", action="store_true")
    ap.add_argument("--quick", action="store_true", help="default setting only, no KNM")
    args = ap.parse_args()

    with open(args.data / "truth.csv", newline="") as fh:
        gun = {r["file"]: r["firearm"] for r in csv.DictReader(fh)}
    files = sorted(gun)
    scans = {f: bl.read_scan(args.data / f) for f in files}
    pairs = list(itertools.combinations(files, 2))
    km = [(a, b) for a, b in pairs if gun[a] == gun[b]]
    rng = np.random.default_rng(2026)
    phis = {p: float(rng.uniform(0.0, 360.0)) for p in km}
    turned_b = {p: turned(scans[p[1]], phis[p]) for p in km}

    # ---- reference poses by brute force (cached) -------------------------------------
    RESULTS.mkdir(parents=True, exist_ok=True)
    truth_file = RESULTS / "align_truth.json"
    truth = {}
    if truth_file.exists() and not args.recompute_truth:
        saved = json.loads(truth_file.read_text())
        if saved.get("options") == TRUTH_OPTS:
            truth = {tuple(k.split("|")): tuple(v) for k, v in saved["poses"].items()}
    if len(truth) != len(km):
        t0 = time.perf_counter()
        for a, b in km:
            p = coarse_align(scans[a], scans[b], n=1, **TRUTH_OPTS)[0]
            truth[(a, b)] = (p.rotation_deg, p.dy_um, p.dx_um)
        print(f"brute-force reference poses: {time.perf_counter() - t0:.0f} s")
        truth_file.write_text(
            json.dumps(
                {"options": TRUTH_OPTS, "poses": {f"{a}|{b}": v for (a, b), v in truth.items()}},
                indent=1,
            )
        )
    # agreement of the reference poses with cmcR's modal theta (rotation ~ -theta_cmcR)
    cmcr = []
    ref_csv = args.reference / "cmcr_fadul_pairs.csv"
    if ref_csv.exists():
        with open(ref_csv, newline="") as fh:
            for r in csv.DictReader(fh):
                key = (r["reference"], r["target"])
                if r["same_firearm"] == "true" and key in truth:
                    cmcr.append(angle_err(truth[key][0], -float(r["modal_theta_deg"])))
    cmcr_within = int(sum(e <= 4.5 for e in cmcr))

    # ---- settings --------------------------------------------------------------------
    settings = {"default": {}} if args.quick else SETTINGS
    rows = []
    for name, opts in settings.items():
        t0 = time.perf_counter()
        tpl = {f: prepare_alignment(s, **opts) for f, s in scans.items()}
        prep_ms = (time.perf_counter() - t0) / len(tpl) * 1e3
        t0 = time.perf_counter()
        for f in files:  # build each scan's rotated stack (the query-side, once per scan)
            coarse_align(tpl[f], tpl[f], n=1, **opts)
        stack_ms = (time.perf_counter() - t0) / len(files) * 1e3
        ranks, wall, cpu = [], [], []
        for a, b in km:
            w0, c0 = time.perf_counter(), time.process_time()
            poses = coarse_align(tpl[a], tpl[b], n=3, **opts)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
            ranks.append(hit_rank(poses, truth[(a, b)]))
        turned_ranks = []
        for a, b in km:
            tb = prepare_alignment(turned_b[(a, b)], **opts)
            th, dy, dx = truth[(a, b)]
            poses = coarse_align(tpl[a], tb, n=3, **opts)
            turned_ranks.append(hit_rank(poses, ((th - phis[(a, b)]) % 360.0, dy, dx)))
        for t in tpl.values():
            t.clear_cache()

        def rate(rs, k):
            return sum(r is not None and r < k for r in rs) / len(rs)

        rows.append(
            {
                "setting": name,
                "options": opts,
                "prepare_ms_per_scan": prep_ms,
                "stack_ms_per_scan": stack_ms,
                "ms_per_pair_wall_median": float(np.median(wall)) * 1e3,
                "ms_per_pair_cpu_median": float(np.median(cpu)) * 1e3,
                "top1": rate(ranks, 1),
                "top3": rate(ranks, 3),
                "top1_turned": rate(turned_ranks, 1),
                "top3_turned": rate(turned_ranks, 3),
                "misses": [f"{a}|{b}" for (a, b), r in zip(km, ranks) if r is None],
                "misses_turned": [f"{a}|{b}" for (a, b), r in zip(km, turned_ranks) if r is None],
            }
        )

    knm = None
    if not args.quick:
        tpl = {f: prepare_alignment(s) for f, s in scans.items()}
        scores, same = [], []
        t0 = time.perf_counter()
        for a, b in pairs:
            poses = coarse_align(tpl[a], tpl[b], n=1)
            scores.append(poses[0].score if poses else -1.0)
            same.append(gun[a] == gun[b])
        elapsed = time.perf_counter() - t0
        scores_a, same_a = np.array(scores), np.array(same)
        knm = {
            "pairs": len(pairs),
            "seconds_all_pairs": elapsed,
            "roc_auc_best_score": bl.metrics.roc_auc(scores_a, same_a),
            "km_score_min": float(scores_a[same_a].min()),
            "knm_score_max": float(scores_a[~same_a].max()),
        }

    load = os.getloadavg()
    print(f"\nFadul KM pairs: {len(km)}; hit = within ±{TOL_DEG:g}° and ±{TOL_UM:g} µm of the")
    print("brute-force reference pose; 'turned' = second scan turned by a random angle.")
    print(f"reference poses vs cmcR modal theta (within 4.5°): {cmcr_within}/{len(cmcr)}")
    print(f"load average during the run: {load[0]:.1f} (2 cores; wall times inflate with it)\n")
    head = (
        f"{'setting':<14}{'top1':>7}{'top3':>7}{'top1 t':>8}{'top3 t':>8}"
        f"{'ms/pair':>9}{'cpu ms':>8}{'prep ms':>9}{'stack ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['setting']:<14}{r['top1']:>7.1%}{r['top3']:>7.1%}{r['top1_turned']:>8.1%}"
            f"{r['top3_turned']:>8.1%}{r['ms_per_pair_wall_median']:>9.1f}"
            f"{r['ms_per_pair_cpu_median']:>8.1f}{r['prepare_ms_per_scan']:>9.1f}"
            f"{r['stack_ms_per_scan']:>10.1f}"
        )
    if knm:
        print(
            f"\nall {knm['pairs']} pairs, default: {knm['seconds_all_pairs']:.1f} s, ROC AUC of "
            f"the best coarse score {knm['roc_auc_best_score']:.5f} (KM min "
            f"{knm['km_score_min']:.3f}, KNM max {knm['knm_score_max']:.3f})"
        )
    out = {
        "km_pairs": len(km),
        "tolerance": {"deg": TOL_DEG, "um": TOL_UM},
        "truth_options": TRUTH_OPTS,
        "truth_vs_cmcr_within_4_5_deg": [cmcr_within, len(cmcr)],
        "load_average": load,
        "settings": rows,
        "all_pairs": knm,
    }
    (RESULTS / "bench_align.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {RESULTS / 'bench_align.json'}")


if __name__ == "__main__":
    main()
