"""Score a CSV of scan pairs in batch (one output row per pair).

Usage::

    python examples/score_pairs.py [PAIRS.csv] [--out scores.csv]

``PAIRS.csv`` has two columns, ``file_a,file_b``. Each first file is read and prepared
once and compared with all its partners through `balllink.compare_many`. (The command
``balllink score PAIRS.csv -o scores.csv`` does the same, in parallel and resumable.)
Without a CSV, a few simulated casings are written to a temporary folder with a CSV of
all their pairs.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import balllink as bl


def shape(size: int):
    """Simulated grid: (size, size), or the Fadul-like 545 x 545 default when 0."""
    return (size, size) if size else None


def simulated_pairs(folder: Path, size: int) -> Path:
    sims = bl.simulate.casings(2, 2, seed=9, shape=shape(size), difficulty="fadul-like")
    names = []
    for scan, row in zip(sims.scans, sims.truth):
        names.append(f"gun{row['firearm_id']}-casing{row['casing_id']}.x3p")
        bl.write_scan(scan, folder / names[-1])
    pairs = folder / "pairs.csv"
    with open(pairs, "w", newline="") as fh:
        csv.writer(fh).writerows([("file_a", "file_b"), *itertools.combinations(names, 2)])
    return pairs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pairs", nargs="?", help="CSV of file pairs (default: simulated)")
    parser.add_argument("--out", default="scores.csv")
    parser.add_argument("--size", type=int, default=0, help="simulated side, px (0: 545)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="balllink-example-"))
    try:
        pairs_csv = Path(args.pairs) if args.pairs else simulated_pairs(tmp, args.size)
        with open(pairs_csv, newline="") as fh:
            rows = [r for r in csv.DictReader(fh)]
        partners = defaultdict(list)
        for r in rows:
            partners[r["file_a"]].append(r["file_b"])

        def prepared(name):
            return bl.preprocess(bl.read_scan(pairs_csv.parent / name))

        with open(args.out, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["file_a", "file_b", "score", "cmc_count", "rotation_deg", "lead"])
            for a, bs in partners.items():
                results = bl.compare_many(prepared(a), [prepared(b) for b in bs])
                for b, cmp in zip(bs, results):
                    out.writerow([a, b, f"{cmp.score:.4f}", cmp.cmc_count,
                                  f"{cmp.rotation_deg:.1f}", int(cmp.lead)])  # fmt: skip
        print(f"scored {len(rows)} pairs -> {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
