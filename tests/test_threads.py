"""`thread_limit`: a comparison on a Dask worker uses one thread and gives the same result;
`keep_freed_memory` sets glibc's thresholds (why: see `balllink._malloc`)."""

from __future__ import annotations

import os
import sys
import threading
import types

import numba
import numpy as np
import pytest

import balllink as bl
from balllink import _malloc
from balllink._threads import thread_limit, threads_allowed
from balllink.comparison import _cmcr


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
