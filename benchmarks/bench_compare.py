"""Speed of bl.compare on Fadul scans (about 560 x 560 at 6.25 µm).

Both-direction comparisons per second with ``CMCConfig.cmcr()`` and with the default
(full 360 degrees), for a single pair and for ``compare_many`` over 100 candidates (the 40
Fadul files reused), with a breakdown of the time (FFT, Numba kernels, the rest = Python /
NumPy glue) and the FLOP count of the FFTs per comparison against this machine's measured
FFT throughput. Prints a table and writes ``benchmarks/results/bench_compare.json``.

    .venv/bin/python benchmarks/bench_compare.py [--data DIR] [--pairs N] [--many N]

The machine is shared: compare figures measured in one run (ratios), not across runs. "CPU
s" is the process CPU time per comparison (all threads), less sensitive to other users'
load than the wall clock.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.fft as sfft

import balllink as bl
from balllink.preprocessing import prepare_if_needed

C = importlib.import_module("balllink.comparison")
K = importlib.import_module("balllink._kernels")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"
# the default before the cell high-pass (commit 52daddb), timed in the same run for the ratio
OLD_DEFAULT = bl.CMCConfig(cell_highpass_um=0.0, correlation_threshold=0.45, max_missing=0.85)
CMCR_SECONDS = (40.0, 80.0)  # cmcR 0.1.11 per both-direction pair on this machine (issue 4)


class Meter:
    """Wraps scipy.fft and the Numba kernels to split time and count FFT FLOPs."""

    def __init__(self):
        self.fft_s = 0.0
        self.kernel_s = 0.0
        self.flops = 0.0
        self._orig = []

    def _fft_wrap(self, fn, inverse):
        def wrapped(x, *args, **kw):
            t0 = time.perf_counter()
            out = fn(x, *args, **kw)
            self.fft_s += time.perf_counter() - t0
            real = out if inverse else x
            real = np.asarray(real)
            n2 = real.shape[-2] * real.shape[-1]
            batch = real.size // max(1, n2)
            # 2.5 N log2 N flops for a real 2-D transform of N points
            self.flops += batch * 2.5 * n2 * math.log2(max(2, n2))
            return out

        return wrapped

    def _kernel_wrap(self, fn):
        def wrapped(*args, **kw):
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            self.kernel_s += time.perf_counter() - t0
            return out

        return wrapped

    def __enter__(self):
        mod = sfft  # every stage calls scipy.fft.<fn> at run time, so this times them all
        for name in ("rfft2", "irfft2"):
            self._orig.append((mod, name, getattr(mod, name)))
        for mod, name, fn in self._orig:
            setattr(mod, name, self._fft_wrap(fn, name.startswith("i")))
        for name in K.__all__:
            self._orig.append((K, name, getattr(K, name)))
            setattr(K, name, self._kernel_wrap(getattr(K, name)))
        return self

    def __exit__(self, *exc):
        for mod, name, fn in reversed(self._orig):
            setattr(mod, name, fn)


def fft_throughput(repeat: int = 5) -> float:
    """GFLOP/s of batched float32 rfft2 + irfft2 (256 x 256, batch 32, both workers)."""
    x = np.random.default_rng(0).standard_normal((32, 256, 256)).astype(np.float32)
    sfft.irfft2(sfft.rfft2(x, workers=2), s=(256, 256), workers=2)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        sfft.irfft2(sfft.rfft2(x, workers=2), s=(256, 256), workers=2)
        best = min(best, time.perf_counter() - t0)
    n = 256 * 256
    return 2 * 32 * 2.5 * n * math.log2(n) / best / 1e9


def time_pairs(fn, pairs, repeat=1):
    times = []
    c0 = time.process_time()
    with Meter() as m:
        for a, b in pairs:
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(a, b)
                times.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
    total = sum(times)
    n = len(times)
    return {
        "n": n,
        "cpu_s": cpu / n,
        "median_s": float(np.median(times)),
        "mean_s": total / n,
        "per_second": n / total,
        "fft_share": m.fft_s / total,
        "kernel_share": m.kernel_s / total,
        "python_share": max(0.0, 1 - (m.fft_s + m.kernel_s) / total),
        "fft_gflop_per_comparison": m.flops / n / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "fadul")
    ap.add_argument("--pairs", type=int, default=4, help="single pairs timed per method")
    ap.add_argument("--many", type=int, default=100, help="candidates for compare_many")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    files = sorted(args.data.glob("*.x3p"))
    # prepared once, outside every timing (read Fadul files carry no claim to be prepared)
    scans = [prepare_if_needed(bl.read_scan(f)) for f in files]
    rng = np.random.default_rng(0)
    idx = rng.choice(len(scans), size=(args.pairs, 2), replace=False if args.pairs * 2 <= len(
        scans) else True)  # fmt: skip
    pairs = [(scans[i], scans[j]) for i, j in idx]
    gflops = fft_throughput()
    # warm up (Numba compilation, caches)
    bl.compare(scans[0], scans[1])
    bl.compare(scans[0], scans[1], method="cmcr")

    res = {"machine_fft_gflops": gflops, "cpu_count": os.cpu_count()}
    res["cmcr_single"] = time_pairs(lambda a, b: bl.compare(a, b, method="cmcr"), pairs[:2])
    res["default_single"] = time_pairs(lambda a, b: bl.compare(a, b), pairs)
    q, cands = scans[0], [scans[1 + i % (len(scans) - 1)] for i in range(args.many)]
    single = bl.CMCConfig(handedness="same")
    for key, cfg in (
        ("default_many", None),
        ("single_handedness_many", single),
        ("old_default_many", replace(OLD_DEFAULT, handedness="same")),
    ):
        for s in [q, *cands]:  # per-scan preparation (cached per scan), outside the timing
            C.prepared(s, cfg or bl.CMCConfig())
            if (cfg or bl.CMCConfig()).handedness != "same":
                C.prepared(C.mirror_scan(s), cfg or bl.CMCConfig())
        c0 = time.process_time()
        with Meter() as m:
            t0 = time.perf_counter()
            bl.compare_many(q, cands, config=cfg)
            dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        res[key] = {
            "n": len(cands),
            "cpu_s": cpu / len(cands),
            "mean_s": dt / len(cands),
            "per_second": len(cands) / dt,
            "fft_share": m.fft_s / dt,
            "kernel_share": m.kernel_s / dt,
            "python_share": max(0.0, 1 - (m.fft_s + m.kernel_s) / dt),
            "fft_gflop_per_comparison": m.flops / len(cands) / 1e9,
        }
    res["cmcr_speedup_vs_cmcR"] = [s / res["cmcr_single"]["mean_s"] for s in CMCR_SECONDS]

    print(f"machine FFT throughput (float32 rfft2+irfft2, 2 workers): {gflops:.2f} GFLOP/s")
    hdr = (
        f"{'method':<22}{'n':>5}{'wall s':>9}{'CPU s':>8}{'cmp/s':>8}{'FFT':>7}{'kern':>7}{'py':>7}"
    )
    print(hdr + f"{'FFT GFLOP':>11}{'FFT-bound s':>13}")
    keys = ("cmcr_single", "default_single", "default_many", "single_handedness_many")
    for key in (*keys, "old_default_many"):
        r = res[key]
        print(
            f"{key:<22}{r['n']:>5}{r['mean_s']:>9.3f}{r['cpu_s']:>8.3f}{r['per_second']:>8.2f}"
            f"{r['fft_share']:>7.0%}{r['kernel_share']:>7.0%}{r['python_share']:>7.0%}"
            f"{r['fft_gflop_per_comparison']:>11.3f}"
            f"{r['fft_gflop_per_comparison'] / gflops:>13.3f}"
        )
    ratio = res["default_many"]["mean_s"] / res["single_handedness_many"]["mean_s"]
    res["handedness_search_cost_ratio"] = ratio
    print(
        f"default (both handedness searched) / single handedness, compare_many, same run: "
        f"{ratio:.2f}x ({1e3 * res['default_many']['mean_s']:.0f} vs "
        f"{1e3 * res['single_handedness_many']['mean_s']:.0f} ms per comparison)"
    )
    lo, hi = res["cmcr_speedup_vs_cmcR"]
    print(f"cmcr() vs cmcR 0.1.11 (40-80 s per pair here): {lo:.0f}x - {hi:.0f}x faster")
    print(f"default: all 780 Fadul pairs would take {780 * res['default_many']['mean_s']:.0f} s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    res["load_average"] = os.getloadavg()[0]
    (RESULTS / "bench_compare.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
