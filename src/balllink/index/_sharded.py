"""Several casing indexes searched as one: `ShardedIndex`.

A network's collection is split into shards by scope keys (caliber, region, agency) or
by position; each shard is an ordinary `balllink.CasingIndex`, saved on its own (as a
folder, memory-mapped on opening, when large). A search runs the nearest-neighbour step
on every shard (in turn, or as Dask tasks when given a ``dask.distributed.Client``),
keeps each query keypoint's ``neighbors`` nearest over all shards, and only then votes:
the casings' scores and ranking are those one index over the same casings gives (exact
for ``Flat`` shards; approximate shards, such as IVF, each miss what they would miss
alone). Casings of equal votes and equal nearest distance are ordered by casing id.

The vote runs where the client holds the shards' side arrays (ids, poses: memory-mapped
when opened with ``mmap=True``); the workers open each shard by its path, so on a
cluster the shard folders must be on storage every worker sees at the same path.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from .._threads import thread_limit
from ._casing_index import CasingIndex
from ._query import check_k, prepare_queries, top_k

__all__ = ["ShardedIndex"]

#: Parameters every shard must share for the merge to be the one-index search.
_SHARED = ("neighbors", "angle_bin_deg", "shift_bin_um", "query_keypoints", "handedness")
#: Shards a worker process keeps open (LRU).
_WORKER_SHARDS = 8
_opened: OrderedDict[tuple[str, bool], CasingIndex] = OrderedDict()


def _shard_knn(path: str, mmap: bool, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest-neighbour step of one shard, opened by path (a Dask task: one FAISS
    thread, the worker's share of the cores)."""
    key = (path, mmap)
    if key not in _opened:
        _opened[key] = CasingIndex.load(path, mmap=mmap)
        while len(_opened) > _WORKER_SHARDS:
            _opened.popitem(last=False)
    _opened.move_to_end(key)
    with thread_limit(1):
        return _opened[key]._knn(vecs)


