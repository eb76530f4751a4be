"""Accuracy of balllink's comparison on all 780 Fadul pairs (63 KM / 717 KNM).

Prints the KM / KNM distributions of the CMC count, the raw score and the calibrated score,
ROC AUC, false positives / negatives at the shipped lead threshold and the variance ratios
(``bl.metrics``) of the CMC count and of the raw score (the variance ratio of the logistic
``score`` only measures how hard the calibration saturates and is not a separation figure),
writes a histogram PNG (``docs/fadul_scores.png`` after a full run) and
``benchmarks/results/eval_fadul.json``. With ``--sim`` it evaluates simulated sets
(``bl.simulate.casings``) the same way instead of Fadul. With ``--cmcr`` it also runs ``CMCConfig.cmcr()`` on
the 30 reference pairs of ``../shared/reference/cmcr_fadul_pairs.csv`` and reports the
agreement with cmcR 0.1.11.

    .venv/bin/python benchmarks/eval_fadul.py [--data DIR] [--cmcr] [--limit N]
    .venv/bin/python benchmarks/eval_fadul.py --mirror alternate [--handedness same]
    .venv/bin/python benchmarks/eval_fadul.py --sim fadul-like:11 --sim medium:12 [--config old]
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import balllink as bl
from balllink.preprocessing import prepare_if_needed

C = importlib.import_module("balllink.comparison")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"
DOCS_PNG = ROOT / "docs" / "fadul_scores.png"
# the default before the cell high-pass (commit 52daddb), for before/after figures
OLD_DEFAULT = bl.CMCConfig(cell_highpass_um=0.0, correlation_threshold=0.45, max_missing=0.85)


def load(data: Path):
    with open(data / "truth.csv", newline="") as fh:
        truth = {r["file"]: r["firearm"] for r in csv.DictReader(fh)}
    names = sorted(truth)
    scans = {n: bl.read_scan(data / n) for n in names}
    return names, truth, scans


def mirror_alternate(names, scans):
    """Every second scan (in name order) exported as its mirror image: rows reversed,
    handedness unknown, as another exporter would write it."""
    out = dict(scans)
    for n in names[1::2]:
        s = scans[n]
        out[n] = s.replace(
            heights=np.flipud(s.heights),
            mask=np.flipud(s.mask),
            meta={**s.meta, "handedness": None},
        )
    return out


def eval_default(names, truth, scans, cfg, limit=None):
    t0 = time.perf_counter()
    prepared = {n: prepare_if_needed(scans[n]) for n in names}
    for n in names:  # the per-scan work of the comparison, cached on the scan objects
        C.prepared(prepared[n], cfg)
        if cfg.handedness != "same":
            C.prepared(C.mirror_scan(prepared[n]), cfg)
    t_prep = time.perf_counter() - t0
    pairs = list(itertools.combinations(names, 2))
    if limit:
        rng = np.random.default_rng(0)
        km = [p for p in pairs if truth[p[0]] == truth[p[1]]]
        knm = [p for p in pairs if truth[p[0]] != truth[p[1]]]
        pairs = km + [knm[i] for i in rng.choice(len(knm), limit, replace=False)]
    rows = []
    t1 = time.perf_counter()
    for a, b in pairs:
        c = bl.compare(prepared[a], prepared[b], config=cfg)
        d1, d2 = c.directions
        rows.append(
            {
                "a": a,
                "b": b,
                "same": truth[a] == truth[b],
                "score": c.score,
                "raw_score": c.raw_score,
                "cmc_count": c.cmc_count,
                "n_cells": d1.n_cells + d2.n_cells,
                "mean_corr_congruent": float(np.nanmean(c.cells["corr"][c.cells["congruent"]]))
                if c.cells["congruent"].any()
                else 0.0,
                "corr_all": [float(x) for x in c.cells["corr"]],
                "congruent": [bool(x) for x in c.cells["congruent"]],
                "rotation_deg": c.rotation_deg,
                "translation_um": list(c.translation_um),
                "mirrored": c.mirrored,
            }
        )
    t_cmp = time.perf_counter() - t1
    return rows, t_prep, t_cmp


def summarize(rows, threshold):
    s = np.array([r["score"] for r in rows])
    same = np.array([r["same"] for r in rows])
    km, knm = s[same], s[~same]
    er = bl.metrics.error_rates(s, same, threshold)
    return {
        "n_km": int(same.sum()),
        "n_knm": int((~same).sum()),
        "auc": bl.metrics.roc_auc(s, same),
        "variance_ratio": bl.metrics.variance_ratio(s, same),
        "threshold": threshold,
        "false_positives": er.false_positives,
        "false_negatives": er.false_negatives,
        "km": {"min": float(km.min()), "median": float(np.median(km)), "max": float(km.max())},
        "knm": {"min": float(knm.min()), "median": float(np.median(knm)), "max": float(knm.max())},
        "gap": float(km.min() - knm.max()),
    }


def separation(rows, threshold):
    """AUC, variance ratio and KM/KNM ranges of the CMC count and the raw score, and the
    errors of the shipped lead call."""
    same = np.array([r["same"] for r in rows])
    out = {}
    for key in ("cmc_count", "raw_score"):
        s = np.array([r[key] for r in rows], float)
        out[key] = {
            "auc": bl.metrics.roc_auc(s, same),
            "variance_ratio": bl.metrics.variance_ratio(s, same),
            "km": [float(s[same].min()), float(np.median(s[same])), float(s[same].max())],
            "knm": [float(s[~same].min()), float(np.median(s[~same])), float(s[~same].max())],
        }
    er = bl.metrics.error_rates(np.array([r["score"] for r in rows]), same, threshold)
    out["false_positives"], out["false_negatives"] = er.false_positives, er.false_negatives
    return out


def print_separation(sep, label):
    for key in ("cmc_count", "raw_score"):
        d = sep[key]
        print(
            f"{label} {key:<9}: AUC {d['auc']:.4f}  variance ratio {d['variance_ratio']:6.1f}  "
            f"KM min/median/max {d['km'][0]:.3g}/{d['km'][1]:.3g}/{d['km'][2]:.3g}  KNM "
            f"{d['knm'][0]:.3g}/{d['knm'][1]:.3g}/{d['knm'][2]:.3g}"
        )
    print(f"{label} lead call: FP {sep['false_positives']} FN {sep['false_negatives']}")


def eval_sim(spec: str, cfg, n_firearms=6, per_firearm=4, mirror="none"):
    """All pairs of a simulated set ``difficulty:seed`` with ``cfg``. Simulated scans know
    their handedness ("viewed"); with ``mirror="alternate"`` every second one is exported
    mirrored with unknown handedness, so the comparison must search both."""
    diff, seed = spec.split(":")
    sim = bl.simulate.casings(n_firearms, per_firearm, seed=int(seed), difficulty=diff)
    gun = [int(g) for g in sim.truth["firearm_id"]]
    names = [f"{spec}#{i:03d}" for i in range(len(sim.scans))]
    truth = dict(zip(names, gun))
    scans = dict(zip(names, sim.scans))
    if mirror == "alternate":
        scans = mirror_alternate(names, scans)
    return eval_default(names, truth, scans, cfg)


def out_of_fold(rows, truth):
    """Leave-one-firearm-out check of the score calibration.

    The shipped calibration centre was chosen looking at Fadul (and simulated) raw scores,
    so the calibrated figures above are partly in-sample. Here, for each firearm, the centre
    is re-derived (midpoint of the KM/KNM gap) from the pairs not involving that firearm and
    applied to the pairs involving it: a held-out check of a data-driven calibration.
    """
    raw = np.array([r["raw_score"] for r in rows])
    same = np.array([r["same"] for r in rows])
    guns = [(truth[r["a"]], truth[r["b"]]) for r in rows]
    held = np.full(raw.size, np.nan)
    for f in sorted(set(truth.values())):
        test = np.array([f in g for g in guns])
        tr = ~test
        center = 0.5 * (raw[tr & same].min() + raw[tr & ~same].max())
        z = (raw[test] - center) / C.CAL_WIDTH
        # a pair involving f is tested once per firearm it involves; keep the last
        held[test] = 1.0 / (1.0 + np.exp(-z))
    er = bl.metrics.error_rates(held, same, 0.5)
    return {
        "auc": bl.metrics.roc_auc(held, same),
        "variance_ratio": bl.metrics.variance_ratio(held, same),
        "false_positives": er.false_positives,
        "false_negatives": er.false_negatives,
        "raw_variance_ratio": bl.metrics.variance_ratio(raw, same),
        "raw_auc": bl.metrics.roc_auc(raw, same),
        "raw_km_min": float(raw[same].min()),
        "raw_knm_max": float(raw[~same].max()),
    }


def histogram(rows, threshold, path: Path, title: str) -> None:
    """Two panels: the CMC count and the raw score (with the lead threshold), KM and KNM,
    log counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    same = np.array([r["same"] for r in rows])
    raw_thr = C.CAL_CENTER + C.CAL_WIDTH * math.log(threshold / (1 - threshold))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4), dpi=100)
    top = max(r["cmc_count"] for r in rows)
    for ax, key, thr, label, bins in (
        (axes[0], "cmc_count", None, "CMC count (both directions)", np.arange(-0.5, top + 1.5)),
        (axes[1], "raw_score", raw_thr, "raw score: congruent share x mean correlation",
         np.linspace(0.0, 1.0, 51)),
    ):  # fmt: skip
        s = np.array([r[key] for r in rows])
        ax.hist(s[~same], bins=bins, color="tab:blue", alpha=0.7, label=f"KNM ({(~same).sum()})")
        ax.hist(s[same], bins=bins, color="tab:red", alpha=0.7, label=f"KM ({same.sum()})")
        if thr is not None:
            ax.axvline(thr, color="k", ls="--", lw=1, label=f"lead threshold ({thr:.3f})")
        ax.set_yscale("log")
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("pairs")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _title(summ) -> str:
    sep = summ["separation"]
    return (
        f"balllink default method, all Fadul pairs ({summ['n_km']} KM / {summ['n_knm']} KNM): "
        f"AUC {summ['auc']:.3f}, FP {summ['false_positives']} FN {summ['false_negatives']}\n"
        f"variance ratio: CMC count {sep['cmc_count']['variance_ratio']:.1f}, raw score "
        f"{sep['raw_score']['variance_ratio']:.1f}"
    )


