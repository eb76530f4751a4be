"""The tasks of `LeadDatabase.link` that run where the work is (a Dask worker, or this
process): `retrieve_group` (step 2: each query's candidates from the saved index) and
`compare_group` (step 4: one query compared with its candidates). Plain data in and out;
they read the stored scans and the index file by path and never open SQLite.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .._malloc import keep_freed_memory
from .._scan import Scan
from .._threads import thread_limit
from ..errors import BalllinkError
from ._lr import Features, features_of
from ._search import Retrieval, retrieve_in
from ._store import StoredScanError, load_scan

__all__ = [
    "GroupResult",
    "GroupTask",
    "PlanResult",
    "PlanTask",
    "ScanRef",
    "compare_group",
    "compare_groups",
    "retrieve_group",
]

#: Stored scans kept in memory by each process that runs `compare_group` (LRU): the
#: per-scan work `compare_many` caches lives as long as its scan.
SCAN_CACHE = 64


class ScanRef(NamedTuple):
    """A stored scan as a task sees it: exhibit id, file path, content hash."""

    exhibit_id: int
    path: str
    scan_hash: str


class GroupTask(NamedTuple):
    """One query and the candidates it is compared with (plain data: pickles small)."""

    query: ScanRef
    candidates: tuple[ScanRef, ...]


class GroupResult(NamedTuple):
    """What `compare_group` sends back to the client."""

    query_id: int
    cand_ids: list[int]
    comparisons: list
    features: list[Features]
    damaged: list[int]  # exhibits whose stored scan could not be read (query included)
    worker: str
    seconds: float
    error: str | None = None


class PlanTask(NamedTuple):
    """A batch of queries to retrieve candidates for on a worker (`retrieve_group`)."""

    index_file: str  # the database's saved candidate index
    index_sha256: str  # its manifest's hash: a worker reloads when it changes
    index_class: type  # the database's index class (``index_class.load(index_file)``)
    queries: tuple[ScanRef, ...]
    limit: int  # candidates per query (k)


class PlanResult(NamedTuple):
    """What `retrieve_group` sends back: each query's retrieval (None: not readable)."""

    found: list[Retrieval | None]
    damaged: list[int]
    worker: str
    seconds: float


_scans: OrderedDict[tuple[str, str], Scan] = OrderedDict()
_scans_lock = threading.Lock()
_index: dict[str, object] = {}  # this process's copy of a saved index: {sha256: index}


def _load(ref: ScanRef) -> Scan:
    """A stored scan, from this process's LRU when there (checked against its hash when
    read). Safe from several threads (the in-process link runs a group per core)."""
    key = (ref.path, ref.scan_hash)
    with _scans_lock:
        scan = _scans.get(key)
        if scan is not None:
            _scans.move_to_end(key)
            return scan
    scan = load_scan(ref.path, ref.scan_hash, exhibit_id=ref.exhibit_id)  # outside the lock
    with _scans_lock:
        scan = _scans.setdefault(key, scan)  # a scan read twice at once is kept once
        while len(_scans) > SCAN_CACHE:
            _scans.popitem(last=False)
    return scan


