"""`thread_limit`: a comparison on a Dask worker uses one thread and gives the same result;
`map_threads`: candidates side by side, each under the limit, in order, errors raised;
`keep_freed_memory` sets glibc's thresholds (why: see `balllink._malloc`)."""

from __future__ import annotations

import os
import sys
import threading
import time
import types

import numba
import numpy as np
import pytest

import balllink as bl
from balllink import _malloc, _threads
from balllink._threads import map_threads, thread_limit, threads_allowed
from balllink.comparison import _cmcr, _compare


def test_the_limit_is_per_thread_nested_and_restored():
    outside = numba.get_num_threads()
    assert threads_allowed(-1) >= 1 and threads_allowed(3) == 3
    with thread_limit(2):
        assert threads_allowed(3) == 2 and threads_allowed(-1) == min(2, os.cpu_count() or 1)
        with thread_limit(1):
            assert threads_allowed(2) == 1 and numba.get_num_threads() == 1
            seen = []
            t = threading.Thread(target=lambda: seen.append(threads_allowed(3)))
            t.start()
            t.join()
            assert seen == [3]  # another thread is not limited
        assert threads_allowed(3) == 2  # the outer limit again
    assert threads_allowed(3) == 3 and numba.get_num_threads() == outside


@pytest.fixture(scope="module")
def pair():
    """Two firings of one gun (320 px at 6.25 µm)."""
    s = bl.simulate.casings(1, 2, seed=13, difficulty="fadul-like", shape=(320, 320))
    return s.scans


@pytest.mark.parametrize("cfg", [bl.CMCConfig(), bl.CMCConfig.cmcr()], ids=["default", "cmcr"])
def test_one_thread_gives_the_same_comparison(pair, cfg, monkeypatch):
    if cfg.ccf == "cmcr":  # its window is +-30 degrees: the same casing, fresh noise
        z = pair[0].heights
        noisy = z + np.random.default_rng(1).normal(0, 0.3 * np.nanstd(z), z.shape)
        pair = (pair[0], pair[0].replace(heights=noisy.astype(np.float32)))
    free = bl.compare(*pair, config=cfg)
    pools = []
    real_pool = _cmcr.ThreadPoolExecutor
    monkeypatch.setattr(
        _cmcr, "ThreadPoolExecutor", lambda *a, **k: pools.append(k) or real_pool(*a, **k)
    )
    with thread_limit(1):
        one = bl.compare(pair[0].replace(), pair[1].replace(), config=cfg)  # fresh caches
    assert pools == []  # cmcR's two directions ran one after the other
    assert one.cmc_count == free.cmc_count and one.score == pytest.approx(free.score, abs=1e-6)
    assert one.rotation_deg == pytest.approx(free.rotation_deg, abs=1e-6)
    assert one.translation_um == pytest.approx(free.translation_um, abs=1e-4)
    assert free.cmc_count >= 6  # same gun: a real answer, not two empty ones


@pytest.fixture
def two_cores(monkeypatch):
    """Two threads allowed and Numba's layer taken as thread-safe (whatever this machine)."""
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(_threads, "numba_threadsafe", lambda: True)


def _record(x):
    time.sleep(0.05)  # long enough for the second thread to take the next item
    return x, threading.current_thread().name, threads_allowed(-1), numba.get_num_threads()


def test_map_threads_runs_side_by_side_each_under_one_thread_in_order(two_cores):
    done = []
    out = map_threads(_record, list(range(7)), on_done=done.append)
    assert [r[0] for r in out] == list(range(7)) and done == list(range(1, 8))
    assert out[0][1] == threading.current_thread().name  # the first warms in the caller
    workers = {r[1] for r in out[1:]}
    assert len(workers) == 2 and threading.current_thread().name not in workers
    assert all(r[2] == 1 and r[3] == 1 for r in out[1:])  # each under thread_limit(1)


def test_map_threads_stays_in_the_caller_under_a_limit_or_an_unsafe_numba(two_cores, monkeypatch):
    me = threading.current_thread().name
    with thread_limit(1):
        assert {r[1] for r in map_threads(_record, range(4))} == {me}
    monkeypatch.setattr(_threads, "numba_threadsafe", lambda: False)  # the workqueue layer
    assert {r[1] for r in map_threads(_record, range(4))} == {me}
    assert map_threads(_record, []) == []


