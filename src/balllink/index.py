"""FAISS candidate index of casings. FAISS is imported in this module only.

`CasingIndex` stores the local keypoint descriptors of every casing (`balllink.features`)
in one FAISS index and the pose of each keypoint (position, orientation) beside it. A query
casing's keypoints each fetch their nearest stored keypoints; every neighbour votes for
``(casing, rotation, shift)`` = the rotation that maps the stored keypoint's orientation
onto the query's and the shift that then maps its position onto the query's. A casing's
score is the number of distinct query keypoints in its best pose bin (bins of 12° and
150 µm, each vote spread over the 2×2×2 overlapping bin grids): neighbours that agree on
one rotation and shift, as congruent matching cells do. The ranking is therefore
invariant to rotation over 360° and to translation, and robust to partial overlap.

Two configurations (measured on this 2-core machine; commands and the JSON they write are
in ``benchmarks/bench_index.py`` and ``benchmarks/eval_retrieval.py``):

* ``CasingIndex()``: ``"Flat"`` (exact float32 nearest neighbours), up to 128 keypoints
  stored per casing, every query keypoint used. For a lab's own collection (up to a few
  ten thousand casings): Fadul, 40 queries turned 0–360° and shifted, query excluded,
  recall@10 = 1.000 and a same-gun casing first for 40/40; simulated 1e4 casings
  recall@10/50/200 = 1.000. Its cost grows with the collection: at 1e5 casings (80
  keypoints kept, 128 per query) 34 KB per casing and 6.1 s per query.
* ``CasingIndex.compressed(n)``: ``"IVF{nlist}_HNSW32,PQ52x4fs"`` (inverted lists of ~1 500
  keypoints, 4-bit fast-scan product codes), 80 keypoints stored, 128 per query, 32 lists
  visited. Fadul: recall@10 0.965, same gun first 40/40. 1e5 fully simulated casings
  (100 queries): 3.3 KB per casing, 14 ms p50 / 19 ms p99 per query, same-firearm
  recall@10/50/200 = 0.980/0.993/1.000 (exact ``Flat`` search: 0.993/0.997/1.000); 98.9 %
  of the exact top-10 casings with >= 3 agreeing votes kept (30 queries, query excluded).
  1e6 casings (1e5 simulated + 9e5 distractors recombined from simulated keypoints; the
  distractors reach a query's top 200 about 0.6 times as often per casing as real
  non-matching casings): 3.3 KB per casing, 21 ms p50 / 31 ms p99, same-firearm
  recall@10/50/200 = 0.92/0.95/0.99, every exact top-10 casing with >= 3 agreeing votes
  kept (10 queries, brute-force reference), 97 % of exact search's same-firearm
  recall@10. Build: 28 min on 2 cores (training 72 s).

``"HNSW32"`` (same 80/128 keypoints) at 1e5: 56 KB per casing, 23 ms p50, recall@10 0.993,
16 min to build; it does not fit in 24 GB at 1e6.

Tried and dropped: global rotation-invariant vectors (radial power spectrum, ring angular
spectra, 36 rotated thumbnails: Fadul recall@10 0.48–0.56); one pooled VLAD vector of the
keypoints per casing, as a first stage (Fadul 0.92, but among 1e4 simulated casings only
73 % of the mates reach its top 200); in exploratory runs at 1e5 (nprobe 16), 32 stored
keypoints per casing (recall@10 0.72) and 13-byte codes (0.93). The vote without pose
agreement (neighbours simply counted per casing) gives Fadul 0.99 but ranks ties by chance.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.clustering import two_level_clustering

from ._files import atomic_path
from ._scan import Scan
from .errors import IndexFormatError
from .features import DESCRIPTOR_DIM, DESCRIPTOR_VERSION, POSE_COLUMNS, embed, mirror_keypoints

__all__ = ["CasingIndex"]

logger = logging.getLogger(__name__)

_MAGIC = "balllink-casing-index"
_FORMAT = 1
_ADD_CHUNK = 200_000
#: Above this many inverted lists the coarse centroids are trained by two-level k-means
#: (sqrt(nlist) clusters, then each split): flat k-means over 32k+ centroids takes hours
#: on 2 cores, two-level about a minute.
_TWO_LEVEL_NLIST = 4096
_TRAIN_PER_LIST = 32


#: Handedness codes kept per casing: 0 unknown, 1 "viewed", 2 "mirrored".
_HAND_CODES = {"viewed": 1, "mirrored": 2}


def _hand_of(item) -> int:
    """The handedness code of a scan (`meta["handedness"]`); 0 for descriptor tables."""
    return _HAND_CODES.get(item.meta.get("handedness"), 0) if isinstance(item, Scan) else 0


def _rows_of(item, what: str) -> np.ndarray:
    """Embed a scan, or check a descriptor table from `embed`."""
    if isinstance(item, Scan):
        return embed(item)
    rows = np.asarray(item)
    if rows.ndim != 2 or rows.shape[1] != POSE_COLUMNS + DESCRIPTOR_DIM:
        raise ValueError(
            f"{what}: expected a prepared bl.Scan or a descriptor table from bl.embed of "
            f"shape (n, {POSE_COLUMNS + DESCRIPTOR_DIM}), got shape {rows.shape}"
        )
    if not np.isfinite(rows).all():
        raise ValueError(f"{what}: descriptor table contains NaN or inf")
    return np.ascontiguousarray(rows, dtype=np.float32)


def _best_of(results):
    """Merge per-reflection votes: each casing row keeps its best vote and nearest hit."""
    if len(results) == 1:
        return results[0]
    rows = np.concatenate([r[0] for r in results])
    votes = np.concatenate([r[1] for r in results])
    nearest = np.concatenate([r[2] for r in results])
    if rows.size == 0:
        return rows, votes, nearest
    uniq, inv = np.unique(rows, return_inverse=True)
    best = np.zeros(len(uniq), np.float32)
    near = np.full(len(uniq), np.inf, np.float32)
    np.maximum.at(best, inv, votes)
    np.minimum.at(near, inv, nearest)
    return uniq, best, near


class CasingIndex:
    """Candidate retrieval over many casings (FAISS inside).

    Parameters
    ----------
    factory : str, optional
        FAISS index factory string for the keypoint descriptors: ``"Flat"`` (default,
        exact), ``"HNSW32"``, ``"IVF4096,PQ13"``, ``"PCA32,Flat"``, ``"OPQ16_64,IVF4096,PQ16"``,
        ... (a PQ size must divide 104 unless an OPQ/PCA stage comes first).
        Trained factories are fitted on the first `add` (or call `fit`).
    neighbors : int
        Stored keypoints fetched per query keypoint.
    angle_bin_deg, shift_bin_um : float
        Pose bin size of the vote.
    nprobe : int
        Inverted lists visited per query keypoint (IVF factories).
    ef_search : int
        HNSW search depth (HNSW factories; for an ``IVF..._HNSW`` coarse quantizer at least
        ``2 * nprobe``).
    max_stored : int, optional
        Keep only the strongest ``max_stored`` keypoints of each stored casing (memory and
        speed against recall).
    query_keypoints : int, optional
        Use only the strongest ``query_keypoints`` keypoints of a query (all by default).
    handedness : {"both", "same"}
        ``"both"`` (default): a query also votes as its mirror image (`mirror_keypoints`:
        the same keypoints with rows reversed, no re-embedding), and each stored casing
        keeps the better of the two votes, so a mate exported mirrored still reaches the
        candidate list (twice the nearest-neighbour searches). Where the handedness of the
        query and of a stored casing are both known (``meta["handedness"]`` of the scans
        given to `add` and `search`), only the vote of the right reflection counts, and a
        query known to agree with every stored casing skips the mirror search.
        ``"same"``: collections known to be exported consistently.

    Attributes
    ----------
    index_ : faiss.Index
        The FAISS index; vector ids are internal row numbers, never casing ids.
    casing_ids_ : ndarray of int64
        Casing id of each added casing (in order of addition, removed ones included).

    Examples
    --------
    >>> import numpy as np
    >>> import balllink as bl
    >>> from scipy.ndimage import gaussian_filter
    >>> rng = np.random.default_rng(0)
    >>> scans = [bl.Scan(gaussian_filter(rng.normal(size=(160, 160)), 2), spacing_um=12.5)
    ...          for _ in range(3)]
    >>> idx = bl.CasingIndex()
    >>> idx.add([10, 11, 12], scans)
    >>> ids, scores = idx.search(scans[1:2], k=5)
    >>> ids.shape, int(ids[0, 0]), len(idx)
    ((1, 5), 11, 3)
    """

    def __init__(
        self,
        factory: str | None = None,
        *,
        neighbors: int = 8,
        angle_bin_deg: float = 12.0,
        shift_bin_um: float = 150.0,
        nprobe: int = 32,
        ef_search: int = 64,
        max_stored: int | None = 128,
        query_keypoints: int | None = None,
        handedness: str = "both",
    ) -> None:
        self.factory = factory
        self.handedness = handedness
        self.max_stored = max_stored
        self.query_keypoints = query_keypoints
        self.neighbors = neighbors
        self.angle_bin_deg = angle_bin_deg
        self.shift_bin_um = shift_bin_um
        self.nprobe = nprobe
        self.ef_search = ef_search
        self._reset()

    @classmethod
    def compressed(cls, n_casings: int, **kwargs) -> CasingIndex:
        """The memory-bounded configuration for about ``n_casings`` casings (1e5–1e6).

        ``IVF{nlist}_HNSW32,PQ52x4fs``: an inverted file whose lists hold ~1 500 keypoints
        each (``nlist`` a power of two, HNSW coarse search; above 4 096 lists two-level
        k-means training), 4-bit fast-scan product codes of 26 bytes per keypoint; the 80
        strongest keypoints of each stored casing, the 128 strongest of each query, 32 lists
        visited per query keypoint. About 3.3 KB per casing (26-byte code, 8-byte id and
        6-byte pose per keypoint). Measured figures are in ``benchmarks/bench_index.py`` and
        the module docstring.

        Parameters
        ----------
        n_casings : int
            Expected number of stored casings (sets the number of inverted lists).
        **kwargs
            Overrides of the other `CasingIndex` parameters.

        Returns
        -------
        CasingIndex
            Untrained; trained on the first `add` or by `fit`.

        Examples
        --------
        >>> import balllink as bl
        >>> bl.CasingIndex.compressed(1_000_000).factory
        'IVF65536_HNSW32,PQ52x4fs'
        """
        n_casings = int(n_casings)
        if n_casings < 1:
            raise ValueError(f"n_casings must be >= 1, got {n_casings}")
        stored = kwargs.pop("max_stored", 80)
        stored = 80 if stored is None else int(stored)
        nlist = 2 ** round(np.log2(max(1.0, n_casings * stored / 1500)))
        nlist = int(np.clip(nlist, 64, 65536))
        params = {"nprobe": 32, "query_keypoints": 128} | kwargs
        return cls(f"IVF{nlist}_HNSW32,PQ52x4fs", max_stored=stored, **params)

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.index_ = None
        self.casing_ids_ = np.zeros(0, np.int64)
        self.starts_ = np.zeros(1, np.int64)
        self.alive_ = np.zeros(0, bool)
        self.hand_ = np.zeros(0, np.int8)
        self._pose_parts: list[np.ndarray] = []  # concatenated lazily (adds stay O(n))
        self._pose = np.zeros((0, POSE_COLUMNS), np.float16)
        self._row_of: dict[int, int] = {}

    @property
    def pose_(self) -> np.ndarray:
        """Pose (y_um, x_um, angle_rad) of every stored keypoint vector, float16."""
        if self._pose_parts:
            self._pose = np.concatenate([self._pose, *self._pose_parts])
            self._pose_parts = []
        return self._pose

    @pose_.setter
    def pose_(self, value: np.ndarray) -> None:
        self._pose_parts = []
        self._pose = value

    @property
    def factory_(self) -> str:
        return self.factory or "Flat"

    def _params(self) -> dict:
        return {
            "factory": self.factory_,
            "neighbors": int(self.neighbors),
            "angle_bin_deg": float(self.angle_bin_deg),
            "shift_bin_um": float(self.shift_bin_um),
            "nprobe": int(self.nprobe),
            "ef_search": int(self.ef_search),
            "max_stored": None if self.max_stored is None else int(self.max_stored),
            "query_keypoints": (
                None if self.query_keypoints is None else int(self.query_keypoints)
            ),
            "handedness": str(self.handedness),
        }

    def _check_params(self) -> None:
        if int(self.neighbors) < 1:
            raise ValueError(f"neighbors must be >= 1, got {self.neighbors}")
        if not (0 < self.angle_bin_deg <= 90):
            raise ValueError(f"angle_bin_deg must be in (0, 90], got {self.angle_bin_deg}")
        if self.max_stored is not None and int(self.max_stored) < 1:
            raise ValueError(f"max_stored must be >= 1 or None, got {self.max_stored}")
        if self.query_keypoints is not None and int(self.query_keypoints) < 1:
            raise ValueError(f"query_keypoints must be >= 1 or None, got {self.query_keypoints}")
        if self.handedness not in ("both", "same"):
            raise ValueError(f"handedness must be 'both' or 'same', got {self.handedness!r}")
        if not self.shift_bin_um > 0:
            raise ValueError(f"shift_bin_um must be > 0, got {self.shift_bin_um}")

    def _new_faiss(self) -> faiss.Index:
        try:
            inner = faiss.index_factory(DESCRIPTOR_DIM, self.factory_, faiss.METRIC_L2)
        except RuntimeError as exc:
            raise ValueError(
                f"factory={self.factory_!r} is not a FAISS index factory string usable for "
                f"{DESCRIPTOR_DIM}-d vectors (try 'Flat', 'HNSW32', 'IVF1024,PQ13'; the PQ "
                f"size must divide {DESCRIPTOR_DIM}): {exc}"
            ) from None
        if faiss.try_extract_index_ivf(inner) is not None:
            return inner  # IVF stores ids itself: no second 8-byte id per vector
        return faiss.IndexIDMap2(inner)

    def _apply_search_params(self) -> None:
        inner = self.index_
        if isinstance(inner, faiss.IndexIDMap):
            inner = faiss.downcast_index(inner.index)
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            ivf.nprobe = int(self.nprobe)
            quantizer = faiss.downcast_index(ivf.quantizer)
            if hasattr(quantizer, "hnsw"):  # IVF..._HNSW: the coarse search must see nprobe
                quantizer.hnsw.efSearch = max(int(self.ef_search), 2 * int(self.nprobe))
        base = inner
        if isinstance(base, faiss.IndexPreTransform):
            base = faiss.downcast_index(base.index)
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = int(self.ef_search)

    def __len__(self) -> int:
        return int(self.alive_.sum())

    def __contains__(self, casing_id) -> bool:
        return int(casing_id) in self._row_of

    def __repr__(self) -> str:
        return f"CasingIndex(factory={self.factory_!r}, casings={len(self)})"

    @property
    def ntotal(self) -> int:
        """Number of keypoint vectors held by FAISS."""
        return 0 if self.index_ is None else int(self.index_.ntotal)

    # ------------------------------------------------------------------ build
    def fit(self, scans_or_descriptors: Iterable, *, max_vectors: int = 500_000) -> CasingIndex:
        """Train the FAISS index (IVF centroids, PQ codebooks, OPQ rotation).

        Parameters
        ----------
        scans_or_descriptors : iterable of Scan or ndarray
            Representative casings (not added).
        max_vectors : int
            Keypoint vectors used for training at most (a random subset).

        Returns
        -------
        CasingIndex
            ``self``. A no-op for factories that need no training (``Flat``, ``HNSW``).

        Examples
        --------
        >>> import numpy as np
        >>> import balllink as bl
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(300, 300)).astype(np.float32)
        >>> idx = bl.CasingIndex("IVF4,Flat").fit([bl.Scan(z, spacing_um=6.25)])
        >>> idx.index_.is_trained
        True
        """
        self._check_params()
        rows = [_rows_of(item, f"fit item {i}") for i, item in enumerate(scans_or_descriptors)]
        keep = None if self.max_stored is None else int(self.max_stored)  # what add stores
        vecs = np.concatenate([r[:keep, POSE_COLUMNS:] for r in rows] or [np.zeros((0, 1))])
        self._train(np.ascontiguousarray(vecs, dtype=np.float32), max_vectors=max_vectors)
        return self

    def _train_target(self) -> int:
        """Training vectors wanted by the (untrained) factory."""
        if self.index_ is None:
            self.index_ = self._new_faiss()
        ivf = faiss.try_extract_index_ivf(self.index_)
        return 0 if ivf is None else _TRAIN_PER_LIST * int(ivf.nlist)

    def _train(self, vecs: np.ndarray, *, max_vectors: int = 500_000) -> None:
        max_vectors = max(max_vectors, self._train_target())  # creates index_ if needed
        if self.index_.is_trained:
            return
        ivf = faiss.try_extract_index_ivf(self.index_)
        big = ivf is not None and ivf.nlist > _TWO_LEVEL_NLIST
        plain_ivf = isinstance(faiss.downcast_index(self.index_), faiss.IndexIVF)
        if big and not plain_ivf:
            logger.warning(
                "%s: a transform precedes the inverted file, so its %d lists are trained by "
                "flat k-means (slow); prefer a plain IVF factory",
                self.factory_,
                ivf.nlist,
            )
        if len(vecs) > max_vectors:
            pick = np.random.default_rng(0).choice(len(vecs), max_vectors, replace=False)
            vecs = vecs[np.sort(pick)]
        try:
            if big and plain_ivf:
                nlist = int(ivf.nlist)
                if len(vecs) < nlist:
                    raise RuntimeError(f"{len(vecs)} training vectors for {nlist} lists")
                centroids, _ = two_level_clustering(
                    vecs, round(np.sqrt(nlist)), nlist, clustering_niter=10, seed=1234
                )
                ivf.quantizer.train(centroids)
                ivf.quantizer.add(centroids)  # a trained quantizer with nlist entries
            self.index_.train(vecs)
        except RuntimeError as exc:
            self.index_ = None  # no half-trained index (a retry would add centroids twice)
            raise ValueError(
                f"cannot train FAISS index {self.factory_!r} on {len(vecs)} keypoint vectors "
                f"(about {len(vecs) // 100} casings): {exc}. Call fit() with more casings or "
                "use a smaller factory (fewer IVF lists)"
            ) from None
        logger.info("trained %s on %d vectors", self.factory_, len(vecs))

    def add(
        self,
        ids: Sequence[int] | np.ndarray,
        scans_or_descriptors: Sequence,
        *,
        progress: Callable[[int, int], object] | None = None,
    ) -> None:
        """Add casings.

        Parameters
        ----------
        ids : sequence of int
            Casing (exhibit) ids, int64, not already in the index.
        scans_or_descriptors : sequence of Scan or ndarray
            Prepared scans, or their `bl.embed` tables, one per id.
        progress : callable, optional
            ``progress(done, total)`` called as casings are embedded and added.

        Examples
        --------
        >>> import numpy as np
        >>> import balllink as bl
        >>> z = np.random.default_rng(2).normal(size=(100, 100)).astype(np.float32)
        >>> idx = bl.CasingIndex()
        >>> idx.add([7], [bl.embed(bl.Scan(z, spacing_um=12.5))])
        >>> len(idx), 7 in idx
        (1, True)
        """
        self._check_params()
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D sequence of integers, got {ids!r}")
        ids = ids.astype(np.int64)
        n = len(ids)
        if n != len(scans_or_descriptors):
            raise ValueError(f"add got {n} ids for {len(scans_or_descriptors)} scans/descriptors")
        if len(np.unique(ids)) != n:
            raise ValueError("add: ids contain duplicates")
        present = [int(i) for i in ids if int(i) in self._row_of]
        if present:
            raise ValueError(f"casing ids already in the index: {present[:5]}; remove() them first")
        done = 0
        batch_ids: list[int] = []
        batch_rows: list[np.ndarray] = []
        batch_hands: list[int] = []
        pending = 0
        chunk = _ADD_CHUNK
        if self.index_ is None or not self.index_.is_trained:  # trained on the first batch
            chunk = max(chunk, self._train_target())
        for cid, item in zip(ids, scans_or_descriptors, strict=True):
            rows = _rows_of(item, f"casing {int(cid)}")
            if self.max_stored is not None:
                rows = rows[: int(self.max_stored)]  # embed lists the strongest first
            batch_ids.append(int(cid))
            batch_rows.append(rows)
            batch_hands.append(_hand_of(item))
            pending += len(rows)
            done += 1
            if pending >= chunk:
                self._add_rows(batch_ids, batch_rows, batch_hands)
                batch_ids, batch_rows, batch_hands, pending, chunk = [], [], [], 0, _ADD_CHUNK
                if progress is not None:
                    progress(done, n)
        if batch_ids:
            self._add_rows(batch_ids, batch_rows, batch_hands)
        if progress is not None:
            progress(n, n)

    def _add_rows(self, ids: list[int], rows: list[np.ndarray], hands: list[int]) -> None:
        counts = np.array([len(r) for r in rows], np.int64)
        table = np.concatenate(rows) if rows else np.zeros((0, POSE_COLUMNS + DESCRIPTOR_DIM))
        vecs = np.ascontiguousarray(table[:, POSE_COLUMNS:], dtype=np.float32)
        if self.index_ is None or not self.index_.is_trained:
            self._train(vecs)
        first = int(self.starts_[-1])
        vec_ids = np.arange(first, first + len(vecs), dtype=np.int64)
        if len(vecs):
            self.index_.add_with_ids(vecs, vec_ids)
        base = len(self.casing_ids_)
        self.casing_ids_ = np.concatenate([self.casing_ids_, np.asarray(ids, np.int64)])
        self.starts_ = np.concatenate([self.starts_, first + np.cumsum(counts)])
        self.alive_ = np.concatenate([self.alive_, np.ones(len(ids), bool)])
        self.hand_ = np.concatenate([self.hand_, np.asarray(hands, np.int8)])
        self._pose_parts.append(table[:, :POSE_COLUMNS].astype(np.float16))
        for j, cid in enumerate(ids):
            self._row_of[cid] = base + j

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove casings; ids not in the index are ignored.

        Returns
        -------
        int
            Number of casings removed.

        Examples
        --------
        >>> import numpy as np
        >>> import balllink as bl
        >>> z = np.random.default_rng(3).normal(size=(100, 100)).astype(np.float32)
        >>> idx = bl.CasingIndex()
        >>> idx.add([1, 2], [bl.Scan(z, spacing_um=12.5)] * 2)
        >>> idx.remove([2, 99]), len(idx)
        (1, 1)
        """
        rows = [self._row_of.pop(int(i)) for i in np.atleast_1d(ids) if int(i) in self._row_of]
        if not rows:
            return 0
        rows_arr = np.asarray(rows, np.int64)
        self.alive_[rows_arr] = False
        vec_ids = np.concatenate(
            [np.arange(self.starts_[r], self.starts_[r + 1], dtype=np.int64) for r in rows_arr]
        )
        try:
            self.index_.remove_ids(faiss.IDSelectorBatch(vec_ids))
        except RuntimeError:  # HNSW cannot free vectors: they stay, masked out by alive_
            logger.debug("%s cannot remove vectors; %d masked", self.factory_, len(vec_ids))
        return len(rows)

    # ------------------------------------------------------------------ search
    def search(
        self,
        scans_or_descriptors: Sequence,
        k: int = 10,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank stored casings for each query casing.

        Parameters
        ----------
        scans_or_descriptors : sequence of Scan or ndarray
            Prepared query scans, or their `bl.embed` tables.
        k : int
            Candidates per query.

        Returns
        -------
        ids : ndarray of int64, shape (n_queries, k)
            Casing ids, best first, padded with -1 (fewer casings, or casings without a
            single vote).
        scores : ndarray of float32, shape (n_queries, k)
            Votes of the best pose bin (number of query keypoints agreeing on one rotation
            and shift), padded with 0.

        Examples
        --------
        >>> import numpy as np
        >>> import balllink as bl
        >>> z = np.random.default_rng(4).normal(size=(100, 100)).astype(np.float32)
        >>> idx = bl.CasingIndex()
        >>> idx.add([5], [bl.Scan(z, spacing_um=12.5)])
        >>> idx.search([bl.Scan(z, spacing_um=12.5)], k=3)[0]
        array([[ 5, -1, -1]])
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        items = list(scans_or_descriptors)
        queries = [_rows_of(q, f"query {i}") for i, q in enumerate(items)]
        qhand = [_hand_of(q) for q in items]
        if self.query_keypoints is not None:
            queries = [q[: int(self.query_keypoints)] for q in queries]  # strongest first
        nq = len(queries)
        out_ids = np.full((nq, k), -1, np.int64)
        out_scores = np.zeros((nq, k), np.float32)
        if nq == 0 or self.index_ is None or self.ntotal == 0 or len(self) == 0:
            return out_ids, out_scores
        self._check_params()
        self._apply_search_params()
        mirror_part: dict[int, int] = {}  # query -> index of its mirror image in `queries`
        if self.handedness == "both":  # each query also as its mirror image, when needed
            live = self.hand_[self.alive_]
            for qi in range(nq):
                # a query of known handedness needs no mirror vote when every stored casing
                # is known to agree with it
                if not (qhand[qi] and (live == qhand[qi]).all()):
                    mirror_part[qi] = len(queries)
                    queries.append(mirror_keypoints(queries[qi]))
        table = np.concatenate(queries)
        vecs = np.ascontiguousarray(table[:, POSE_COLUMNS:], dtype=np.float32)
        kk = min(int(self.neighbors), self.ntotal)
        if len(vecs):
            dist, labels = self.index_.search(vecs, kk)
        else:
            dist, labels = np.zeros((0, kk), np.float32), np.zeros((0, kk), np.int64)
        bounds = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
        for qi in range(nq):
            results = []
            for part, mirrored in ((qi, False), (mirror_part.get(qi), True)):
                if part is None:
                    continue
                sl = slice(bounds[part], bounds[part + 1])
                rows, votes, nearest = self._vote(table[sl, :POSE_COLUMNS], labels[sl], dist[sl])
                if qhand[qi] and rows.size:  # handedness known on both sides decides
                    stored = self.hand_[rows]
                    known = stored > 0
                    wrong = known & (
                        (stored != qhand[qi]) if not mirrored else (stored == qhand[qi])
                    )
                    rows, votes, nearest = rows[~wrong], votes[~wrong], nearest[~wrong]
                results.append((rows, votes, nearest))
            rows, votes, nearest = _best_of(results)
            order = np.lexsort((rows, nearest, -votes))[:k]
            out_ids[qi, : len(order)] = self.casing_ids_[rows[order]]
            out_scores[qi, : len(order)] = votes[order]
        return out_ids, out_scores

    def _vote(
        self, qpose: np.ndarray, labels: np.ndarray, dist: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hough vote over (casing, rotation, shift).

        Returns the casing rows, their votes (query keypoints in the best pose bin) and the
        distance of their nearest neighbour hit, which orders casings with equal votes (ties
        are common at one or two votes; insertion order would favour old casings).
        """
        kk = labels.shape[1] if labels.ndim == 2 else 0
        qi = np.repeat(np.arange(len(labels), dtype=np.int64), kk)
        vec = labels.ravel().astype(np.int64)
        d = np.asarray(dist, np.float32).ravel()
        good = vec >= 0
        qi, vec, d = qi[good], vec[good], d[good]
        row = np.searchsorted(self.starts_, vec, side="right") - 1
        live = self.alive_[row]
        qi, vec, row, d = qi[live], vec[live], row[live], d[live]
        if len(vec) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
        pose = self.pose_[vec].astype(np.float64)
        q = qpose[qi].astype(np.float64)
        rot = q[:, 2] - pose[:, 2]
        c, s = np.cos(rot), np.sin(rot)
        ty = q[:, 0] - (c * pose[:, 0] - s * pose[:, 1])
        tx = q[:, 1] - (s * pose[:, 0] + c * pose[:, 1])
        abin = np.radians(self.angle_bin_deg)
        n_ang = max(1, round(2 * np.pi / abin))
        a = np.mod(rot, 2 * np.pi) / (2 * np.pi) * n_ang
        by, bx = ty / self.shift_bin_um, tx / self.shift_bin_um
        rows_u, local = np.unique(row, return_inverse=True)
        best = np.zeros(len(rows_u), np.int64)
        for off in range(8):
            oa, oy, ox = (off >> 2) & 1, (off >> 1) & 1, off & 1
            ka = (np.floor(a + 0.5 * oa).astype(np.int64)) % n_ang
            ky = np.floor(by + 0.5 * oy).astype(np.int64) + (1 << 19)
            kx = np.floor(bx + 0.5 * ox).astype(np.int64) + (1 << 19)
            ky = np.clip(ky, 0, (1 << 20) - 1)
            kx = np.clip(kx, 0, (1 << 20) - 1)
            key = ((local.astype(np.int64) * 64 + ka) << 40) | (ky << 20) | kx
            pair = np.unique(np.stack([key, qi], axis=1), axis=0)[:, 0]
            bins, counts = np.unique(pair, return_counts=True)
            np.maximum.at(best, (bins >> 40) // 64, counts)
        nearest = np.full(len(rows_u), np.inf, np.float32)
        np.minimum.at(nearest, local, d)
        return rows_u, best.astype(np.float32), nearest

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the index (FAISS data, poses, ids, factory, descriptor version) to a file.

        The file is replaced atomically (`balllink._files.atomic_path`): a crash while saving
        leaves the previous file whole.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> z = np.random.default_rng(5).normal(size=(100, 100)).astype(np.float32)
        >>> idx = bl.CasingIndex(); idx.add([3], [bl.Scan(z, spacing_um=12.5)])
        >>> path = tempfile.mkdtemp() + "/casings.blx"
        >>> idx.save(path); len(bl.CasingIndex.load(path))
        1
        """
        meta = {
            "magic": _MAGIC,
            "format": _FORMAT,
            "descriptor_version": DESCRIPTOR_VERSION,
            "descriptor_dim": DESCRIPTOR_DIM,
            "params": self._params(),
        }
        blob = (
            faiss.serialize_index(self.index_) if self.index_ is not None else np.zeros(0, np.uint8)
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                faiss=blob,
                casing_ids=self.casing_ids_,
                starts=self.starts_,
                alive=self.alive_,
                pose=self.pose_,
                hand=self.hand_,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> CasingIndex:
        """Read an index written by `save`.

        Raises
        ------
        IndexFormatError
            The file is missing, truncated, not a balllink index, or was built with another
            descriptor version (rebuild it from the scans).

        Examples
        --------
        >>> import balllink as bl
        >>> try:
        ...     bl.CasingIndex.load(__file__)
        ... except bl.IndexFormatError as exc:
        ...     print("refused")
        refused
        """
        path = Path(path)
        if not path.is_file():
            raise IndexFormatError(f"{path}: cannot read casing index (no such file)")
        try:  # members are read one at a time: no second copy of a large index
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays["meta"].tobytes().decode())
        except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
            raise IndexFormatError(
                f"{path}: not a balllink casing index, or truncated ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(meta, dict) or meta.get("magic") != _MAGIC:
            raise IndexFormatError(f"{path}: not a balllink casing index (wrong magic)")
        if meta.get("format") != _FORMAT:
            raise IndexFormatError(
                f"{path}: casing index file format {meta.get('format')!r}, this balllink reads "
                f"{_FORMAT}"
            )
        if meta.get("descriptor_version") != DESCRIPTOR_VERSION:
            raise IndexFormatError(
                f"{path}: built with descriptor version {meta.get('descriptor_version')!r}, "
                f"this balllink computes {DESCRIPTOR_VERSION!r}; rebuild the index from the "
                "prepared scans"
            )
        params = dict(meta.get("params", {}))
        factory = params.pop("factory", None)
        try:
            self = cls(factory, **params)
            self._check_params()
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(
                f"{path}: index parameters not understood by this balllink ({exc})"
            ) from None
        try:
            if arrays["faiss"].size:
                self.index_ = faiss.deserialize_index(arrays["faiss"])
            self.casing_ids_ = arrays["casing_ids"].astype(np.int64)
            self.starts_ = arrays["starts"].astype(np.int64)
            self.alive_ = arrays["alive"].astype(bool)
            # files written before handedness was kept: every casing unknown
            self.hand_ = arrays.get("hand", np.zeros(len(self.alive_), np.int8)).astype(np.int8)
            self.pose_ = arrays["pose"].astype(np.float16)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise IndexFormatError(f"{path}: damaged casing index ({exc})") from None
        n = len(self.casing_ids_)
        nvec = int(self.starts_[-1]) if len(self.starts_) else -1
        if (
            len(self.starts_) != n + 1
            or len(self.alive_) != n
            or len(self.pose_) != nvec
            or (self.index_ is not None and self.index_.d != DESCRIPTOR_DIM)
        ):
            raise IndexFormatError(f"{path}: inconsistent casing index (array sizes disagree)")
        self._row_of = {int(c): r for r, c in enumerate(self.casing_ids_) if self.alive_[r]}
        return self
