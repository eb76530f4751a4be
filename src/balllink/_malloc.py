"""Keep freed memory for reuse in a process that compares scans (glibc's ``mallopt``).

A comparison allocates and frees many arrays of a few MB (a 560 x 560 grid of float64 is
2.5 MB). glibc serves allocations above its *mmap threshold* with fresh pages from the
kernel and gives them back on ``free``, so the next array is zero-filled again, page by
page: in a Dask worker (whose nanny sets ``MALLOC_TRIM_THRESHOLD_``, which freezes that
threshold at 128 KiB) this was a fifth of a comparison's time spent in the kernel, and two
workers doing it at once slowed each other further. Raising the mmap threshold to
glibc's maximum (32 MiB) and the trim threshold to 512 MiB keeps those arrays in the heap,
reused without a page fault; memory above that is still returned.

Linux with glibc only; elsewhere (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers (glibc ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); True when set.

    Returns False, changing nothing, where the C library is not glibc.

    Examples
    --------
    >>> ok = keep_freed_memory()
    >>> ok in (True, False)
    True
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if ok:
        log.debug("malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    _done = ok
    return ok
