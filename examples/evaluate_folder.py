"""Evaluate the comparison on a labelled folder: ROC AUC, error rates, top-1/top-10, histogram.

Usage::

    python examples/evaluate_folder.py [FOLDER --truth truth.csv] [--out histogram.png]

``truth.csv`` has columns ``file,firearm``. Every pair of labelled scans is compared.
(The command ``balllink evaluate FOLDER --truth CSV`` does the same with more output.)
Without a folder, simulated casings with their known firearms are used.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import balllink as bl
from balllink.report import evaluation_summary, score_histogram


def shape(size: int):
    """Simulated grid: (size, size), or the Fadul-like 545 x 545 default when 0."""
    return (size, size) if size else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", help="labelled scans (default: simulated)")
    parser.add_argument("--truth", help="CSV with columns file,firearm")
    parser.add_argument("--out", default="histogram.png")
    parser.add_argument("--size", type=int, default=0, help="simulated side, px (0: 545)")
    args = parser.parse_args(argv)

    if args.folder:
        with open(args.truth, newline="") as fh:
            truth = {r["file"]: r["firearm"] for r in csv.DictReader(fh)}
        names = sorted(truth)
        preps = [bl.preprocess(bl.read_scan(Path(args.folder) / n)) for n in names]
        labels = [truth[n] for n in names]
    else:
        sims = bl.simulate.casings(3, 2, seed=11, shape=shape(args.size), difficulty="fadul-like")
        preps, labels = sims.scans, sims.truth["firearm_id"].tolist()
        names = [s.name for s in preps]

    n = len(preps)
    scores = np.zeros((n, n))
    for i in range(n - 1):
        for j, cmp in enumerate(bl.compare_many(preps[i], preps[i + 1 :]), start=i + 1):
            scores[i, j] = scores[j, i] = cmp.score
    threshold = bl.CMCConfig().lead_threshold
    summary = evaluation_summary(names, labels, scores, threshold)
    for key in ("n_km", "n_knm", "roc_auc", "fpr", "fnr", "top1", "top10"):
        print(f"{key:8s} {summary.get(key)}")
    iu = np.triu_indices(n, 1)
    same = np.asarray(labels)[iu[0]] == np.asarray(labels)[iu[1]]
    score_histogram(scores[iu], same, threshold, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
