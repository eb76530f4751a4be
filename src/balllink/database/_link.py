"""Batch linking of a scope (`LeadDatabase.link`): the nightly all-vs-all job.

1. The candidate index catches up: exhibits stored without correlation (bulk loads)
   get their descriptors (`IndexCache.get`, the path of every search).
2. Candidate graph: each exhibit's top-K in scope (`retrieve_in`, the search's own
   retrieval), ``batch`` queries at a time in one index search. In-process the client
   searches; with Dask the workers do (`retrieve_group`: the saved index file, read once
   per worker), so that the client, one process for the whole cluster, only plans and
   writes: searching a flat index of 10 000 casings takes 2.5 s a query.
3. Pairs already in ``comparisons`` (either order) are dropped; so is a pair planned
   earlier in this run (it was in the other exhibit's list too).
4. The new pairs are compared grouped by query: one `compare_group` per query, so that
   `balllink.compare_many` prepares the query once for all its candidates. In-process
   (``client=None``) or on a ``dask.distributed.Client``, one task per run of consecutive
   groups (`runs_of_groups`: a worker's scan cache then serves the scans they share);
   either way the same module-level function runs on plain data (scan file paths, ids,
   the comparer).
5. Only this process writes: each finished group is stored in its own transaction by
   `Ingester.store_comparisons` (the path of ingest: comparisons, LRs, audit record).

Checkpointing comes from step 3: a run killed at any moment (the client, or a worker:
Dask runs a lost worker's tasks again elsewhere) has stored whole groups only, and the
next run skips them, so it finishes the job without duplicate comparisons.

Workers read the stored scans and the saved candidate index from the database folder by
path: on a cluster the folder must be on storage every worker sees at the same path (NFS,
a parallel file system); only the client opens SQLite.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .._threads import imap_threads, numba_threadsafe, thread_limit, threads_allowed
from ..leads import Scope
from ._audit import AuditTrail
from ._exhibits import Exhibits
from ._index_cache import IndexCache
from ._ingest import Ingester
from ._schema import Sql
from ._search import Retrieval, Searcher, scope_where
from ._store import StoredScanError, WriteLock
from ._tasks import (
    GroupResult,
    GroupTask,
    PlanResult,
    PlanTask,
    ScanRef,
    _scans,
    compare_group,
    compare_groups,
    retrieve_group,
)

__all__ = ["LinkMethods", "LinkSummary", "Linker"]

log = logging.getLogger(__name__)

#: Retrieval batches a Dask run keeps submitted ahead of the one the client plans next.
PLAN_AHEAD = 2
#: Consecutive query groups sent to a Dask worker as one task, at most. Consecutive
#: exhibits are often each other's candidates (a shooting's casings are entered together);
#: a worker that compares them in a row finds those scans prepared in its cache, where
#: groups dealt out one by one to alternate workers had each worker prepare them again
#: (a scan's preparation costs about as much as a comparison).
RUN_OF_GROUPS = 8


def runs_of_groups(tasks: Sequence, slots: int) -> list[tuple]:
    """``tasks`` cut, in order, into runs of consecutive groups (one Dask task each): at
    most `RUN_OF_GROUPS` long, and short enough that each of ``slots`` worker threads
    gets about four (a long run at the end of the job would keep one worker busy alone).

    Examples
    --------
    >>> [len(r) for r in runs_of_groups(list(range(64)), slots=2)]
    [8, 8, 8, 8, 8, 8, 8, 8]
    >>> [len(r) for r in runs_of_groups(list(range(10)), slots=2)]
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    >>> [len(r) for r in runs_of_groups(list(range(20)), slots=2)]
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    size = max(1, min(RUN_OF_GROUPS, len(tasks) // (4 * max(1, int(slots)))))
    return [tuple(tasks[at : at + size]) for at in range(0, len(tasks), size)]


@dataclass
class LinkSummary:
    """What `LeadDatabase.link` did.

    Attributes
    ----------
    n_exhibits : int
        Exhibits in scope (each one a query).
    pairs_considered : int
        Distinct pairs of the candidate graph (each exhibit's top-K in scope).
    already_compared : int
        Of those, pairs found stored before they were planned (an earlier ingest, search
        or run): skipped.
    rescored : int
        Pairs compared and stored by this run.
    leads : int
        New leads among them.
    groups : int
        Query groups compared (tasks).
    failed : list of (query id, reason)
        Groups whose comparison failed (nothing stored for them; a rerun tries again).
    damaged : list of int
        Exhibits whose stored scan could not be read (quarantined; left out).
    seconds : float
        Wall time of the run.
    per_worker : dict
        Per worker (Dask address, or ``in-process@host:pid``): ``groups``, ``pairs``,
        ``seconds`` (time in `compare_group`), ``pairs_per_second``.
    scheduler : str or None
        The Dask scheduler's address; None in-process.
    """

    n_exhibits: int = 0
    pairs_considered: int = 0
    already_compared: int = 0
    rescored: int = 0
    leads: int = 0
    groups: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    seconds: float = 0.0
    per_worker: dict[str, dict] = field(default_factory=dict)
    scheduler: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def _count(self, res: GroupResult) -> None:
        w = self.per_worker.setdefault(
            res.worker, {"groups": 0, "pairs": 0, "seconds": 0.0, "pairs_per_second": 0.0}
        )
        w["groups"] += 1
        w["pairs"] += len(res.cand_ids)
        w["seconds"] += res.seconds
        w["pairs_per_second"] = w["pairs"] / w["seconds"] if w["seconds"] > 0 else 0.0


class _InProcess:
    """Runs the groups in this process as the client asks for them: the first in this
    thread (with every core: it loads the model and starts Numba's threading layer),
    then one group per core side by side, each on its own thread under
    ``thread_limit(1)``, the results yielded in order. Within one group the candidates
    already run side by side (`balllink.compare_many`), but a query's first candidate
    runs alone and a group's last ones leave a core idle; two groups at once do not.
    One group at a time when only one thread is allowed, when Numba's threading layer
    is not thread-safe, or when the comparer is not balllink's own (it may not be
    thread-safe)."""

    scheduler = None

    def __init__(self, comparer: Callable):
        from ..comparison import compare_many

        self._comparer = comparer
        self._queue: deque[GroupTask] = deque()
        self._threads = threads_allowed() if comparer is compare_many else 1
        self._warm = False  # a group has run in this thread
        self._stream: Iterator[GroupResult] | None = None

    def submit(self, tasks: Sequence[GroupTask]) -> None:
        self._queue.extend(tasks)

    def finished(self, keep: int) -> Iterator[GroupResult]:
        tasks, self._queue = list(self._queue), deque()
        run = functools.partial(compare_group, comparer=self._comparer)
        self._stream = imap_threads(
            run, tasks, warm=not self._warm, threads=self._threads, name="balllink-link"
        )
        for res in self._stream:
            self._warm = True
            yield res
        self._stream = None

    def planning(self):
        """The client's index searches run on one thread once groups run beside them
        (FAISS's threads would spin on the cores the groups use)."""
        side_by_side = self._warm and self._threads > 1 and numba_threadsafe()
        return thread_limit(1) if side_by_side else nullcontext()

    def close(self) -> None:
        self._queue.clear()
        if self._stream is not None:  # stopped early: what has not started never will
            self._stream.close()
            self._stream = None
        _scans.clear()  # the client's memory: the database keeps its own scan cache


class _OnDask:
    """Submits the groups to a ``dask.distributed.Client`` in runs of consecutive groups
    (`runs_of_groups`); yields each group as its run finishes."""

    def __init__(self, client, comparer: Callable):
        from distributed import as_completed

        self._client = client
        self._comparer = comparer
        self._done = as_completed()
        self._futures: set = set()
        self._groups = 0  # groups submitted and not yet yielded
        self.scheduler = getattr(client.scheduler, "address", None)

    def planning(self):
        """The client plans under `Linker.link`'s one-thread limit already."""
        return nullcontext()

    def submit(self, tasks: Sequence[GroupTask]) -> None:
        slots = sum(self._client.nthreads().values())  # workers may come and go
        for run in runs_of_groups(list(tasks), slots):
            fut = self._client.submit(compare_groups, run, self._comparer, pure=False)
            self._futures.add(fut)
            self._done.add(fut)
            self._groups += len(run)

    def retrieve(self, tasks: Iterator[PlanTask], in_scope: np.ndarray) -> Iterator[PlanResult]:
        """`retrieve_group` of each task on the workers, two batches ahead, in order.

        Retrievals go before comparisons (a higher priority): the groups they plan keep
        the workers busy, and the client waits on them."""
        # a task's result, not scattered data: the scheduler computes it again when the
        # worker holding it dies (scattered data would be lost, and with it the run; Dask's
        # memory manager drops the extra copies of broadcast data)
        scope = self._client.submit(np.asarray, in_scope, pure=False, priority=2)
        ahead: deque = deque()
        for task in tasks:
            ahead.append(self._submit_plan(task, scope))
            if len(ahead) > PLAN_AHEAD:
                yield self._plan_result(ahead.popleft())
        while ahead:
            yield self._plan_result(ahead.popleft())

    def _submit_plan(self, task: PlanTask, scope):
        fut = self._client.submit(retrieve_group, task, scope, pure=False, priority=1)
        self._futures.add(fut)
        return fut

    def _plan_result(self, fut) -> PlanResult:
        self._futures.discard(fut)
        return fut.result()  # an error (a bug, a KilledWorker) is raised here

    def finished(self, keep: int) -> Iterator[GroupResult]:
        while self._groups > keep and self._done.count():
            fut = next(self._done)
            self._futures.discard(fut)
            results = fut.result()  # a task error (a bug, a KilledWorker) is raised here
            self._groups -= len(results)
            yield from results

    def close(self) -> None:
        if self._futures:  # the run stopped early: nothing left running for it
            self._client.cancel(list(self._futures))
            self._futures.clear()


class Linker:
    """The batch linking of one database (see `LeadDatabase.link`)."""

    def __init__(
        self,
        sql: Sql,
        exhibits: Exhibits,
        index: IndexCache,
        searcher: Searcher,
        ingester: Ingester,
        lock: WriteLock,
        audit: AuditTrail,
    ):
        self._audit = audit
        self._sql = sql
        self._exhibits = exhibits
        self._index = index
        self._searcher = searcher
        self._ingester = ingester
        self._lock = lock

    def link(
        self, scope: Scope, k: int, *, client=None, progress: Callable | None, batch: int
    ) -> LinkSummary:
        self._sql.require_writable("link")
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1 (queries planned at once), got {batch}")
        start = time.perf_counter()
        scope = replace(scope, max_rescore=int(k))
        where, params = scope_where(scope)
        ids = self._exhibits.ids(where, params)
        summary = LinkSummary(n_exhibits=len(ids))
        comparer = self._searcher.compare_many
        runner = _InProcess(comparer) if client is None else _OnDask(client, comparer)
        summary.scheduler = runner.scheduler
        lists: dict[int, np.ndarray] = {}  # each planned query's candidates
        done = 0
        # once the workers compare, this process plans and writes on one thread beside
        # them: its searches would otherwise spin threads on cores the workers are using (a
        # batch search took three times as long). Step 1 runs before, with every core.
        limit = thread_limit(1) if client is not None else nullcontext()
        batches = [ids[at : at + int(batch)] for at in range(0, len(ids), int(batch))]
        with self._lock:
            self._index.get()  # step 1: exhibits without descriptors are embedded
            with limit:
                try:
                    for queries, found in self._retrievals(batches, scope, runner, summary):
                        tasks = self._plan(found, lists, summary)
                        done += len(queries) - len(tasks)  # nothing to compare
                        runner.submit(tasks)
                        if progress is not None:
                            progress(done, len(ids))
                        # keep a batch in flight while the next one is planned
                        for res in runner.finished(keep=int(batch)):
                            done += 1
                            self._store(res, summary, progress, done, len(ids))
                    for res in runner.finished(keep=0):
                        done += 1
                        self._store(res, summary, progress, done, len(ids))
                finally:
                    runner.close()
                    if self._index.needs_save:
                        self._index.save()
            summary.seconds = time.perf_counter() - start
            self._audit.log_event(
                "link", where=where, params=params, k=int(k), n_exhibits=len(ids),
                pairs_considered=summary.pairs_considered, rescored=summary.rescored,
                leads=summary.leads, failed=len(summary.failed), scheduler=summary.scheduler,
            )  # fmt: skip
        return summary

    def _stored_partners(self, eid: int) -> set[int]:
        """The exhibits stored as compared with ``eid`` (either order)."""
        rows = self._sql().execute(
            "SELECT b FROM comparisons WHERE a = ? UNION SELECT a FROM comparisons WHERE b = ?",
            (eid, eid),
        )
        return {int(r[0]) for r in rows}

    def _refs(self, eids) -> dict[int, ScanRef]:
        """The `ScanRef` of each exhibit, read in one query (not one per exhibit)."""
        ids, path, out = sorted({int(e) for e in eids}), self._exhibits.store.path, {}
        for at in range(0, len(ids), 900):  # below SQLite's limit of bound variables
            chunk = ids[at : at + 900]
            rows = self._sql().execute(
                "SELECT id, scan_file, scan_hash FROM exhibits "
                f"WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r["id"]] = ScanRef(r["id"], str(path(r["scan_file"])), r["scan_hash"])
        return out

    def _retrievals(
        self, batches: list, scope: Scope, runner, summary: LinkSummary
    ) -> Iterator[tuple[list[int], list[tuple[int, Retrieval]]]]:
        """Each batch of queries with the retrieval of each readable one, in order: on the
        Dask workers when there are some and the index is saved, else here."""
        saved = self._saved_index() if isinstance(runner, _OnDask) else None
        if saved is None:
            for queries in batches:
                with runner.planning():
                    found = self._retrieve_here(queries, scope, summary)
                yield queries, found
            return
        path, sha = saved
        limit = int(scope.max_rescore)
        tasks = (
            PlanTask(path, sha, self._index.index_class, tuple(refs[q] for q in qs), limit)
            for qs in batches
            for refs in (self._refs(qs),)
        )
        results = runner.retrieve(tasks, self._searcher.in_scope(scope))
        for queries, res in zip(batches, results, strict=True):
            if res.damaged:  # read here again: quarantined, flagged and warned
                self._exhibits.loadable(res.damaged)
                summary.damaged += [i for i in res.damaged if i not in summary.damaged]
            yield queries, [(q, f) for q, f in zip(queries, res.found) if f is not None]

    def _saved_index(self) -> tuple[str, str] | None:
        """The index file as the index is now, and its hash; None when it cannot be saved
        (then the client searches itself)."""
        if self._index.needs_save and not self._index.save():
            return None
        data, _, manifest = self._index.files
        try:
            return str(data), str(json.loads(manifest.read_text())["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _retrieve_here(
        self, queries, scope: Scope, summary: LinkSummary
    ) -> list[tuple[int, Retrieval]]:
        """This process's retrieval of a batch (the in-process run's)."""
        ready, preps = [], []
        for qid in queries:
            try:
                preps.append(self._exhibits.scan(qid))
                ready.append(qid)
            except StoredScanError as exc:  # quarantined and flagged by `scan`
                log.warning("link: exhibit %d left out: %s", qid, exc)
                summary.damaged.append(qid)
        found = self._searcher.retrieve_many(preps, scope, ready) if ready else []
        return list(zip(ready, found))

    def _plan(
        self, found: list[tuple[int, Retrieval]], lists: dict, summary: LinkSummary
    ) -> list[GroupTask]:
        """The groups of these queries: top-K in scope, less pairs stored or planned.

        A pair was planned earlier in this run when its other exhibit was planned as a query
        and listed this one: ``lists`` keeps each query's candidates as an int64 array,
        8 bytes a pair (a set of pairs takes about 100: 5 GB at 1e6 exhibits x 50)."""
        refs = self._refs([q for q, _ in found] + [c for _, got in found for c in got.ids])
        tasks = []
        for qid, got in found:
            stored = self._stored_partners(qid)
            new = []
            lists[qid] = np.asarray(got.ids, dtype=np.int64)
            for cid in got.ids:
                earlier = lists.get(cid)
                if earlier is not None and cid != qid and (earlier == qid).any():
                    continue  # planned (or found stored) when ``cid`` was the query
                summary.pairs_considered += 1
                if cid in stored:
                    summary.already_compared += 1
                else:
                    new.append(cid)
            if new:
                tasks.append(GroupTask(refs[qid], tuple(refs[c] for c in new)))
        return tasks

    def _store(self, res: GroupResult, summary: LinkSummary, progress, done, total) -> None:
        """Write one finished group (its own transaction), then report progress."""
        self._write(res, summary)
        if progress is not None:
            progress(done, total)

    def _write(self, res: GroupResult, summary: LinkSummary) -> None:
        summary._count(res)
        summary.groups += 1
        if res.damaged:  # read here again: quarantined, flagged and warned
            self._exhibits.loadable(res.damaged)
            summary.damaged += [i for i in res.damaged if i not in summary.damaged]
        if res.error is not None:
            log.warning("link: exhibit %d not compared: %s", res.query_id, res.error)
            summary.failed.append((res.query_id, res.error))
            return
        stored = self._stored_partners(res.query_id)  # never a second row for a pair
        keep = [i for i, c in enumerate(res.cand_ids) if c not in stored]
        if not keep:
            return
        out = self._ingester.store_comparisons(
            res.query_id,
            [res.cand_ids[i] for i in keep],
            [res.comparisons[i] for i in keep],
            [res.features[i] for i in keep],
            why="link",
        )
        summary.rescored += len(out.ids)
        summary.leads += len(out.leads)


class LinkMethods:
    """Batch linking of `LeadDatabase` (see the class docstring there)."""

    def link(
        self,
        scope=None,
        *,
        k: int | None = None,
        client=None,
        progress: Callable | None = None,
        batch: int = 64,
    ) -> LinkSummary:
        """Link every exhibit in a scope with its candidates: the nightly batch job.

        Exhibits stored without correlation are embedded in the index; each exhibit in
        scope gets its top ``k`` candidates in scope; the pairs not compared yet are
        compared, grouped by query, and stored with their LRs and leads exactly as an
        ingest stores its own. Each query's group is written in its own transaction, and
        stored pairs are skipped: a run killed at any moment is finished, without
        duplicates, by running it again.

        Parameters
        ----------
        scope : Scope or dict, optional
            The exhibits linked with each other (default: all; ``max_rescore`` is
            ignored, ``k`` takes its place).
        k : int, optional
            Candidates per exhibit (default: the database's ``rescore_k``).
        client : dask.distributed.Client, optional
            Search the index and compare the groups as tasks on this client's cluster
            (``balllink[dask]``); only this process writes. Workers read the stored
            scans and the saved index by path: the database folder must be on storage
            every worker sees at the same path. Default: in this process (the
            candidates of a query compared side by side, one per core).
        progress : callable, optional
            ``progress(done, total)`` over the exhibits in scope, after each group stored.
        batch : int
            Queries planned (index search, pairs dropped) at a time; about as many groups
            are kept in flight while the next batch is planned.

        Returns
        -------
        LinkSummary

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> from balllink.database import LeadDatabase
        >>> rng = np.random.default_rng(0)
        >>> scans = [bl.Scan(rng.normal(size=(240, 240)), spacing_um=6.25,
        ...                  meta={"prepared": {"ok": True}}) for _ in range(3)]
        >>> def plain(query, cands):  # a stand-in comparer: quick, never a lead
        ...     return [bl.Comparison(0, 0.0, 0.0, (0.0, 0.0), False, (), np.zeros(0),
        ...                           config=bl.CMCConfig()) for _ in cands]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/leads.db", comparer=plain) as db:
        ...         _ = db.ingest_many(scans, correlate=False)
        ...         first, again = db.link(k=2), db.link(k=2)
        ...         print(first.rescored, first.leads, again.already_compared, again.rescored)
        3 0 3 0
        """
        linker = Linker(
            self._sql, self._exhibits, self._index, self._searcher, self._ingester,
            self._lock, self._audit,
        )  # fmt: skip
        k = self.rescore_k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1 (candidates per exhibit), got {k}")
        scope = Scope.coerce(scope) if scope is not None else Scope()
        return linker.link(scope, k, client=client, progress=progress, batch=batch)
