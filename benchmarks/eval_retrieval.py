"""Retrieval quality of each descriptor tried, on Fadul and on simulated sets.

Fadul: the 40 scans are stored at their own orientation; each query is the same scan
rotated by a random angle (0–360°) and shifted by up to ±20 px, so that nothing relies on
the lab's habit of scanning casings in a similar orientation. The query's own casing is
excluded from its ranking. Figures: recall@10 of same-gun casings (mean over queries) and
the share of queries whose first candidate is a same-gun casing.

Simulated: recall@K, K = 10, 50, 200, of same-firearm casings among 1e4 or 1e5 casings
simulated in full ("fadul-like", 272×272 px at 12.5 µm, 4 firings per firearm; made once in
parallel and cached by ``simcache.py``), each query a stored casing (itself excluded), for
``CasingIndex()`` (exact; up to 2e4 casings) and ``CasingIndex.compressed(n)``.

Descriptors tried:
  radial_psd     global radially averaged power spectrum (rotation invariant)
  ring_fourier   global |angular Fourier| of polar-unwrapped rings around the centroid
  rotated_thumbs 36 rotated 64×64 thumbnails per stored casing (50 µm/px), max cosine
  keypoints_bag  local keypoints, neighbours counted per casing without pose agreement
  keypoints_vote local keypoints + Hough vote over (casing, θ, dy, dx)  [shipped]
  keypoints_vlad one pooled VLAD vector of the keypoints per casing (32-word codebook
                 fitted on other simulated casings)
  keypoints_vote_compressed  the same in CasingIndex.compressed(n) (IVF-PQ, 80 stored and
                 128 query keypoints)

Usage::

    .venv/bin/python benchmarks/eval_retrieval.py [--fadul DIR] [--no-fadul]
        [--sim 10000 100000] [--sim-index default compressed] [--jobs 2]

Writes ``benchmarks/results/eval_retrieval.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from simcache import DEFAULT_CACHE, firearm_recall, simulated_tables

import balllink as bl
from balllink.features import POSE_COLUMNS, embed

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# ---------------------------------------------------------------- data
def read_fadul(folder: Path):
    files = sorted(folder.glob("*.x3p"))
    with open(folder / "truth.csv", newline="") as fh:
        truth = {row["file"]: row["firearm"] for row in csv.DictReader(fh)}
    scans = []
    for p in files:
        try:
            scans.append(bl.read_scan(p))
        except NotImplementedError:
            import x3pio

            z = x3pio.read(p).layers[0].z * 1e6
            scans.append(bl.Scan(z, spacing_um=6.25, source=str(p)))
    labels = np.array([truth[p.name] for p in files])
    return scans, labels


def rotate_scan(scan: bl.Scan, deg: float, shift_px=(0.0, 0.0)) -> bl.Scan:
    """Rotate (about the centre, canvas enlarged) and shift a scan, NaN-aware."""
    z = scan.masked_heights()
    ok = np.isfinite(z)
    z0 = np.where(ok, z, 0)
    zr = ndimage.shift(ndimage.rotate(z0, deg, reshape=True, order=1), shift_px, order=1)
    okr = ndimage.shift(
        ndimage.rotate(ok.astype(np.float32), deg, reshape=True, order=1), shift_px, order=1
    )
    zr = np.where(okr > 0.99, zr / np.maximum(okr, 1e-6), np.nan)
    return scan.replace(heights=zr.astype(np.float32), mask=None)


# ---------------------------------------------------------------- global baselines
def _small(scan: bl.Scan, spacing: float):
    f = max(1, round(spacing / scan.spacing_um[0]))
    z = scan.masked_heights()
    ny, nx = z.shape[0] // f * f, z.shape[1] // f * f
    b = z[:ny, :nx].reshape(ny // f, f, nx // f, f)
    ok = np.isfinite(b).sum(axis=(1, 3))
    s = np.nansum(b, axis=(1, 3))
    out = np.where(ok * 2 >= f * f, s / np.maximum(ok, 1), np.nan)
    return out


def _centroid(ok):
    iy, ix = np.nonzero(ok)
    return iy.mean(), ix.mean()


def radial_psd(scan):
    z = _small(scan, 12.5)
    z0 = np.where(np.isfinite(z), z, 0)
    p = np.abs(np.fft.fftshift(np.fft.fft2(z0, s=(256, 256)))) ** 2
    yy, xx = np.mgrid[-128:128, -128:128]
    r = np.hypot(yy, xx).astype(int)
    v = np.bincount(r.ravel(), p.ravel(), minlength=129)[2:128] / np.maximum(
        np.bincount(r.ravel(), minlength=129)[2:128], 1
    )
    v = np.log(v + 1e-9)
    v -= v.mean()
    return v / np.linalg.norm(v)


def ring_fourier(scan):
    z = _small(scan, 12.5)
    ok = np.isfinite(z)
    cy, cx = _centroid(ok)
    radii = np.linspace(20, 130, 24)
    ang = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    yy = cy + radii[:, None] * np.sin(ang)
    xx = cx + radii[:, None] * np.cos(ang)
    s = ndimage.map_coordinates(np.where(ok, z, 0), [yy.ravel(), xx.ravel()], order=1)
    s = s.reshape(len(radii), -1)
    v = np.abs(np.fft.rfft(s, axis=1))[:, 1:49].ravel()
    v = np.log1p(v)
    v -= v.mean()
    return v / np.linalg.norm(v)


def _thumb(z, cy, cx, deg):
    zr = ndimage.rotate(np.where(np.isfinite(z), z, 0), deg, reshape=False, order=1)
    # rotation about the array centre: move the centroid accordingly
    c = (np.array(z.shape) - 1) / 2
    t = np.radians(deg)
    dy, dx = cy - c[0], cx - c[1]
    ry = c[0] + np.cos(t) * dy - np.sin(t) * dx
    rx = c[1] + np.sin(t) * dy + np.cos(t) * dx
    yy, xx = np.mgrid[-32:32, -32:32]
    v = ndimage.map_coordinates(zr, [(yy + ry).ravel(), (xx + rx).ravel()], order=1).ravel()
    v = v - v.mean()
    return v / max(np.linalg.norm(v), 1e-9)


def rotated_thumbs(scan, n_rot):
    z = _small(scan, 50.0)
    cy, cx = _centroid(np.isfinite(z))
    return np.stack([_thumb(z, cy, cx, 360.0 * i / n_rot) for i in range(n_rot)])


# ---------------------------------------------------------------- scoring
class Vlad:
    """Pooled keypoint vector (VLAD): residuals to a 32-word codebook, intra-normalised,
    signed square root, L2-normalised (3 328 floats). The codebook is fitted on 1 000
    simulated "fadul-like" casings of another seed, never on the evaluated scans."""

    def __init__(self, words: int = 32, seed: int = 3) -> None:
        from scipy.cluster.vq import kmeans2

        stream = bl.simulate.iter_casings(
            500, 2, seed=seed, difficulty="fadul-like", shape=(272, 272), spacing_um=12.5
        )
        x = np.concatenate([embed(s)[:128, POSE_COLUMNS:] for s, _ in stream])
        self.words, _ = kmeans2(x.astype(np.float64), words, seed=seed, minit="++")
        self.words = self.words.astype(np.float32)

    def __call__(self, table: np.ndarray) -> np.ndarray:
        x = np.asarray(table[:, POSE_COLUMNS:], np.float32)
        word = ((x[:, None, :] - self.words[None]) ** 2).sum(-1).argmin(1)
        v = np.zeros_like(self.words)
        np.add.at(v, word, x - self.words[word])
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        v = (np.sign(v) * np.sqrt(np.abs(v))).ravel()
        return v / max(np.linalg.norm(v), 1e-9)


def figures(sim: np.ndarray, labels: np.ndarray, ks=(10,)):
    """sim[i, j]: similarity of query i to stored casing j (query excluded)."""
    n = len(labels)
    sim = sim.astype(np.float64).copy()
    np.fill_diagonal(sim, -np.inf)
    out = {f"recall@{k}": [] for k in ks}
    first = []
    rng = np.random.default_rng(0)
    for i in range(n):
        perm = rng.permutation(n)  # ties broken at random, never by file order
        order = perm[np.argsort(-sim[i, perm], kind="stable")]
        mates = labels == labels[i]
        mates[i] = False
        if not mates.any():
            continue
        for k in ks:
            out[f"recall@{k}"].append(mates[order[:k]].sum() / mates.sum())
        first.append(mates[order[0]])
    res = {key: float(np.mean(v)) for key, v in out.items()}
    res["first_same_gun"] = float(np.mean(first))
    return res


def index_similarity(index: bl.CasingIndex, queries, ids: np.ndarray, n: int) -> np.ndarray:
    """Dense (n_queries, n) similarity from an index search (unlisted casings score -1)."""
    got, scores = index.search(queries, k=n)
    pos = {int(c): j for j, c in enumerate(ids)}
    sim = np.full((len(queries), n), -1.0)
    for i in range(len(queries)):
        for c, s in zip(got[i], scores[i], strict=True):
            if c >= 0:
                sim[i, pos[int(c)]] = s
    return sim


def eval_fadul(folder: Path, seed: int = 0, max_stored: int = 128) -> dict:
    scans, labels = read_fadul(folder)
    n = len(scans)
    rng = np.random.default_rng(seed)
    poses = [(rng.uniform(0, 360), rng.uniform(-20, 20, 2)) for _ in range(n)]
    queries = [rotate_scan(s, a, t) for s, (a, t) in zip(scans, poses, strict=True)]
    out = {}

    def timed(fn, items):
        t0 = time.perf_counter()
        res = [fn(s) for s in items]
        return res, (time.perf_counter() - t0) / len(items)

    for name, fn in [("radial_psd", radial_psd), ("ring_fourier", ring_fourier)]:
        db, t_db = timed(fn, scans)
        qv, _ = timed(fn, queries)
        sim = np.stack(qv) @ np.stack(db).T
        out[name] = figures(sim, labels) | {"s_per_scan": t_db, "floats_per_casing": len(db[0])}

    db, t_db = timed(lambda s: rotated_thumbs(s, 36), scans)
    qv, _ = timed(lambda s: rotated_thumbs(s, 1)[0], queries)
    sim = np.stack([[float((d @ q).max()) for d in db] for q in qv])
    out["rotated_thumbs"] = figures(sim, labels) | {
        "s_per_scan": t_db,
        "floats_per_casing": int(db[0].size),
    }

    db, t_db = timed(embed, scans)
    qv, _ = timed(embed, queries)
    ids = np.random.default_rng(seed + 1).permutation(n).astype(np.int64) + 1000
    index = bl.CasingIndex(max_stored=max_stored)
    index.add(ids, db)
    # bag of neighbours: count neighbours per casing, no pose agreement
    bag = np.zeros((n, n))
    descs = np.concatenate([d[:, POSE_COLUMNS:] for d in db])
    owner = np.concatenate([np.full(len(d), j) for j, d in enumerate(db)])
    for i, q in enumerate(qv):
        s = q[:, POSE_COLUMNS:] @ descs.T
        nn = np.argpartition(-s, index.neighbors, axis=1)[:, : index.neighbors]
        bag[i] = np.bincount(owner[nn.ravel()], minlength=n)
    kp_per = float(np.mean([len(d) for d in db]))
    out["keypoints_bag"] = figures(bag, labels) | {"s_per_scan": t_db, "keypoints": kp_per}
    vlad = Vlad()
    sim = np.stack([vlad(q) for q in qv]) @ np.stack([vlad(d[:max_stored]) for d in db]).T
    out["keypoints_vlad"] = figures(sim, labels) | {"s_per_scan": t_db, "floats_per_casing": 3328}
    compressed = bl.CasingIndex.compressed(n)
    compressed.add(ids, db)
    out["keypoints_vote_compressed"] = figures(index_similarity(compressed, qv, ids, n), labels) | {
        "s_per_scan": t_db,
        "index": repr(compressed),
    }
    sim = index_similarity(index, qv, ids, n)
    out["keypoints_vote"] = figures(sim, labels) | {
        "s_per_scan": t_db,
        "keypoints": kp_per,
        "floats_per_casing": kp_per * (POSE_COLUMNS + bl.features.DESCRIPTOR_DIM),
    }
    # half of the queries exported mirrored (rows reversed), searched with and without the
    # handedness vote
    flipped = [q.mirrored() if i % 2 else q for i, q in enumerate(queries)]
    qm, _ = timed(embed, flipped)
    out["keypoints_vote_half_mirrored"] = figures(index_similarity(index, qm, ids, n), labels)
    same = bl.CasingIndex(max_stored=max_stored, handedness="same")
    same.add(ids, db)
    out["keypoints_vote_half_mirrored_no_handedness"] = figures(
        index_similarity(same, qm, ids, n), labels
    )
    # cost of the mirror vote: the same queries, both indexes, timed in this run
    for key, idx in (
        ("keypoints_vote_half_mirrored", index),
        ("keypoints_vote_half_mirrored_no_handedness", same),
    ):
        t0 = time.perf_counter()
        for _ in range(3):
            idx.search(qm, k=10)
        out[key]["search_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / (3 * len(qm))
    return out


def eval_simulated(n_casings: int, *, configs, cache, jobs, n_queries=200, seed=0) -> dict:
    """recall@K of same-firearm casings among ``n_casings`` simulated ones, per index config.

    The casings come from ``simcache`` ("fadul-like", 272x272 px at 12.5 um, 4 firings per
    firearm, made once and cached); each query is a stored casing (itself excluded).
    """
    tables, fids = simulated_tables(n_casings, cache=cache, jobs=jobs)
    cids = np.arange(len(tables), dtype=np.int64)
    rng = np.random.default_rng(seed)
    qsel = rng.choice(len(tables), size=min(n_queries, len(tables)), replace=False)
    ks = (10, 50, 200)
    out = {}
    if "vlad" in configs:  # pooled vector alone: mates among its top K
        vlad = Vlad()
        pooled = np.stack([vlad(t.astype(np.float32)[:128]) for t in tables])
        sim = np.stack([vlad(tables[i].astype(np.float32)) for i in qsel]) @ pooled.T
        sim[np.arange(len(qsel)), qsel] = -np.inf
        order = np.argsort(-sim, axis=1)[:, :1000]
        rec, _ = firearm_recall(order, qsel, fids, (*ks, 1000))
        out["vlad"] = {f"recall@{k}": v for k, v in rec.items()}
        print(f"sim {n_casings} vlad: {json.dumps(out['vlad'])}", flush=True)
    for name in [c for c in configs if c != "vlad"]:
        index = bl.CasingIndex() if name == "default" else bl.CasingIndex.compressed(n_casings)
        t0 = time.perf_counter()
        if name == "compressed":  # trained on a spread sample, as bench_index does
            index.fit(tables[:: max(1, len(tables) // 20_000)], max_vectors=1_000_000)
        index.add(cids, tables)
        t_add = time.perf_counter() - t0
        t0 = time.perf_counter()
        got, _ = index.search([tables[i].astype(np.float32) for i in qsel], k=max(ks) + 1)
        t_search = (time.perf_counter() - t0) / len(qsel)
        rec, first = firearm_recall(got, qsel, fids, ks)
        out[name] = {
            "n_casings": len(tables),
            "index": repr(index),
            "params": index._params(),
            "add_s": t_add,
            "search_s_per_query": t_search,
            **{f"recall@{k}": v for k, v in rec.items()},
            "first_same_gun": first,
            "n_queries": len(qsel),
        }
        print(f"sim {n_casings} {name}: {json.dumps(out[name])}", flush=True)
        del index
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fadul", type=Path, default=HERE.parents[1] / "shared/data/fadul")
    ap.add_argument("--sim", type=int, nargs="*", default=[])
    ap.add_argument(
        "--sim-index",
        nargs="+",
        default=["default", "vlad", "compressed"],
        help="'default' = CasingIndex() (exact), 'vlad' (pooled vector; both skipped above "
        "2e4 casings), 'compressed'",
    )
    ap.add_argument("--sim-queries", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-fadul", action="store_true")
    ap.add_argument("--out", default="")
    ap.add_argument("--max-stored", type=int, default=128, help="keypoints kept per casing")
    args = ap.parse_args(argv)
    results = {}
    if args.fadul.exists() and not args.no_fadul:
        results["fadul"] = eval_fadul(args.fadul, max_stored=args.max_stored)
        print(f"Fadul ({args.fadul}), queries rotated 0-360 deg + shifted, query excluded")
        print(f"{'descriptor':16s} {'recall@10':>9s} {'first':>6s} {'ms/scan':>8s}")
        for name, r in results["fadul"].items():
            extra = (
                f"  search {r['search_ms_per_query']:.1f} ms/query"
                if "search_ms_per_query" in r
                else ""
            )
            print(
                f"{name:16s} {r['recall@10']:9.3f} {r['first_same_gun']:6.3f} "
                f"{1e3 * r.get('s_per_scan', float('nan')):8.1f}{extra}"
            )
    for n in args.sim:
        configs = [c for c in args.sim_index if c == "compressed" or n <= 20_000]
        results[f"sim_{n}"] = eval_simulated(
            n, configs=configs, cache=args.cache, jobs=args.jobs, n_queries=args.sim_queries
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or "eval_retrieval.json")
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
