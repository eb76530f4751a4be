"""How much breech face a comparison needs: false leads of small crops against other guns.

For each source scan (one per firearm), the best-filled square window of each size is cut
out and compared, with the minimum-evidence gate switched off (``min_area_mm2=0``,
``min_cells=0``), against every scan of the other firearms (false leads) and of its own
firearm (true leads). The table gives, per crop size, the usable area of the crops and the
lead rates; it is what `balllink.preprocessing.MIN_AREA_MM2` (the gate of
`CMCConfig.min_area_mm2`) rests on. Real Fadul scans by default; ``--sim DIFFICULTY:SEED``
for simulated sets (6 firearms x 4). Writes ``benchmarks/results/eval_thin_evidence.json``.

    .venv/bin/python benchmarks/eval_thin_evidence.py [--data DIR] [--sim fadul-like:11]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import balllink as bl
from balllink.preprocessing import prepare_if_needed

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"
SIZES = (90, 120, 150, 200, 250, 300, 350, 400)


def fadul(data: Path):
    with open(data / "truth.csv", newline="") as fh:
        truth = {r["file"]: r["firearm"] for r in csv.DictReader(fh)}
    names = sorted(truth)
    scans = [prepare_if_needed(bl.read_scan(data / n, handedness="viewed")) for n in names]
    return scans, [truth[n] for n in names]


def simulated(spec: str):
    diff, seed = spec.split(":")
    sims = bl.simulate.casings(6, 4, seed=int(seed), difficulty=diff)
    return [prepare_if_needed(s) for s in sims.scans], [int(f) for f in sims.truth["firearm_id"]]


def best_window(scan: bl.Scan, size: int) -> bl.Scan:
    """The ``size`` x ``size`` crop with the most valid pixels (a prepared crop)."""
    share = ndi.uniform_filter(scan.mask.astype(float), size, mode="constant")
    cy, cx = np.unravel_index(np.argmax(share), share.shape)
    y0, x0 = max(0, cy - size // 2), max(0, cx - size // 2)
    z = scan.masked_heights()[y0 : y0 + size, x0 : x0 + size]
    return prepare_if_needed(bl.Scan(z, spacing_um=scan.spacing_um, meta={"handedness": "viewed"}))


def run(scans, guns, sizes=SIZES) -> dict:
    cfg = bl.CMCConfig(min_area_mm2=0.0, min_cells=0, handedness="same")
    sources = [i for i in range(len(scans)) if guns[i] not in [guns[j] for j in range(i)]]
    out = {}
    for size in sizes:
        row = {"area_mm2": [], "false": 0, "knm": 0, "true": 0, "km": 0, "knm_raw_max": 0.0}
        for i in sources:
            crop = best_window(scans[i], size)
            row["area_mm2"].append(crop.area_mm2)
            others = [s for s, g in zip(scans, guns, strict=True) if g != guns[i]]
            mates = [
                s
                for j, (s, g) in enumerate(zip(scans, guns, strict=True))
                if g == guns[i] and j != i
            ]
            for c in bl.compare_many(crop, others, config=cfg):
                row["knm"] += 1
                row["false"] += bool(c.score >= cfg.lead_threshold)
                row["knm_raw_max"] = max(row["knm_raw_max"], c.raw_score)
            for c in bl.compare_many(crop, mates, config=cfg):
                row["km"] += 1
                row["true"] += bool(c.score >= cfg.lead_threshold)
        a = np.array(row["area_mm2"])
        row["area_min"], row["area_max"] = float(a.min()), float(a.max())
        print(
            f"{size:5d} px  {row['area_min']:5.2f}-{row['area_max']:5.2f} mm²  false leads "
            f"{row['false']:4d}/{row['knm']:<4d} ({row['false'] / row['knm']:6.1%})  true leads "
            f"{row['true']:3d}/{row['km']:<3d}  KNM raw max {row['knm_raw_max']:.3f}",
            flush=True,
        )
        out[str(size)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "fadul")
    ap.add_argument("--sim", action="append", default=[], metavar="DIFFICULTY:SEED")
    args = ap.parse_args()
    results = {}
    sets = [(spec, lambda spec=spec: simulated(spec)) for spec in args.sim]
    if not args.sim:
        sets = [("fadul", lambda: fadul(args.data))]
    for name, load in sets:
        print(f"{name}: crops compared with the gate off (min_area_mm2=0, min_cells=0)")
        print(f"{'crop':>8}  {'usable area':>13}")
        results[name] = run(*load())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_thin_evidence.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