def eval_cmcr(data: Path, scans):
    ref = SHARED / "reference" / "cmcr_fadul_pairs.csv"
    cfg = bl.CMCConfig.cmcr()
    out = []
    for r in csv.DictReader(open(ref, newline="")):
        t0 = time.perf_counter()
        c = bl.compare(scans[r["reference"]], scans[r["target"]], config=cfg)
        dt = time.perf_counter() - t0
        d1, d2 = c.directions
        out.append(
            {
                "reference": r["reference"],
                "target": r["target"],
                "same": r["same_firearm"] == "true",
                "ours": c.cmc_count,
                "cmcr": int(r["cmc_final"]),
                "ours_dirs": [d1.cmc_original, d2.cmc_original, d1.cmc_high, d2.cmc_high],
                "cmcr_dirs": [
                    int(r[k])
                    for k in (
                        "cmc_original_ref_target",
                        "cmc_original_target_ref",
                        "cmc_high_ref_target",
                        "cmc_high_target_ref",
                    )
                ],
                "seconds": dt,
                "cmcr_seconds": float(r["seconds_ref_target"]) + float(r["seconds_target_ref"]),
            }
        )
        print(
            f"  {r['reference']:>15} {r['target']:>15} ours {c.cmc_count:2d} cmcR "
            f"{r['cmc_final']:>2}  dirs {out[-1]['ours_dirs']} vs {out[-1]['cmcr_dirs']}  "
            f"{dt:.2f} s",
            flush=True,
        )
    d = np.array([abs(o["ours"] - o["cmcr"]) for o in out])
    calls = np.array([(o["ours"] >= 6) == (o["cmcr"] >= 6) for o in out])
    return {
        "pairs": out,
        "within_2": float(np.mean(d <= 2)),
        "calls_agree": int(calls.sum()),
        "n": len(out),
        "mean_seconds": float(np.mean([o["seconds"] for o in out])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "fadul")
    ap.add_argument("--cmcr", action="store_true", help="also check cmcr() on the 30 pairs")
    ap.add_argument("--limit", type=int, default=None, help="KM + this many random KNM")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON")
    ap.add_argument(
        "--sim",
        action="append",
        default=[],
        metavar="DIFFICULTY:SEED",
        help="evaluate this simulated set (6 firearms x 4) instead of Fadul",
    )
    ap.add_argument(
        "--mirror",
        choices=("none", "alternate"),
        default="none",
        help="'alternate': every second Fadul scan flipped up-down (a mirrored export)",
    )
    ap.add_argument(
        "--handedness",
        choices=("auto", "same"),
        default="auto",
        help="'same': no handedness search (the comparison before mirrored exports)",
    )
    ap.add_argument(
        "--config",
        choices=("default", "old"),
        default="default",
        help="'old': the default before the cell high-pass (for before/after)",
    )
    args = ap.parse_args()  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    cfg = bl.CMCConfig() if args.config == "default" else OLD_DEFAULT
    cfg = replace(cfg, handedness=args.handedness)
    tag = (
        ""
        if (args.mirror, args.handedness) == ("none", "auto")
        else (f"_{args.mirror}_{args.handedness}")
    )
    if args.replot:
        res = json.loads((RESULTS / "eval_fadul.json").read_text())
        summ = res["default"]
        histogram(res["pairs"], summ["threshold"], DOCS_PNG, _title(summ))
        return
    if args.sim:
        out = {}
        for spec in args.sim:
            rows, _, t_cmp = eval_sim(spec, cfg, mirror=args.mirror)
            sep = separation(rows, cfg.lead_threshold)
            sep["ms_per_pair"] = 1000 * t_cmp / len(rows)
            n_km = sum(r["same"] for r in rows)
            n_mir = sum(r["mirrored"] for r in rows)
            print(
                f"simulated {spec} ({n_km} KM / {len(rows) - n_km} KNM), config {args.config}, "
                f"mirror {args.mirror}, handedness {args.handedness}: {n_mir} compared mirrored"
            )
            print_separation(sep, f"  {spec}")
            out[spec] = sep
        name = f"eval_sim_{args.config}{tag}.json"
        (RESULTS / name).write_text(json.dumps(out, indent=1, default=float))
        return
    names, truth, scans = load(args.data)
    if args.mirror == "alternate":
        scans = mirror_alternate(names, scans)
    rows, t_prep, t_cmp = eval_default(names, truth, scans, cfg, args.limit)
    summ = summarize(rows, cfg.lead_threshold)
    summ["separation"] = separation(rows, cfg.lead_threshold)
    summ["seconds_prepare_40"] = t_prep
    summ["seconds_compare_all"] = t_cmp
    summ["ms_per_pair"] = 1000 * t_cmp / len(rows)
    n_mirrored = sum(r["mirrored"] for r in rows)
    summ["mirror"], summ["handedness"] = args.mirror, args.handedness
    summ["pairs_compared_mirrored"] = n_mirrored
    print(
        f"default method on {len(rows)} Fadul pairs ({summ['n_km']} KM / {summ['n_knm']} KNM), "
        f"scans mirrored: {args.mirror}, handedness search: {args.handedness}; "
        f"{n_mirrored} pairs compared mirrored"
    )
    print(f"{'':14}{'min':>9}{'median':>9}{'max':>9}")
    for g in ("km", "knm"):
        print(f"{g.upper():14}" + "".join(f"{summ[g][k]:9.3f}" for k in ("min", "median", "max")))
    print(
        f"calibrated score: ROC AUC {summ['auc']:.4f}   threshold {summ['threshold']:g}: FP "
        f"{summ['false_positives']} FN {summ['false_negatives']}   gap {summ['gap']:.3f}   "
        f"(its variance ratio {summ['variance_ratio']:.0f} reflects the logistic's saturation, "
        "not separation)"
    )
    print_separation(summ["separation"], "Fadul")
    print(
        f"time: prepare 40 scans {t_prep:.1f} s, compare {len(rows)} pairs {t_cmp:.1f} s "
        f"({summ['ms_per_pair']:.0f} ms/pair, both directions)"
    )
    oof = out_of_fold(rows, truth) if not args.limit else None
    if oof:
        summ["out_of_fold"] = oof
        print(
            f"raw score (congruent share x mean corr): AUC {oof['raw_auc']:.4f}, variance "
            f"ratio {oof['raw_variance_ratio']:.1f}, KM min {oof['raw_km_min']:.3f}, KNM max "
            f"{oof['raw_knm_max']:.3f}"
        )
        print(
            f"leave-one-firearm-out calibration: AUC {oof['auc']:.4f}, FP "
            f"{oof['false_positives']} FN {oof['false_negatives']} at 0.5"
        )
    png = (
        DOCS_PNG
        if not args.limit and args.config == "default" and not tag
        else RESULTS / f"fadul_scores{tag}.png"
    )
    histogram(rows, cfg.lead_threshold, png, _title(summ))
    print(f"histogram: {png}")
    result = {"default": summ, "pairs": rows}
    if args.cmcr:
        print("cmcr() on the cmcR reference pairs:")
        result["cmcr"] = eval_cmcr(args.data, scans)
        r = result["cmcr"]
        print(
            f"cmcr(): {r['within_2']:.0%} of {r['n']} pairs within 2 of cmcR, calls at C>=6 "
            f"agree on {r['calls_agree']}/{r['n']}, {r['mean_seconds']:.2f} s/pair"
        )
    (RESULTS / f"eval_fadul{tag}.json").write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
