"""Benchmark: time and peak memory of `bl.preprocess` on simulated raw and prepared scans.

Cases: a 2000 x 2000 raw scan at 3.125 µm (the issue's target: under 1 s on a 2-core
machine) and a 600 x 600 scan at 6.25 µm (prepared-like input, and the same size raw).
Prints a table and writes ``benchmarks/results/bench_preprocess.json``.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

import balllink as bl

RESULTS = Path(__file__).resolve().parent / "results" / "bench_preprocess.json"

CASES = [
    # name, simulate.casings keyword arguments
    ("raw 2000x2000 @3.125", {"raw": True, "shape": (2000, 2000), "spacing_um": 3.125}),
    ("raw 600x600 @6.25", {"raw": True, "shape": (600, 600), "spacing_um": 6.25}),
    ("prepared 600x600 @6.25", {"raw": False, "shape": (600, 600), "spacing_um": 6.25}),
]


def _run(scan: bl.Scan, repeat: int) -> dict:
    bl.preprocess(scan)  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        prep = bl.preprocess(scan)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    bl.preprocess(scan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "input_shape": list(scan.shape),
        "input_spacing_um": scan.spacing_um[0],
        "output_shape": list(prep.shape),
        "output_valid": prep.n_valid,
        "quality": prep.meta["prepared"]["quality"],
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeat": repeat,
        "peak_mib": peak / 2**20,
        "input_mib": scan.heights.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, kwargs in CASES:
        scan = bl.simulate.casings(1, 1, seed=0, **kwargs).scans[0]
        scan = bl.Scan(scan.heights, spacing_um=scan.spacing_um, source=name)  # no truth
        rows[name] = _run(scan, args.repeat)
    head = (
        f"{'case':<24}{'in shape':>12}{'out shape':>12}{'median s':>10}{'min s':>8}{'peak MiB':>10}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:<24}{'x'.join(map(str, r['input_shape'])):>12}"
            f"{'x'.join(map(str, r['output_shape'])):>12}{r['median_s']:>10.3f}"
            f"{r['min_s']:>8.3f}{r['peak_mib']:>10.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "target": "raw 2000x2000 @3.125 under 1 s",
        "cases": rows,
    }
    RESULTS.write_text(json.dumps(info, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
