"""How many threads a computation may use: every core, or fewer inside `thread_limit`.

A comparison parallelises inside itself (scipy.fft ``workers``, Numba ``prange``, the two
directions of cmcR in two threads). That is right for one analyst's process, and wrong
where the parallelism is already the processes: a Dask worker per core running one task
each would start two or more threads per task, the workers would take turns on the cores,
and each would count the other's time as its own. Inside ``thread_limit(n)`` every one of
those uses at most ``n`` threads. The limit belongs to the calling thread (Numba's thread
count is per thread too), so other threads of the process are not touched.

`map_threads` is the other half: independent items (the candidates of one query) run on
one thread each, every one under ``thread_limit(1)``. A comparison's own threads share
little (its FFTs are small, its Numba loops short), while two comparisons side by side
keep both cores busy: the FFTs and Numba kernels release the GIL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["imap_threads", "map_threads", "numba_threadsafe", "thread_limit", "threads_allowed"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_local = threading.local()


def threads_allowed(wanted: int = -1) -> int:
    """Threads this thread may use for ``wanted`` (-1: every core) under its limit: the
    ``workers`` of scipy.fft, FAISS's OpenMP threads, cmcR's direction threads.

    Examples
    --------
    >>> threads_allowed(2)
    2
    >>> with thread_limit(1):
    ...     threads_allowed(2), threads_allowed(-1)
    (1, 1)
    """
    n = (os.cpu_count() or 1) if int(wanted) < 0 else max(1, int(wanted))
    limit = getattr(_local, "limit", None)
    return n if limit is None else min(n, limit)


@contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Inside: FFTs, Numba kernels and a comparison's own threads use at most ``n`` threads.

    Examples
    --------
    >>> import numba
    >>> with thread_limit(1):
    ...     numba.get_num_threads(), threads_allowed(-1)
    (1, 1)
    """
    import numba

    n = max(1, int(n))
    before, numba_before = getattr(_local, "limit", None), numba.get_num_threads()
    _local.limit = n if before is None else min(n, before)
    numba.set_num_threads(min(_local.limit, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        _local.limit = before
        numba.set_num_threads(numba_before)


def numba_threadsafe() -> bool:
    """Whether Numba's parallel kernels may run in two threads at once: its OpenMP and TBB
    layers are thread-safe, its fallback "workqueue" layer is not (it aborts the process).
    Unknown until a parallel kernel has run; then False.

    Examples
    --------
    >>> numba_threadsafe() in (True, False)
    True
    """
    import numba

    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel kernel has run in this process yet
        return False


def map_threads(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    on_done: Callable[[int], None] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, the items spread over the threads this thread may use
    (`imap_threads`, the first item warming in the calling thread).

    Parameters
    ----------
    fn : callable
        Called once per item; must be safe to call from two threads at once.
    items : sequence
        The work.
    on_done : callable, optional
        Called in the calling thread with the number of items done so far, after each.

    Returns
    -------
    list
        ``fn(item)`` for each item, in the order of ``items``.

    Examples
    --------
    >>> map_threads(lambda x: x * x, [1, 2, 3])
    [1, 4, 9]
    >>> with thread_limit(1):
    ...     map_threads(lambda x: threading.current_thread().name, ["a", "b"]) == ["MainThread"] * 2
    True
    """
    items = list(items)
    out: list[R] = []
    for r in imap_threads(fn, items, threads=len(items) - 1):
        out.append(r)
        if on_done is not None:
            on_done(len(out))
    return out


def imap_threads(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    warm: bool = True,
    threads: int | None = None,
    name: str = "balllink",
) -> Iterator[R]:
    """``fn(x)`` for each item, in order, the items spread over the threads this thread may
    use; a bounded window of items is taken from ``items`` ahead of the one yielded.

    With ``warm``, the first item runs in the calling thread with every thread it may use
    (it warms what the items share, such as a query's cached per-scan work, and starts
    Numba's threading layer); the rest run on `threads_allowed` threads (at most
    ``threads``), each under ``thread_limit(1)``. Everything runs in the calling thread
    when only one thread is allowed (a Dask worker's task, say) or when Numba's threading
    layer is not thread-safe. The first exception raised by ``fn`` is raised here, after
    the running items finish; closing the generator cancels what has not started.

    Examples
    --------
    >>> list(imap_threads(lambda x: x + 1, iter(range(5)), warm=False))
    [1, 2, 3, 4, 5]
    """
    it = iter(items)
    if warm:
        for x in it:
            yield fn(x)
            break
    n = threads_allowed() if threads is None else min(threads_allowed(), int(threads))
    if n <= 1 or not numba_threadsafe():
        yield from map(fn, it)
        return

    def one(x: T) -> R:
        with thread_limit(1):
            return fn(x)

    log.debug("imap_threads: on %d threads", n)
    window: deque = deque()
    with ThreadPoolExecutor(n, thread_name_prefix=name) as pool:
        try:
            for x in it:
                window.append(pool.submit(one, x))
                if len(window) >= 2 * n:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:  # an error, Ctrl-C or the generator closed: what has not started never will
            for f in window:
                f.cancel()
