"""Bulk ingest across processes: scans read, prepared and embedded in worker processes.

`ready_stream` runs `make_ready` (read, prepare, stored form, flags, descriptors) for each
item in a pool of ``jobs`` spawned processes, a bounded window ahead of the caller, and
yields the results in the order of the items. Only the calling process opens SQLite and
writes: `balllink.database._ingest.Ingester` stores each `Ready` as it would a scan it
had prepared itself (the same exhibit, hash and descriptors; the descriptors are handed to
the index with `balllink.features.remember_embedding`).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from .._scan import Scan
from ..features import embed
from ._exhibits import prepared_flags
from ._store import stored_form

__all__ = ["Failed", "Ready", "make_ready", "ready_stream"]


class Ready(NamedTuple):
    """One item prepared by a worker."""

    prep: Scan  #: the prepared scan in its stored form
    flags: tuple  #: `prepared_flags` of the raw scan and ``prep``
    table: np.ndarray  #: `embed` of ``prep`` (empty when nothing usable is left)


class Failed(NamedTuple):
    """One item a worker could not prepare: the exception, raised again by the caller."""

    error: BaseException


def make_ready(job: tuple[Any, Callable, Callable]) -> Ready | Failed:
    """Read (a path), prepare, take the stored form, flag and embed one item."""
    obj, read, prepare = job
    try:
        scan = obj if isinstance(obj, Scan) else read(str(obj))
        prep = stored_form(prepare(scan))
        table = embed(prep) if prep.n_valid else np.zeros((0, 0), np.float32)
        return Ready(prep, prepared_flags(scan, prep), table)
    except Exception as exc:
        return Failed(exc)


def ready_stream(
    objs: Iterable, *, read: Callable, prepare: Callable, jobs: int
) -> Iterator[Ready | Failed]:
    """`make_ready` of each object, in order, computed by ``jobs`` worker processes.

    ``read`` and ``prepare`` must be picklable (module-level functions, as the defaults
    `balllink.read_scan` and `balllink.preprocessing.prepare_if_needed` are).
    """
    window: deque[Future] = deque()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding SQLite
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for obj in objs:
            window.append(pool.submit(make_ready, (obj, read, prepare)))
            if len(window) >= 2 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