def test_map_threads_raises_the_first_error_and_starts_nothing_after_it(two_cores):
    started = []

    def fn(x):
        started.append(x)
        time.sleep(0.02)
        if x == 2:
            raise ValueError("item 2 is bad")
        return x

    with pytest.raises(ValueError, match="item 2 is bad"):
        map_threads(fn, list(range(40)))
    assert len(started) < 40  # the queue was cancelled, not run to the end


def test_numba_threadsafe_names_the_layer(monkeypatch):
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    assert _threads.numba_threadsafe() is False
    monkeypatch.setattr(numba, "threading_layer", lambda: "omp")
    assert _threads.numba_threadsafe() is True

    def not_started():
        raise ValueError("Threading layer is not initialized.")

    monkeypatch.setattr(numba, "threading_layer", not_started)
    assert _threads.numba_threadsafe() is False


@pytest.mark.parametrize("cfg", [bl.CMCConfig(), bl.CMCConfig.cmcr()], ids=["default", "cmcr"])
def test_compare_many_side_by_side_equals_one_at_a_time(cfg, two_cores, monkeypatch):
    """Planted: one gun's firings (one mirrored: handedness searched) among another gun's;
    the threaded run gives each candidate the comparison it gets alone, in order."""
    s = bl.simulate.casings(2, 3, seed=21, difficulty="fadul-like", shape=(320, 320))
    gun = [int(g) for g in s.truth["firearm_id"]]
    if cfg.ccf == "cmcr":  # cmcR's window is +-30 degrees: the query again with fresh noise
        scans = [bl.preprocess(x) for x in s.scans]
        z = scans[0].heights
        rng = np.random.default_rng(2)
        noisy = [
            scans[0].replace(
                heights=(z + rng.normal(0, 0.3 * np.nanstd(z), z.shape)).astype(z.dtype)
            )
            for _ in range(2)
        ]
        query, cands, same = scans[0], [noisy[0], scans[3], noisy[1], scans[4]], [0, 2]
    else:
        scans = list(s.scans)
        m = scans[2].mirrored()  # its handedness not told: both are searched
        scans[2] = m.replace(meta={k: v for k, v in m.meta.items() if k != "handedness"})
        query, cands = scans[0], scans[1:]
        same = [i for i in range(len(cands)) if gun[i + 1] == gun[0]]
    with thread_limit(1):
        alone = bl.compare_many(query.replace(), [c.replace() for c in cands], config=cfg)
    seen, names = [], set()
    real = _compare._compare_ready

    def spy(*args, **kwargs):
        names.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(_compare, "_compare_ready", spy)
    side = bl.compare_many(query, cands, config=cfg, progress=lambda i, n: seen.append((i, n)))
    assert len(names) == 3  # the caller, then two threads side by side
    assert seen == [(i, len(cands)) for i in range(1, len(cands) + 1)]
    for a, b in zip(alone, side, strict=True):
        assert a.cmc_count == b.cmc_count and a.mirrored == b.mirrored
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert a.rotation_deg == pytest.approx(b.rotation_deg, abs=1e-6, nan_ok=True)
    other = [i for i in range(len(cands)) if i not in same]
    assert min(side[i].cmc_count for i in same) > max(side[i].cmc_count for i in other)
    if cfg.ccf != "cmcr":
        assert side[1].mirrored and not side[0].mirrored  # the planted reflection found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_keep_freed_memory_sets_glibc_thresholds(monkeypatch):
    calls = []

    def mallopt(param, value):  # the C function's stand-in (takes argtypes/restype too)
        calls.append((param, value))
        return 1

    monkeypatch.setattr(_malloc, "_done", False)
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda name: types.SimpleNamespace(mallopt=mallopt))
    assert _malloc.keep_freed_memory() is True
    assert calls == [
        (_malloc.M_MMAP_THRESHOLD, _malloc.MMAP_THRESHOLD),
        (_malloc.M_TRIM_THRESHOLD, _malloc.TRIM_THRESHOLD),
    ]
    assert _malloc.keep_freed_memory() is True and len(calls) == 2  # once per process


def test_keep_freed_memory_without_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(_malloc, "_done", False)

    def no_libc(name):
        raise OSError("not found")

    monkeypatch.setattr(_malloc.ctypes, "CDLL", no_libc)
    assert _malloc.keep_freed_memory() is False
