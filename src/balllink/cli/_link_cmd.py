"""``balllink link``: all-vs-all linking of a scope (`LeadDatabase.link`), in this process,
on a local Dask cluster (``--workers N``) or on a running one (``--scheduler``)."""

from __future__ import annotations

import contextlib

from ..leads import Scope
from ._common import Bar, emit, open_db

__all__ = ["cmd_link", "dask_client", "local_cluster"]


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """A ``dask.distributed`` client: None (in-process) without either option; a
    `LocalCluster` of ``workers`` one-thread processes; or the running ``scheduler``."""
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ValueError(
            "give --scheduler (a running cluster) or --workers (a local one), not both"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(
            "--scheduler and --workers need Dask: pip install 'balllink[dask]' "
            "(or run without them, in this process)"
        ) from None
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield client


def local_cluster(workers: int):
    """A `LocalCluster` of ``workers`` one-thread processes, without Dask's sampling
    profiler: it walks every thread's stack each 10 ms, and took about a tenth of a
    worker's time from the comparisons (1 worker, 200 casings: 13.8 -> 15.2 pairs/s)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):  # workers copy it
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )


def _lines(s) -> str:
    where = f"on {s.scheduler}" if s.scheduler else "in this process"
    out = [
        f"linked {s.n_exhibits} exhibit(s) {where} in {s.seconds:.1f} s: "
        f"{s.pairs_considered} candidate pair(s), {s.already_compared} compared before, "
        f"{s.rescored} compared now, {s.leads} new lead(s)"
    ]
    for name, w in sorted(s.per_worker.items()):
        out.append(
            f"  {name}: {w['groups']} group(s), {w['pairs']} pair(s), "
            f"{w['pairs_per_second']:.2f} pairs/s"
        )
    for qid, reason in s.failed:
        out.append(f"not compared: exhibit {qid}: {reason} (run link again to retry)")
    if s.damaged:
        out.append(f"damaged stored scans, left out and quarantined: exhibits {s.damaged}")
    return "\n".join(out)


def cmd_link(args) -> int:
    scope = Scope(
        agencies=args.agency or None,
        since=args.since,
        until=args.until,
        caliber=args.caliber,
        kind=args.kind,
        bbox=args.bbox,
    )
    bar = Bar("link", not args.json)
    with open_db(args) as db, dask_client(args.scheduler, args.workers) as client:
        try:
            s = db.link(scope, k=args.k, client=client, progress=bar, batch=args.batch)
        finally:
            bar.close()
    emit(args, s.as_dict(), _lines(s))
    return 1 if s.failed or s.damaged else 0
