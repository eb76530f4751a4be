"""How many threads a computation may use: every core, or fewer inside `thread_limit`.

A comparison parallelises inside itself (scipy.fft ``workers``, Numba ``prange``, the two
directions of cmcR in two threads). That is right for one analyst's process, and wrong
where the parallelism is already the processes: a Dask worker per core running one task
each would start two or more threads per task, the workers would take turns on the cores,
and each would count the other's time as its own. Inside ``thread_limit(n)`` every one of
those uses at most ``n`` threads. The limit belongs to the calling thread (Numba's thread
count is per thread too), so other threads of the process are not touched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["thread_limit", "threads_allowed"]

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
