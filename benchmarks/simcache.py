"""Descriptor tables of large simulated sets, generated in parallel and cached on disk.

Retrieval at 1e5 casings needs 1e5 simulated scans embedded (about 12 ms each here), so
the benchmarks share one cache. A set of ``n`` casings is the first ``n`` casings of the
sequence: firearms 0, 1, 2, ... of ``bl.simulate.iter_casings(..., seed=base_seed)`` (4
firings each) up to 50 000 casings, then the same with ``seed=base_seed + 1``, and so on.
The simulator seeds every firearm and firing on its own, so a set is a prefix of any
larger set and a shard (1 250 firearms = 5 000 casings) can be made alone, in any order,
by any worker. Firearm ids are ``part * 1_000_000 + firearm`` (``part`` = seed offset).

Shards hold the `bl.embed` rows in float16 (half the disk; descriptors are unit vectors,
so the rounding is < 1e-3 of a component) with the keypoint counts and firearm ids.

    from simcache import simulated_tables
    tables, firearms = simulated_tables(100_000, jobs=2)
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

import balllink as bl

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / "cache"
PER_FIREARM = 4
SHARD_FIREARMS = 1250
SHARDS_PER_SEED = 10  # 50 000 casings per seed
SHAPE = (272, 272)  # the 3.4 mm Fadul field at 12.5 um (the descriptor's working grid)
SPACING_UM = 12.5


def _key(difficulty: str, base_seed: int) -> str:
    v = bl.features.DESCRIPTOR_VERSION
    return f"{v}-{difficulty}-{SHAPE[0]}x{SHAPE[1]}-{SPACING_UM:g}um-seed{base_seed}"


def _shard_path(cache: Path, difficulty: str, base_seed: int, part: int, shard: int) -> Path:
    return cache / _key(difficulty, base_seed) / f"part{part}_shard{shard:03d}.npz"


def _make_shard(args) -> str:
    cache, difficulty, base_seed, part, shard = args
    path = _shard_path(cache, difficulty, base_seed, part, shard)
    if path.exists():
        return str(path)
    rows, counts, firearms = [], [], []
    stream = bl.simulate.iter_casings(
        SHARD_FIREARMS * (shard + 1),
        PER_FIREARM,
        seed=base_seed + part,
        difficulty=difficulty,
        shape=SHAPE,
        spacing_um=SPACING_UM,
        first_firearm=SHARD_FIREARMS * shard,
    )
    for scan, truth in stream:
        table = bl.embed(scan)
        rows.append(table.astype(np.float16))
        counts.append(len(table))
        firearms.append(part * 1_000_000 + int(truth["firearm_id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp, rows=np.concatenate(rows), counts=np.asarray(counts), firearm=np.asarray(firearms)
    )
    tmp.replace(path)
    return str(path)


def firearm_recall(lists, qsel, firearms, ks, n_real=None) -> tuple[dict, float]:
    """Same-firearm recall@K over ranked candidate lists, and the share ranked first.

    ``lists[q]`` ranks casing indices for query casing ``qsel[q]`` (-1 = padding; the query
    itself is skipped). Indices ``>= n_real`` (distractors) stay in the ranking as misses.
    """
    n_real = len(firearms) if n_real is None else n_real
    rec: dict[int, list] = {k: [] for k in ks}
    first = []
    for qi, i in enumerate(qsel):
        lst = [c for c in np.asarray(lists[qi]).tolist() if c != i and c >= 0]
        mates = (firearms[:n_real] == firearms[i]).sum() - 1
        hits = np.array([c < n_real and firearms[c] == firearms[i] for c in lst], bool)
        for k in ks:
            rec[k].append(hits[:k].sum() / mates)
        first.append(bool(hits[:1].any()))
    return {k: float(np.mean(v)) for k, v in rec.items()}, float(np.mean(first))


def simulated_tables(
    n: int,
    *,
    difficulty: str = "fadul-like",
    base_seed: int = 7,
    cache: Path | str = DEFAULT_CACHE,
    jobs: int = 2,
    verbose: bool = True,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Embedded tables (float16) and firearm ids of the first ``n`` casings (see module doc)."""
    cache = Path(cache)
    per_shard = SHARD_FIREARMS * PER_FIREARM
    n_shards = -(-n // per_shard)
    todo = [
        (cache, difficulty, base_seed, s // SHARDS_PER_SEED, s % SHARDS_PER_SEED)
        for s in range(n_shards)
    ]
    missing = [t for t in todo if not _shard_path(*t).exists()]
    if missing and verbose:
        print(
            f"simulating + embedding {len(missing) * per_shard} casings into {cache} "
            f"({jobs} processes)",
            flush=True,
        )
    t0 = time.perf_counter()
    if missing:
        with mp.get_context("spawn").Pool(max(1, jobs)) as pool:
            for k, p in enumerate(pool.imap_unordered(_make_shard, missing), 1):
                if verbose:
                    print(f"  shard {k}/{len(missing)} {p} ({time.perf_counter() - t0:.0f} s)")
    tables: list[np.ndarray] = []
    firearms = []
    for t in todo:
        with np.load(_shard_path(*t)) as d:
            rows, counts, fire = d["rows"], d["counts"], d["firearm"]
        starts = np.concatenate([[0], np.cumsum(counts)])
        tables += [rows[starts[i] : starts[i + 1]] for i in range(len(counts))]
        firearms.append(fire)
    return tables[:n], np.concatenate(firearms)[:n]
