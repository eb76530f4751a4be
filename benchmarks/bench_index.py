"""Candidate index at scale: build time, bytes per casing, query latency, recall vs exact.

What is stored (be precise about what is simulated):

* Up to ``--real`` casings (default: all of them up to 1e5) are real simulator output:
  ``bl.simulate.iter_casings(difficulty="fadul-like")``, 272×272 px at 12.5 µm (the full
  3.4 mm Fadul field on the descriptor's working grid), 4 firings per firearm, embedded with
  `bl.embed`. They are made once, in parallel, and cached (``benchmarks/simcache.py``;
  about 12 ms per casing per core: 1e5 took 20 min with 2 processes here).
* Above that (1e6), the other casings are *recombined distractors*: simulating and
  embedding 9e5 more scans does not fit this machine's time budget. Each distractor holds
  ``max_stored`` keypoints; each keypoint's descriptor is a real simulated descriptor taken
  at random from the *second half* of the real casings (firearms no query shares), moved by
  Gaussian noise whose length is 0.1 × the median nearest-neighbour distance between real
  descriptors (this breaks exact ties; noise as long as that distance pushes the copies off
  the descriptors' manifold, where they are never anyone's neighbour: measured, they then
  never reached a top 200) and renormalised; its position and orientation are uniform
  random. Each source descriptor is copied ~20 times at 1e6, so the density of descriptors
  around a query keypoint grows about as it would with 1e6 real casings. They carry no firearm
  signature and no consistent geometry, as casings of other guns do not. The table prints
  how often distractors and real non-matching casings reach a query's top 200, per casing
  stored, to show whether the distractors compete like real casings.
* Queries are real casings of the first half (themselves excluded from the figures).

Per factory: build time (fit + add), bytes per stored casing (saved index file / n), query
latency p50/p99 (one query casing per call), same-firearm recall@10/50/200, and recall
against exact search. Exact search is the same `CasingIndex` pipeline with a brute-force
float32 nearest-neighbour search over the same stored keypoints (``Flat``); without a
``Flat`` index (1e6: 34 GB) it is computed for ``--exact-queries`` queries by chunked
brute force over the regenerated vectors. Recall vs exact is reported three ways:

* ``vs_exact_evidence``: share of the exact top-10 casings with at least ``EVIDENCE``
  pose-agreeing keypoint votes that the factory also puts in its top 10 (the target). A
  casing with one or two votes has no geometric evidence: any casing whose single keypoint
  happens to be a nearest neighbour scores 1, and among 1e6 casings thousands tie there;
* ``vs_exact_top10``: the plain overlap of the two top-10 lists, ties included;
* ``vs_exact_firearm``: same-firearm recall@10 of the factory / that of exact search.
  The vector-level share of the exact ``neighbors`` nearest keypoints is also printed.

Usage::

    .venv/bin/python benchmarks/bench_index.py --n 100000 --factories Flat compressed
    .venv/bin/python benchmarks/bench_index.py --n 1000000 --factories compressed \
        --exact-queries 10

``compressed`` stands for ``bl.CasingIndex.compressed(n)``. Writes
``benchmarks/results/bench_index_<n>_<factories>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from simcache import DEFAULT_CACHE, firearm_recall, simulated_tables

import balllink as bl
from balllink.features import DESCRIPTOR_DIM, POSE_COLUMNS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CHUNK = 5000  # distractor casings per generated chunk
JITTER = 0.1  # distractor noise length / median nearest-neighbour distance (see docstring)
EVIDENCE = 3  # votes (query keypoints agreeing on one pose) that count as evidence
KS = (10, 50, 200)


class Distractors:
    """Recombined distractor casings (see the module docstring), made chunk by chunk."""

    def __init__(self, source_tables, n_keypoints: int, seed: int) -> None:
        src = np.concatenate([t[:n_keypoints, POSE_COLUMNS:] for t in source_tables])
        self.source = np.ascontiguousarray(src, dtype=np.float32)
        rng = np.random.default_rng(seed)
        probe = self.source[rng.choice(len(self.source), 500, replace=False)]
        ref = self.source[rng.choice(len(self.source), min(len(self.source), 200_000), False)]
        sim = probe @ ref.T
        sim[sim > 0.9999] = -2  # the probe itself
        d_nn = np.sqrt(np.maximum(0, 2 - 2 * sim.max(axis=1)))
        self.sigma = JITTER * float(np.median(d_nn)) / np.sqrt(DESCRIPTOR_DIM)
        self.n_keypoints = n_keypoints
        self.seed = seed

    def chunk(self, index: int, n_casings: int) -> np.ndarray:
        """Rows of ``n_casings`` casings, shape (n_casings, n_keypoints, 3 + D), float32."""
        rng = np.random.default_rng([self.seed, index])
        m = n_casings * self.n_keypoints
        desc = self.source[rng.integers(0, len(self.source), m)]
        desc = desc + rng.normal(0, self.sigma, desc.shape).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
        out = np.empty((m, POSE_COLUMNS + DESCRIPTOR_DIM), np.float32)
        r = 1600 * np.sqrt(rng.uniform(0, 1, m))
        phi = rng.uniform(-np.pi, np.pi, m)
        out[:, 0], out[:, 1] = r * np.sin(phi), r * np.cos(phi)
        out[:, 2] = rng.uniform(-np.pi, np.pi, m)
        out[:, POSE_COLUMNS:] = desc
        return out.reshape(n_casings, self.n_keypoints, -1)

    def chunks(self, n_total: int):
        for i, start in enumerate(range(0, n_total, CHUNK)):
            yield start, self.chunk(i, min(CHUNK, n_total - start))


def make_index(factory: str, n: int, args) -> bl.CasingIndex:
    kw = {
        "max_stored": args.max_stored,
        "nprobe": args.nprobe,
        "query_keypoints": args.query_keypoints or None,
    }
    if factory == "compressed":
        return bl.CasingIndex.compressed(n, **kw)
    return bl.CasingIndex(factory, **kw)


def build(index, real, distractors, n):
    t0 = time.perf_counter()
    step = max(1, len(real) // 20_000)
    index.fit(real[::step], max_vectors=1_000_000)
    t_fit = time.perf_counter() - t0
    index.add(np.arange(len(real), dtype=np.int64), real)
    print(f"  {len(index)} casings, {time.perf_counter() - t0:.0f} s", flush=True)
    if distractors is not None:
        for start, tables in distractors.chunks(n - len(real)):
            first = len(real) + start
            index.add(np.arange(first, first + len(tables), dtype=np.int64), list(tables))
            if (start // CHUNK) % 20 == 19:
                print(f"  {len(index)} casings, {time.perf_counter() - t0:.0f} s", flush=True)
    return time.perf_counter() - t0, t_fit


def exact_top(index, queries, real, distractors, n, k):
    """Exact kNN of every query keypoint by chunked brute force, then the same vote."""
    kk = index.neighbors
    s = index.max_stored
    qk = index.query_keypoints
    queries = [q[:qk] if qk else q for q in queries]
    qd = np.ascontiguousarray(np.concatenate([q[:, POSE_COLUMNS:] for q in queries]))
    best_d = np.full((len(qd), kk), np.inf, np.float32)
    best_i = np.full((len(qd), kk), -1, np.int64)

    qq = (qd.astype(np.float64) ** 2).sum(axis=1)[:, None]
    step = max(4 * kk, int(1e8 // max(1, len(qd))))  # ~1 GB of scores at a time

    def merge(vecs, offset):
        for a in range(0, len(vecs), step):
            part = vecs[a : a + step]
            # squared L2 (float16-cached vectors are not exactly unit length)
            d2 = (part.astype(np.float64) ** 2).sum(axis=1)[None, :] - 2 * (qd @ part.T)
            m = min(kk, part.shape[0])
            i = np.argpartition(d2, m - 1, axis=1)[:, :m]
            d = (np.take_along_axis(d2, i, 1) + qq).astype(np.float32)
            dd = np.concatenate([best_d, d], axis=1)
            ii = np.concatenate([best_i, i + offset + a], axis=1)
            o = np.argsort(dd, axis=1, kind="stable")[:, :kk]
            best_d[:] = np.take_along_axis(dd, o, 1)
            best_i[:] = np.take_along_axis(ii, o, 1)

    vecs = np.concatenate([t[:s, POSE_COLUMNS:] for t in real]).astype(np.float32)
    merge(vecs, 0)
    offset = len(vecs)
    del vecs
    if distractors is not None:
        for _, tables in distractors.chunks(n - len(real)):
            vecs = np.ascontiguousarray(tables[:, :s, POSE_COLUMNS:].reshape(-1, DESCRIPTOR_DIM))
            merge(vecs, offset)
            offset += len(vecs)
    out = []
    bounds = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    for qi, q in enumerate(queries):
        lab = best_i[bounds[qi] : bounds[qi + 1]]
        dist = best_d[bounds[qi] : bounds[qi + 1]]
        rows, votes, nearest = index._vote(q[:, :POSE_COLUMNS], lab, dist)
        order = np.lexsort((rows, nearest, -votes))[:k]
        out.append((index.casing_ids_[rows[order]], votes[order], lab))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=100_000, help="real simulated casings (max)")
    ap.add_argument("--factories", nargs="+", default=["Flat", "compressed"])
    ap.add_argument("--max-stored", type=int, default=80)
    ap.add_argument("--query-keypoints", type=int, default=128)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--exact-queries", type=int, default=10, help="brute force when no Flat")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    n_real = min(args.n, args.real)
    t0 = time.perf_counter()
    real, firearms = simulated_tables(n_real, cache=args.cache, jobs=args.jobs)
    print(f"{n_real} simulated casings loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    half = len(real) // 2
    rng = np.random.default_rng(args.seed)
    qsel = np.sort(rng.choice(half, size=min(args.queries, half), replace=False))
    queries = [real[i].astype(np.float32) for i in qsel]
    distractors = None
    if args.n > n_real:
        distractors = Distractors(real[half:], args.max_stored, args.seed)
        print(f"distractor jitter sigma {distractors.sigma:.4f} per component", flush=True)
    results = {
        "n": args.n,
        "real_simulated": n_real,
        "recombined_distractors": args.n - n_real,
        "queries": len(qsel),
        "evidence_votes": EVIDENCE,
        "factories": {},
    }
    exact = None
    for factory in args.factories:
        index = make_index(factory, args.n, args)
        print(f"{factory}: {index!r} {index._params()}", flush=True)
        t_build, t_fit = build(index, real, distractors, args.n)
        lat, top, top_scores = [], [], []
        for q in queries:
            t = time.perf_counter()
            ids, scores = index.search([q], k=max(KS) + 1)
            lat.append(time.perf_counter() - t)
            top.append(ids[0])
            top_scores.append(scores[0])
        rec, _ = firearm_recall(top, qsel, firearms, KS, n_real)
        # how competitive the distractors are: non-matching candidates per stored casing
        nonmate_real = nonmate_dis = 0
        for qi, i in enumerate(qsel):
            for c in top[qi][:200]:
                if c < 0 or c == i:
                    continue
                if c >= n_real:
                    nonmate_dis += 1
                elif firearms[c] != firearms[i]:
                    nonmate_real += 1
        before = index.search(queries[:5], k=10)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "i.blx"
            index.save(path)
            file_bytes = path.stat().st_size
            del index  # never two copies of a large index in memory
            index = bl.CasingIndex.load(path)
            after = index.search(queries[:5], k=10)
            same = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        r = {
            "params": index._params(),
            "build_s": t_build,
            "fit_s": t_fit,
            "vectors": index.ntotal,
            "bytes_per_casing_file": file_bytes / args.n,
            "latency_ms_p50": 1e3 * float(np.percentile(lat, 50)),
            "latency_ms_p99": 1e3 * float(np.percentile(lat, 99)),
            "save_load_identical": bool(same),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            **{f"same_firearm_recall@{k}": v for k, v in rec.items()},
        }
        if distractors is not None:
            share = (args.n - n_real) / (args.n - 1)
            r["distractor_share_of_nonmate_top200"] = nonmate_dis / max(
                1, nonmate_dis + nonmate_real
            )
            r["distractor_share_of_stored"] = share
        if factory == "Flat":
            exact = [(t[:10], sc[:10], None, t) for t, sc in zip(top, top_scores, strict=True)]
        elif exact is None and args.exact_queries:
            t = time.perf_counter()
            m = min(args.exact_queries, len(queries))
            got = exact_top(index, queries[:m], real, distractors, args.n, max(KS) + 1)
            exact = [(ids[:10], sc[:10], lab, ids) for ids, sc, lab in got]
            r["exact_s"] = time.perf_counter() - t
        if exact is not None:
            m = len(exact)
            inter, strong, vec = [], [], []
            for i in range(m):
                ids_x, sc_x, lab_x, _ = exact[i]
                me = qsel[i]  # the query is stored too: it is in both lists, not counted
                got = set(top[i][:10].tolist()) - {me}
                sc_x, ids_x = sc_x[ids_x != me], ids_x[ids_x != me]
                inter.append(
                    len(set(ids_x[ids_x >= 0].tolist()) & got) / max(1, (ids_x >= 0).sum())
                )
                keep = ids_x[(ids_x >= 0) & (sc_x >= EVIDENCE)].tolist()
                if keep:
                    strong.append(len(set(keep) & got) / len(keep))
                if lab_x is not None:
                    q = queries[i][: index.query_keypoints or None]
                    index._apply_search_params()
                    _, lab = index.index_.search(
                        np.ascontiguousarray(q[:, POSE_COLUMNS:]), lab_x.shape[1]
                    )
                    vec.append(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(lab, lab_x)]))
            exact_rec, _ = firearm_recall([e[3] for e in exact], qsel[:m], firearms, KS, n_real)
            mine, _ = firearm_recall(top[:m], qsel[:m], firearms, KS, n_real)
            r["exact_queries"] = m
            r["vs_exact_evidence"] = float(np.mean(strong)) if strong else float("nan")
            r["vs_exact_top10"] = float(np.mean(inter))
            r["vs_exact_firearm"] = mine[10] / max(exact_rec[10], 1e-9)
            r["exact_same_firearm_recall@10"] = exact_rec[10]
            if vec:
                r["vs_exact_vector_neighbours"] = float(np.mean(vec))
        results["factories"][factory] = r
        print(factory, json.dumps(r), flush=True)
        del index
    print(f"\n{args.n} casings ({n_real} simulated, {args.n - n_real} recombined distractors)")
    print(
        f"{'factory':12s} {'build s':>8s} {'B/casing':>9s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'R@10':>5s} {'R@50':>5s} {'R@200':>6s} {'evid.':>6s} {'top10':>6s} {'firearm':>7s}"
    )
    for f, r in results["factories"].items():
        print(
            f"{f:12s} {r['build_s']:8.0f} {r['bytes_per_casing_file']:9.0f} "
            f"{r['latency_ms_p50']:7.1f} {r['latency_ms_p99']:7.1f} "
            f"{r['same_firearm_recall@10']:5.3f} {r['same_firearm_recall@50']:5.3f} "
            f"{r['same_firearm_recall@200']:6.3f} "
            f"{r.get('vs_exact_evidence', float('nan')):6.3f} "
            f"{r.get('vs_exact_top10', float('nan')):6.3f} "
            f"{r.get('vs_exact_firearm', float('nan')):7.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    tag = "_".join("".join(c if c.isalnum() else "-" for c in f) for f in args.factories)
    out = RESULTS / f"bench_index_{args.n}_{tag}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
