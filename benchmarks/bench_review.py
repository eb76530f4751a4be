"""Page times of the review app (``balllink serve``) at 1e4 and 1e5 exhibits.

Usage::

    .venv/bin/python benchmarks/bench_review.py [--sizes 1e4,1e5] [--repeat 5]

The database: six full-size simulated casings ingested through the real chain (the
test fixture of ``tests/review_support.py``), grown to N exhibits by rows written straight
into SQLite (5 comparisons per exhibit, about one in ten a lead, one audit record each;
ingesting 1e5 scans through the API would take hours here). Each page is requested
``--repeat`` times through Starlette's test client (no network): the first (cold: nothing
cached by the app or SQLite's page cache of this process) and the median of the others.
The first pair view compares two real full-size scans. Prints a table; writes
``benchmarks/results/bench_review.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from balllink.cli import format_table  # noqa: E402
from balllink.database import LeadDatabase  # noqa: E402
from review_support import build_review_db, extend_db, sign_in  # noqa: E402


def _pages(db_path: Path, n: int) -> list[str]:
    with LeadDatabase(db_path, readonly=True) as db:
        real = db.leads_page(agencies=["Metro PD"], limit=1)[0][0]
        n_leads = db.leads_page(limit=1)[1]
    return [
        "/exhibits",
        "/exhibits?agency=Agency+03&kind=crime_scene&since=2023-01-01",
        "/exhibits?q=2023-00999",
        f"/exhibits?offset={n - 60}",
        f"/exhibits/{n}",
        f"/pairs/{real.a}/{real.b}",
        "/leads",
        "/leads?status=confirmed&cross=1",
        f"/leads?offset={n_leads - 10}",
        "/series",
        "/audit",
        f"/audit?offset={n - 50}",
        "/health",
        "/admin",
        f"/img/exhibit/{real.a}.png",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1e4,1e5")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from balllink.review import create_app

    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base = build_review_db(Path(tmp) / "base.db", markup=False)
        for size in (int(float(s)) for s in args.sizes.split(",")):
            path = Path(shutil.copytree(base, Path(tmp) / f"n{size}.db"))
            t0 = time.perf_counter()
            made = extend_db(path, size)
            build_s = time.perf_counter() - t0
            client = TestClient(create_app(path))
            assert sign_in(client, "root").status_code == 303
            for url in _pages(path, size):
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get(url)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, (url, r.status_code)
                warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
                rows.append({"exhibits": size, "page": url.replace(str(size), "N"),
                             "cold_s": round(times[0], 3), "warm_s": round(warm, 3)})  # fmt: skip
            results[size] = {"built": made, "build_s": round(build_s, 1)}
            shutil.rmtree(path)
    print(format_table(rows))
    worst = max(r["cold_s"] for r in rows)
    print(f"slowest cold page: {worst:.3f} s (target < 1 s)")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_review.json").write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "databases": results,
                "pages": rows,
                "slowest_cold_s": worst,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
