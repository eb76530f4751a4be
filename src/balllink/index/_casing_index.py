"""FAISS candidate index of casings.

`CasingIndex` stores the local keypoint descriptors of every casing (`balllink.features`)
in one FAISS index and the pose of each keypoint (position, orientation) beside it. A query
casing's keypoints each fetch their nearest stored keypoints; every neighbour votes for
``(casing, rotation, shift)`` = the rotation that maps the stored keypoint's orientation
onto the query's and the shift that then maps its position onto the query's. A casing's
score is the number of distinct query keypoints in its best pose bin (bins of 12° and
150 µm, each vote spread over the 2×2×2 overlapping bin grids): neighbours that agree on
one rotation and shift, as congruent matching cells do. The ranking is therefore
invariant to rotation over 360° and to translation, and robust to partial overlap.

Two configurations: ``CasingIndex()`` (``"Flat"``, exact; a lab's own collection, up to a
few ten thousand casings: Fadul recall@10 = 1.000 under any rotation) and
``CasingIndex.compressed(n)`` (``"IVF{nlist}_HNSW32,PQ52x4fs"``, 3.3 KB per casing, about
20 ms per query at 1e5–1e6 casings). Their measured figures, and the alternatives tried
and dropped, are in `balllink.index._faiss`.

Rooms: FAISS is behind `balllink.index._faiss` (factory, search parameters, training), the
vote is the pure function `balllink.index._vote.pose_vote`, the file format is
`balllink.index._file` and the casing bookkeeping `balllink.index._casings`; this module
ties them together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..errors import IndexFormatError
from ..features import POSE_COLUMNS
from . import _faiss as F
from ._casings import CasingRows, CasingTable, casing_rows
from ._file import IndexFile, read_index, write_index_dir, write_index_file
from ._params import PARAM_NAMES, check_params, compressed_config, params_json
from ._query import Queries, check_k, prepare_queries, top_k
from ._vote import CasingVotes, best_of, drop_wrong_hand, pose_vote

__all__ = ["CasingIndex"]

logger = logging.getLogger(__name__)

#: Keypoint rows added to FAISS at a time.
_ADD_CHUNK = 200_000


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
    starts_ : ndarray of int64
        Casing row ``r`` owns keypoint vectors ``starts_[r]`` to ``starts_[r + 1] - 1``.
    alive_, hand_ : ndarray of bool, ndarray of int8
        Per casing row: still in the index; handedness (0 unknown, 1 viewed, 2 mirrored).
    pose_ : ndarray of float16, shape (n_vectors, 3)
        ``(y_um, x_um, angle_rad)`` of every stored keypoint vector.

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
        `balllink.index._faiss`.

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
        config = compressed_config(n_casings, kwargs)
        return cls(config.factory, **config.params)

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.index_ = None
        self._casings = CasingTable()
        self._mapped_from: str | None = None  # set by load(..., mmap=True): read-only

    def _check_writable(self, what: str) -> None:
        if self._mapped_from is not None:
            raise ValueError(
                f"{what}: this index is memory-mapped read-only from {self._mapped_from}; "
                "load it with mmap=False to change it"
            )

    casing_ids_ = property(lambda self: self._casings.casing_ids)
    starts_ = property(lambda self: self._casings.starts)
    alive_ = property(lambda self: self._casings.alive)
    hand_ = property(lambda self: self._casings.hand)
    pose_ = property(lambda self: self._casings.pose)

    @property
    def factory_(self) -> str:
        return self.factory or "Flat"

    def _params(self) -> dict:
        """The parameters as saved with the index (``factory`` included, JSON types)."""
        return params_json(self.factory_, {name: getattr(self, name) for name in PARAM_NAMES})

    def _check_params(self) -> None:
        check_params({name: getattr(self, name) for name in PARAM_NAMES})

    def __len__(self) -> int:
        return len(self._casings)

    def __contains__(self, casing_id) -> bool:
        return casing_id in self._casings

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
        self._check_writable("fit")
        rows = [casing_rows(x, f"fit item {i}").rows for i, x in enumerate(scans_or_descriptors)]
        keep = None if self.max_stored is None else int(self.max_stored)  # what add stores
        vecs = np.concatenate([r[:keep, POSE_COLUMNS:] for r in rows] or [np.zeros((0, 1))])
        self._train(np.ascontiguousarray(vecs, dtype=np.float32), max_vectors=max_vectors)
        return self

    def _train_target(self) -> int:
        """Training vectors wanted by the (untrained) factory; creates ``index_``."""
        if self.index_ is None:
            self.index_ = F.new_faiss(self.factory_)
        return F.train_target(self.index_)

    def _train(self, vecs: np.ndarray, *, max_vectors: int = 500_000) -> None:
        max_vectors = max(max_vectors, self._train_target())  # creates index_ if needed
        if self.index_.is_trained:
            return
        try:
            F.train_faiss(self.index_, vecs, factory=self.factory_, max_vectors=max_vectors)
        except ValueError:
            self.index_ = None  # no half-trained index (a retry would add centroids twice)
            raise

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
        self._check_writable("add")
        ids = self._casings.check_new_ids(ids, len(scans_or_descriptors))
        n, done, pending = len(ids), 0, 0
        batch_ids: list[int] = []
        batch: list[CasingRows] = []
        chunk = _ADD_CHUNK
        if self.index_ is None or not self.index_.is_trained:  # trained on the first batch
            chunk = max(chunk, self._train_target())
        for cid, item in zip(ids, scans_or_descriptors, strict=True):
            given = casing_rows(item, f"casing {int(cid)}")
            if self.max_stored is not None:  # embed lists the strongest first
                given = given._replace(rows=given.rows[: int(self.max_stored)])
            batch_ids.append(int(cid))
            batch.append(given)
            pending += len(given.rows)
            done += 1
            if pending >= chunk:
                self._add_batch(batch_ids, batch)
                batch_ids, batch, pending, chunk = [], [], 0, _ADD_CHUNK
                if progress is not None:
                    progress(done, n)
        if batch_ids:
            self._add_batch(batch_ids, batch)
        if progress is not None:
            progress(n, n)

    def _add_batch(self, ids: list[int], batch: list[CasingRows]) -> None:
        table = np.concatenate([c.rows for c in batch])  # never empty: see add
        vecs = np.ascontiguousarray(table[:, POSE_COLUMNS:], dtype=np.float32)
        if self.index_ is None or not self.index_.is_trained:
            self._train(vecs)
        vec_ids = self._casings.append(ids, batch)
        if len(vecs):
            self.index_.add_with_ids(vecs, vec_ids)

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
        self._check_writable("remove")
        removed = self._casings.remove(ids)  # HNSW cannot free vectors: masked by alive_
        if removed.n_casings and not F.remove_vectors(self.index_, removed.vectors):
            n_masked = len(removed.vectors)
            logger.debug("%s cannot remove vectors; %d masked", self.factory_, n_masked)
        return removed.n_casings

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
        k = check_k(k)
        q = prepare_queries(
            scans_or_descriptors,
            query_keypoints=self.query_keypoints,
            handedness=self.handedness,
            live_hand=self.hand_[self.alive_],
        )
        out_ids = np.full((q.nq, k), -1, np.int64)
        out_scores = np.zeros((q.nq, k), np.float32)
        if q.nq == 0 or self.index_ is None or self.ntotal == 0 or len(self) == 0:
            return out_ids, out_scores
        self._check_params()
        dist, labels = self._knn(q.vecs)
        for qi in range(q.nq):
            best = self._query_votes(q, qi, labels, dist)
            ids = self.casing_ids_[best.rows]
            out_ids[qi], out_scores[qi] = top_k(ids, best.votes, best.nearest, best.rows, k)
        return out_ids, out_scores

    def _knn(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances and vector numbers of each row's ``neighbors`` nearest stored keypoints."""
        self._apply_search_params()
        kk = min(int(self.neighbors), self.ntotal)
        if len(vecs) and kk:
            with F.omp_threads_allowed():
                return self.index_.search(vecs, kk)
        return np.zeros((len(vecs), kk), np.float32), np.full((len(vecs), kk), -1, np.int64)

    def _query_votes(self, q: Queries, qi: int, labels, dist) -> CasingVotes:
        """Votes of query ``qi`` (both reflections, wrong hands dropped) per casing row."""
        results: list[CasingVotes] = []
        for sl, mirrored in q.parts(qi):
            votes = self._vote(q.table[sl, :POSE_COLUMNS], labels[sl], dist[sl])
            # handedness known on both sides decides which reflection may vote
            results.append(drop_wrong_hand(votes, self.hand_, q.hand[qi], mirrored=mirrored))
        return best_of(results)

    def _apply_search_params(self) -> None:
        F.apply_search_params(self.index_, nprobe=self.nprobe, ef_search=self.ef_search)

    def _vote(self, query_pose: np.ndarray, labels: np.ndarray, dist: np.ndarray) -> CasingVotes:
        """`pose_vote` of one query's neighbours over this index's stored casings."""
        return pose_vote(
            query_pose,
            labels,
            dist,
            starts=self._casings.starts,
            alive=self._casings.alive,
            stored_pose=self._casings.pose,
            angle_bin_deg=self.angle_bin_deg,
            shift_bin_um=self.shift_bin_um,
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, directory: bool = False) -> None:
        """Write the index (FAISS data, poses, ids, factory, descriptor version) to a file.

        The file is replaced atomically (`balllink._files.atomic_path`): a crash while saving
        leaves the previous file whole. ``directory=True`` writes a folder of FAISS's own
        file and ``.npy`` arrays instead (`balllink.index._file.write_index_dir`), the form
        ``load(path, mmap=True)`` can memory-map.

        Examples
        --------
        >>> import tempfile, numpy as np, balllink as bl
        >>> z = np.random.default_rng(5).normal(size=(100, 100)).astype(np.float32)
        >>> idx = bl.CasingIndex(); idx.add([3], [bl.Scan(z, spacing_um=12.5)])
        >>> path = tempfile.mkdtemp() + "/casings.blx"
        >>> idx.save(path); len(bl.CasingIndex.load(path))
        1
        """
        contents = IndexFile(self._params(), self.index_, self._casings)
        (write_index_dir if directory else write_index_file)(path, contents)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> CasingIndex:
        """Read an index written by `save`.

        ``mmap=True`` (a folder saved with ``directory=True``): the FAISS data and the side
        arrays are memory-mapped, not read; a 1e6-casing index opens in well under a second
        and pages come from disk as searches touch them. Such an index is read-only.

        Raises
        ------
        IndexFormatError
            The file is missing, truncated, not a balllink index, or was built with another
            descriptor version (rebuild it from the scans).
        ValueError
            ``mmap=True`` for a single-file index (save it with ``directory=True``).

        Examples
        --------
        >>> import balllink as bl
        >>> try:
        ...     bl.CasingIndex.load(__file__)
        ... except bl.IndexFormatError as exc:
        ...     print("refused")
        refused
        """
        contents = read_index(path, mmap=mmap)
        params = dict(contents.params)
        factory = params.pop("factory", None)
        try:
            self = cls(factory, **params)
            self._check_params()
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(
                f"{path}: index parameters not understood by this balllink ({exc})"
            ) from None
        self.index_, self._casings = contents.index, contents.casings
        self._mapped_from = str(path) if mmap else None
        return self