class ShardedIndex:
    """Casing indexes keyed by scope, searched as one index.

    Parameters
    ----------
    shards : mapping of key to CasingIndex or path
        The shards; a path (of `CasingIndex.save`) is opened here and, in a Dask search,
        by the workers. They must share ``neighbors``, the pose bins, ``query_keypoints``
        and ``handedness``, and hold distinct casing ids.
    mmap : bool
        Open shards given by path memory-mapped (folders saved with ``directory=True``).

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> tables = [np.random.default_rng(i).normal(size=(30, 107)).astype(np.float32)
    ...           for i in range(4)]
    >>> sharded = bl.index.ShardedIndex.split([1, 2, 3, 4], tables, ["9mm", "9mm", "45", "45"])
    >>> sorted(sharded.shards), len(sharded)
    (['45', '9mm'], 4)
    >>> ids, votes = sharded.search(tables[2:3], k=2)
    >>> int(ids[0, 0])
    3
    """

    def __init__(self, shards: Mapping[Hashable, CasingIndex | str | os.PathLike], *, mmap=False):
        if not shards:
            raise ValueError("ShardedIndex needs at least one shard")
        self.mmap = bool(mmap)
        self.shards: dict[Hashable, CasingIndex] = {}
        self.paths: dict[Hashable, str | None] = {}
        for key, shard in shards.items():
            if isinstance(shard, CasingIndex):
                self.shards[key], self.paths[key] = shard, None
            else:
                self.shards[key] = CasingIndex.load(shard, mmap=self.mmap)
                self.paths[key] = os.fspath(shard)
        first_key, first = next(iter(self.shards.items()))
        for key, shard in self.shards.items():
            for name in _SHARED:
                if getattr(shard, name) != getattr(first, name):
                    raise ValueError(
                        f"shard {key!r}: {name}={getattr(shard, name)!r} but shard "
                        f"{first_key!r} has {getattr(first, name)!r}; shards searched as "
                        "one index must share it"
                    )

    @classmethod
    def split(
        cls,
        ids: Sequence[int] | np.ndarray,
        scans_or_descriptors: Sequence,
        keys: Sequence[Hashable],
        *,
        make=CasingIndex,
    ) -> ShardedIndex:
        """Shards built by splitting casings on their scope ``keys`` (one per casing).

        ``make()`` returns each empty shard (default ``CasingIndex()``, exact).
        """
        if not (len(ids) == len(scans_or_descriptors) == len(keys)):
            raise ValueError(
                f"split got {len(ids)} ids, {len(scans_or_descriptors)} scans/descriptors "
                f"and {len(keys)} keys; give one of each per casing"
            )
        groups: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        shards = {}
        for key, rows in groups.items():
            shards[key] = make()
            shards[key].add(np.asarray(ids)[rows], [scans_or_descriptors[i] for i in rows])
        return cls(shards)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards.values())

    def __repr__(self) -> str:
        return f"ShardedIndex(shards={len(self.shards)}, casings={len(self)})"

    def search(
        self,
        scans_or_descriptors: Sequence,
        k: int = 10,
        *,
        keys: Iterable[Hashable] | None = None,
        client=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank the casings of the shards ``keys`` (all by default) for each query.

        Parameters
        ----------
        scans_or_descriptors : sequence of Scan or ndarray
            Prepared query scans, or their `bl.embed` tables.
        k : int
            Candidates per query.
        keys : iterable, optional
            The shards searched (a scope); unknown keys raise KeyError.
        client : dask.distributed.Client, optional
            Run each shard's nearest-neighbour step as a task (shards given by path).

        Returns
        -------
        ids, scores : ndarray, shape (n_queries, k)
            As `CasingIndex.search`.
        """
        k = check_k(k)
        keys = list(self.shards) if keys is None else list(keys)
        missing = [key for key in keys if key not in self.shards]
        if missing:
            raise KeyError(f"no shard {missing[0]!r}; shards: {sorted(map(str, self.shards))}")
        shards = [self.shards[key] for key in keys if len(self.shards[key])]
        first = next(iter(self.shards.values()))
        live = [s.hand_[s.alive_] for s in shards]
        q = prepare_queries(
            scans_or_descriptors,
            query_keypoints=first.query_keypoints,
            handedness=first.handedness,
            live_hand=np.concatenate(live) if live else np.zeros(0, np.int8),
        )
        out_ids = np.full((q.nq, k), -1, np.int64)
        out_scores = np.zeros((q.nq, k), np.float32)
        if q.nq == 0 or not shards:
            return out_ids, out_scores
        knn = self._knn([key for key in keys if len(self.shards[key])], q.vecs, client)
        dist, labels, tag = _merge(knn, int(first.neighbors))
        for qi in range(q.nq):
            ids, votes, nearest = [], [], []
            for s, shard in enumerate(shards):
                best = shard._query_votes(q, qi, np.where(tag == s, labels, -1), dist)
                ids.append(shard.casing_ids_[best.rows])
                votes.append(best.votes)
                nearest.append(best.nearest)
            ids_ = np.concatenate(ids)
            out_ids[qi], out_scores[qi] = top_k(
                ids_, np.concatenate(votes), np.concatenate(nearest), ids_, k
            )
        return out_ids, out_scores

    def _knn(self, keys: list, vecs: np.ndarray, client) -> list[tuple[np.ndarray, np.ndarray]]:
        if client is None:
            return [self.shards[key]._knn(vecs) for key in keys]
        in_memory = [key for key in keys if self.paths[key] is None]
        if in_memory:
            raise ValueError(
                f"shard {in_memory[0]!r} is held in memory only; for a search on Dask save "
                "each shard (CasingIndex.save) and give ShardedIndex their paths"
            )
        [shared] = client.scatter([vecs], broadcast=True)
        futures = [
            client.submit(_shard_knn, self.paths[key], self.mmap, shared, pure=False)
            for key in keys
        ]
        return client.gather(futures)


def _merge(knn: list[tuple[np.ndarray, np.ndarray]], neighbors: int):
    """Each row's ``neighbors`` nearest over all shards: distances, labels, shard numbers."""
    dist = np.concatenate([d for d, _ in knn], axis=1).astype(np.float32)
    labels = np.concatenate([lab for _, lab in knn], axis=1).astype(np.int64)
    tag = np.concatenate([np.full(lab.shape, s, np.int64) for s, (_, lab) in enumerate(knn)], 1)
    dist[labels < 0] = np.inf
    kk = min(neighbors, labels.shape[1])
    order = np.argsort(dist, axis=1, kind="stable")[:, :kk]
    pick = np.take_along_axis
    return pick(dist, order, 1), pick(labels, order, 1), pick(tag, order, 1)
