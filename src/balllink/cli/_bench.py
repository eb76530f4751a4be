"""``balllink bench``: ingest rate and search latency of a lead database of simulated exhibits."""

from __future__ import annotations

import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import simulate
from ..comparison import compare_many
from ..database import LeadDatabase
from ._common import Bar, emit, format_table

__all__ = ["cmd_bench", "run_bench"]


def run_bench(
    sizes=(1000,),
    *,
    shape=(128, 128),
    spacing_um: float = 12.5,
    n_ingest: int = 50,
    n_queries: int = 5,
    rescore: int = 50,
    workdir=None,
    keep: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Ingest rate and search latency of a lead database of simulated exhibits.

    For each size N: N small simulated casings (``shape`` pixels at ``spacing_um``,
    prepared-like) are stored without correlation (bulk load), then ``n_ingest`` new
    firings of stored guns are ingested with full correlation (retrieval + rescoring of up
    to ``rescore`` candidates each), then ``n_queries`` searches each rescore the top
    ``rescore``. Peak memory is the process's maximum resident set size so far. With
    ``keep``, databases stay in ``workdir`` and are reused by the next run (bulk load and
    correlated ingest are then not measured again).
    """

    def prepared(scan):
        return scan.replace(meta={"prepared": {"simulated": True}})

    results = []
    for size in sizes:
        if keep:
            folder = Path(workdir or ".") / f"bench-{size}-{shape[0]}x{shape[1]}"
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(tempfile.mkdtemp(prefix="balllink-bench-", dir=workdir))
        try:
            db = LeadDatabase(folder / "bench.db", rescore_k=rescore)
            reused = db.count() >= size
            per = 4  # stored firings per gun; firing `per` of the first guns are new casings
            n_fire = math.ceil(size / per)
            stream = simulate.iter_casings(
                n_fire, per + 1, seed=seed, shape=shape, spacing_um=spacing_um
            )
            extra: list = []

            def bulk(stream=stream, extra=extra, size=size, per=per, reused=reused):
                k = 0
                for scan, _ in stream:
                    if scan.meta["simulation"]["firing_index"] == per:
                        if len(extra) < n_ingest + n_queries:
                            extra.append(prepared(scan))
                        elif reused:
                            return
                    elif k < size and not reused:
                        yield prepared(scan), {"agency": "A", "case_id": f"c{k}"}
                        k += 1

            load_rate = ingest_rate = None
            t = time.perf_counter()
            bar = Bar(f"load {size}", progress and not reused)
            rep = db.ingest_many(bulk(), correlate=False, progress=bar)
            bar.close()
            if not reused:
                load_rate = round(len(rep.ingested) / (time.perf_counter() - t), 1)
            t = time.perf_counter()
            new = [(s, {"agency": "B", "case_id": f"n{k}"}) for k, s in enumerate(extra[:n_ingest])]
            rep = db.ingest_many(new)
            if rep.ingested:
                ingest_rate = round(len(rep.ingested) / (time.perf_counter() - t), 2)
            lat, rescore_only = [], []
            for q in extra[n_ingest:]:
                t = time.perf_counter()
                res = db.search(q, k=10, scope={"max_rescore": rescore})
                lat.append(time.perf_counter() - t)
                cands = [db.scan(i) for i in db.retrieve(q, scope=res.scope).ids]
                t = time.perf_counter()
                compare_many(q, cands)
                rescore_only.append(time.perf_counter() - t)
            n = db.count()
            db.close()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            results.append(
                {
                    "exhibits": n,
                    "shape": "x".join(map(str, shape)),
                    "spacing_um": spacing_um,
                    "bulk_load_per_s": load_rate,
                    "ingest_correlated_per_s": ingest_rate,
                    "search_rescored": res.n_rescored if lat else 0,
                    "search_p50_s": round(float(np.median(lat)), 3) if lat else None,
                    "search_max_s": round(float(np.max(lat)), 3) if lat else None,
                    "rescore_only_p50_s": round(float(np.median(rescore_only)), 3) if lat else None,
                    "peak_rss_mb": round(peak, 1),
                    "disk_kb_per_exhibit": round(disk / 1024 / max(1, n), 1),
                }
            )
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
    return results


def cmd_bench(args) -> int:
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    res = run_bench(sizes, n_ingest=args.ingest, n_queries=args.queries, progress=not args.json)
    emit(args, res, format_table(res))
    return 0