def _worker_name() -> str:
    """The Dask worker's address, else ``in-process@host:pid``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"in-process@{socket.gethostname()}:{os.getpid()}"


def compare_group(task: GroupTask, comparer: Callable | None = None) -> GroupResult:
    """Compare one query with its candidates, reading the stored scans by path.

    The function a Dask worker runs (and the in-process run too): plain data in, a
    `GroupResult` out; it never opens SQLite. A stored scan that cannot be read is left
    out and named in ``damaged`` (the client quarantines it); a comparison that fails
    with a `BalllinkError` (e.g. scans of different spacing) gives ``error`` instead of
    comparisons.

    Parameters
    ----------
    task : GroupTask
    comparer : callable, optional
        ``comparer(query, candidates) -> list of Comparison``; default
        `balllink.compare_many`.

    Examples
    --------
    >>> import tempfile, numpy as np, balllink as bl
    >>> from balllink.database._store import save_scan, scan_sha256
    >>> z = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    >>> s = bl.Scan(z, spacing_um=6.25)
    >>> folder = tempfile.mkdtemp()
    >>> refs = [ScanRef(i, f"{folder}/{save_scan(s, folder, scan_sha256(s))}",
    ...                 scan_sha256(s)) for i in (1, 2)]
    >>> plain = lambda q, cands: [bl.Comparison(0, 0.1, 0.0, (0.0, 0.0), False, (),
    ...     np.zeros(0), config=bl.CMCConfig()) for _ in cands]
    >>> r = compare_group(GroupTask(refs[0], (refs[1],)), plain)
    >>> r.query_id, r.cand_ids, r.damaged, r.error
    (1, [2], [], None)
    """
    start = time.perf_counter()
    worker = _worker_name()
    if worker.startswith("in-process"):
        return _compare_group(task, comparer, worker, start)
    # on a Dask worker the parallelism is the tasks: one thread each (FFTs, Numba, cmcR's
    # two directions), or W workers of T threads would run W * T * cores threads
    keep_freed_memory()  # the nanny froze glibc's mmap threshold: see `balllink._malloc`
    with thread_limit(1):
        return _compare_group(task, comparer, worker, start)


def compare_groups(
    tasks: Sequence[GroupTask], comparer: Callable | None = None
) -> list[GroupResult]:
    """`compare_group` of several groups in a row, in one process: one Dask task.

    Consecutive queries often share scans (a shooting's casings are entered one after the
    other and are each other's candidates); compared by one worker in a row, those scans
    are found prepared in its cache instead of being read and prepared again by another.

    Examples
    --------
    >>> import numpy as np
    >>> gone = ScanRef(1, "/no/such/scan.npz", "0" * 64)
    >>> [r.damaged for r in compare_groups([GroupTask(gone, ()), GroupTask(gone, ())])]
    [[1], [1]]
    """
    return [compare_group(task, comparer) for task in tasks]


def _saved_index(task: PlanTask):
    """The saved index of ``task``, read once per process (and again when it changes)."""
    index = _index.get(task.index_sha256)
    if index is None:
        _index.clear()  # one index at a time: a changed one replaces the old copy
        index = _index[task.index_sha256] = task.index_class.load(task.index_file)
    return index


def retrieve_group(task: PlanTask, in_scope: np.ndarray) -> PlanResult:
    """Step 2 of `LeadDatabase.link` on a Dask worker: each query's candidates.

    Reads the queries' stored scans and the database's saved index by path (both cached
    in this process), and runs the database's own retrieval (`retrieve_in`) under
    ``thread_limit(1)``. A query whose stored scan cannot be read is named in ``damaged``
    (the client quarantines it) and gets None.

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> gone = ScanRef(1, "/no/such/scan.npz", "0" * 64)  # a stored scan that is missing
    >>> task = PlanTask("/no/such/index.faiss", "-", bl.CasingIndex, (gone,), limit=5)
    >>> r = retrieve_group(task, np.array([1, 2, 3]))
    >>> r.found, r.damaged
    ([None], [1])
    """
    start = time.perf_counter()
    worker = _worker_name()
    if not worker.startswith("in-process"):
        keep_freed_memory()
    with thread_limit(1):
        refs, preps, damaged = [], [], []
        for ref in task.queries:
            try:
                preps.append(_load(ref))
                refs.append(ref)
            except StoredScanError:
                damaged.append(ref.exhibit_id)
        got = retrieve_in(
            lambda: _saved_index(task),
            preps,
            np.asarray(in_scope, dtype=np.int64),
            [r.exhibit_id for r in refs],
            int(task.limit),
        )
    by_id = dict(zip((r.exhibit_id for r in refs), got))
    found = [by_id.get(r.exhibit_id) for r in task.queries]
    return PlanResult(found, damaged, worker, time.perf_counter() - start)


def _compare_group(task: GroupTask, comparer, worker: str, start: float) -> GroupResult:
    from ..comparison import compare_many

    qid = task.query.exhibit_id

    def result(cand_ids, comps=(), feats=(), damaged=(), error=None) -> GroupResult:
        seconds = time.perf_counter() - start
        return GroupResult(qid, list(cand_ids), list(comps), list(feats), list(damaged),
                           worker, seconds, error)  # fmt: skip

    try:
        query = _load(task.query)
    except StoredScanError:
        return result([], damaged=[qid])
    ids, scans, damaged = [], [], []
    for ref in task.candidates:
        try:
            scans.append(_load(ref))
            ids.append(ref.exhibit_id)
        except StoredScanError:
            damaged.append(ref.exhibit_id)
    if not ids:
        return result([], damaged=damaged)
    try:
        comps = (comparer or compare_many)(query, scans)
    except BalllinkError as exc:
        return result([], damaged=damaged, error=f"{type(exc).__name__}: {exc}")
    feats = [features_of(c, query, s) for c, s in zip(comps, scans)]
    return result(ids, comps, feats, damaged)
