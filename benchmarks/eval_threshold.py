"""The threshold figure (issue 13): the false-lead rate an LR model predicts for ``LR >= t``
against the rate measured on held-out simulated non-matches, in one table.

    .venv/bin/python benchmarks/evidence_pairs.py --sim medium:40:448x1   # 100 128 pairs
    .venv/bin/python benchmarks/eval_threshold.py [--pairs FILE]

The held-out set holds one casing from each of 448 simulated firearms (``medium``, seed
40: firearms no model saw), so every pair is a different-source pair; a run stopped early
leaves ``...csv.partial``, which this script reads too (the table says how many pairs).
Two models predict:

* the shipped model (its different-source law fitted on Fadul's real non-matches);
* a model of the same recipe fitted on the simulated training set of the same difficulty
  (``medium`` seed 12): its different-source law describes the population it is tested
  on, so the row checks the method itself (a fitted beta-binomial tail predicting rates
  far below what its training data could count).

Predictions are made for the held-out pairs' own cell counts. Measured rates carry a 95 %
Clopper-Pearson interval. Writes ``benchmarks/results/eval_threshold.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from balllink.evidence import LRModel, Pairs, default_model
from balllink.evidence._count import log10_pmf

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HELD = RESULTS / "pairs_sim_medium_40_448x1.csv"
TRAIN_SAME_POP = RESULTS / "pairs_sim_medium_12_12x4.csv"
THRESHOLDS = (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def predicted(model: LRModel, n: np.ndarray, t: float) -> float:
    """Rate of LR >= 10**t under the model's different-source law, for these cell counts."""
    law = model.params["point"]["different"]
    ns, counts = np.unique(n, return_counts=True)
    total = 0.0
    for ni, ci in zip(ns.tolist(), counts.tolist()):
        ks = np.arange(ni + 1)
        llr = model.evaluate(ks, np.full(ni + 1, ni)).log10_lr
        p0 = 10.0 ** log10_pmf(ks, np.full(ni + 1, ni), law)
        total += ci * p0[llr >= t - 1e-12].sum()
    return float(total / counts.sum())


def clopper_pearson(x: int, n: int) -> tuple[float, float]:
    lo = 0.0 if x == 0 else stats.beta.ppf(0.025, x, n - x + 1)
    hi = 1.0 if x == n else stats.beta.ppf(0.975, x + 1, n - x)
    return float(lo), float(hi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=None)
    args = ap.parse_args(argv)
    path = Path(args.pairs) if args.pairs else HELD
    if not path.exists() and Path(str(path) + ".partial").exists():
        path = Path(str(path) + ".partial")
    held = Pairs.from_csv(path)
    if held.n_same:
        raise SystemExit(
            f"{path}: {held.n_same} same-source pairs; a held-out non-match set is expected"
        )
    shipped = default_model()
    same_pop = LRModel.fit(Pairs.from_csv(TRAIN_SAME_POP), n_boot=0)
    models = {"shipped": shipped, "same population (medium seed 12)": same_pop}
    rows = []
    for name, model in models.items():
        llr = model.evaluate(held.k, held.n, held.raw, held.spacing_um).log10_lr
        for t in [*THRESHOLDS, model.lead_log10_lr]:
            x = int(np.sum(llr >= t - 1e-12))
            lo, hi = clopper_pearson(x, len(held))
            rows.append({
                "model": name, "model_id": model.id, "log10_t": round(float(t), 3),
                "is_lead_threshold": math.isclose(t, model.lead_log10_lr),
                "predicted": predicted(model, held.n, t), "measured": x / len(held),
                "measured_count": x, "ci95": [lo, hi],
            })  # fmt: skip
    n_pairs = len(held)
    print(f"held-out different-source pairs: {n_pairs} ({path.name}); "
          f"cells compared {held.n.min()}-{held.n.max()}, k max {held.k.max()}")  # fmt: skip
    print(
        f"{'model':34s} {'log10 t':>8s} {'predicted':>10s} {'measured':>10s} {'count':>6s}  95 % interval"
    )
    for r in rows:
        mark = " <- lead threshold" if r["is_lead_threshold"] else ""
        print(f"{r['model']:34s} {r['log10_t']:8.2f} {r['predicted']:10.2e} {r['measured']:10.2e} "
              f"{r['measured_count']:6d}  [{r['ci95'][0]:.1e}, {r['ci95'][1]:.1e}]{mark}")  # fmt: skip
    # the tail that sets the threshold, in counts: P(k >= c) predicted by each model's
    # different-source law for these cell counts, against the held-out share
    tail = []
    print(
        f"\n{'model':34s} {'k >=':>5s} {'predicted':>10s} {'measured':>10s} {'count':>6s}  95 % interval"
    )
    for name, model in models.items():
        law = model.params["point"]["different"]
        for c in range(1, 8):
            ns, counts = np.unique(held.n, return_counts=True)
            tails = [
                np.sum(10.0 ** log10_pmf(np.arange(c, ni + 1), np.full(ni + 1 - c, ni), law))
                for ni in ns.tolist()
            ]
            pred = float(np.dot(tails, counts) / counts.sum())
            x = int(np.sum(held.k >= c))
            lo, hi = clopper_pearson(x, n_pairs)
            tail.append({"model": name, "k_at_least": c, "predicted": pred,
                         "measured": x / n_pairs, "measured_count": x, "ci95": [lo, hi]})  # fmt: skip
            print(
                f"{name:34s} {c:5d} {pred:10.2e} {x / n_pairs:10.2e} {x:6d}  [{lo:.1e}, {hi:.1e}]"
            )
    out = {"pairs_file": path.name, "n_pairs": n_pairs, "rows": rows, "count_tail": tail,
           "models": {k: m.id for k, m in models.items()}}  # fmt: skip
    (RESULTS / "eval_threshold.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
