"""Lead database: ingest rate and search latency at 1e3, 1e4 and 1e5 exhibits.

Usage::

    .venv/bin/python benchmarks/bench_database.py [--sizes 1e3,1e4,1e5] [--shape 128]

For each size N, N simulated prepared-like casings (small grids, ``--shape`` pixels at
12.5 µm, stated in the output) are bulk-loaded (stored, hashed, indexed; no correlation),
then ``--ingest`` new casings are ingested with automatic correlation (index retrieval,
then full CMC rescoring of up to 50 candidates each), then ``--queries`` searches each
rescore the top 50. Prints a table; writes ``benchmarks/results/bench_database.json``.
Target: a search rescoring the top 50 in under 2 s at 1e5 exhibits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from balllink.cli import format_table, run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1e3,1e4,1e5")
    parser.add_argument("--shape", type=int, default=128, help="simulated grid side, px")
    parser.add_argument("--ingest", type=int, default=30)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="where the databases go")
    parser.add_argument("--keep", action="store_true", help="keep and reuse the databases")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:  # one size at a time so that partial results are kept
        rows += run_bench(
            [size],
            shape=(args.shape, args.shape),
            n_ingest=args.ingest,
            n_queries=args.queries,
            workdir=args.workdir,
            keep=args.keep,
        )
        print(format_table(rows[-1:]), flush=True)
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_database.json").write_text(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "target": "search rescoring the top 50 < 2 s at 1e5 exhibits",
                    "results": rows,
                },
                indent=2,
            )
        )
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
