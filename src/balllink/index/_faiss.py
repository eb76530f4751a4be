"""FAISS behind one module: the factory, search parameters, training, removal, bytes.

`balllink.CasingIndex` keeps the FAISS index of the keypoint descriptors; everything it
asks of FAISS goes through these functions, so FAISS is imported here and nowhere else.

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
keypoints per casing (recall@10 0.72) and 13-byte codes (0.93).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np
from faiss.contrib.clustering import two_level_clustering

from .._threads import threads_allowed
from ..features import DESCRIPTOR_DIM

__all__ = [
    "apply_search_params",
    "deserialize",
    "new_faiss",
    "read_faiss",
    "remove_vectors",
    "serialize",
    "train_faiss",
    "train_target",
    "write_faiss",
]

logger = logging.getLogger(__name__)

#: Above this many inverted lists the coarse centroids are trained by two-level k-means
#: (sqrt(nlist) clusters, then each split): flat k-means over 32k+ centroids takes hours
#: on 2 cores, two-level about a minute.
_TWO_LEVEL_NLIST = 4096
#: Training vectors wanted per inverted list.
_TRAIN_PER_LIST = 32


def new_faiss(factory: str) -> faiss.Index:
    """An empty FAISS index of `DESCRIPTOR_DIM`-d vectors that stores 64-bit ids.

    Examples
    --------
    >>> new_faiss("Flat").ntotal, new_faiss("IVF4,Flat").is_trained
    (0, False)
    """
    try:
        inner = faiss.index_factory(DESCRIPTOR_DIM, factory, faiss.METRIC_L2)
    except RuntimeError as exc:
        raise ValueError(
            f"factory={factory!r} is not a FAISS index factory string usable for "
            f"{DESCRIPTOR_DIM}-d vectors (try 'Flat', 'HNSW32', 'IVF1024,PQ13'; the PQ "
            f"size must divide {DESCRIPTOR_DIM}): {exc}"
        ) from None
    if faiss.try_extract_index_ivf(inner) is not None:
        return inner  # IVF stores ids itself: no second 8-byte id per vector
    return faiss.IndexIDMap2(inner)


@contextmanager
def omp_threads_allowed() -> Iterator[None]:
    """FAISS's OpenMP threads cut to `balllink._threads.threads_allowed` inside
    (process-wide; restored after); unchanged when this thread has no limit.

    Under a `balllink._threads.thread_limit` the caller shares the cores with other
    processes (a Dask client beside its workers): OpenMP threads that wait for a core spin,
    and a batch search took three times as long as with one thread.

    Examples
    --------
    >>> from balllink._threads import thread_limit
    >>> with thread_limit(1), omp_threads_allowed():
    ...     faiss.omp_get_max_threads()
    1
    """
    before = faiss.omp_get_max_threads()
    n = threads_allowed(before)
    if n != before:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            faiss.omp_set_num_threads(before)


def apply_search_params(index: faiss.Index, *, nprobe: int, ef_search: int) -> None:
    """Set the inverted lists visited (IVF) and the HNSW search depth on ``index``."""
    inner = index
    if isinstance(inner, faiss.IndexIDMap):
        inner = faiss.downcast_index(inner.index)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):  # IVF..._HNSW: the coarse search must see nprobe
            quantizer.hnsw.efSearch = max(int(ef_search), 2 * int(nprobe))
    base = inner
    if isinstance(base, faiss.IndexPreTransform):
        base = faiss.downcast_index(base.index)
    if hasattr(base, "hnsw"):  # only HNSW indexes have a search depth
        base.hnsw.efSearch = int(ef_search)


def train_target(index: faiss.Index) -> int:
    """Training vectors wanted by an (untrained) index: 32 per inverted list, else 0.

    Examples
    --------
    >>> train_target(new_faiss("IVF8,Flat")), train_target(new_faiss("Flat"))
    (256, 0)
    """
    ivf = faiss.try_extract_index_ivf(index)
    return 0 if ivf is None else _TRAIN_PER_LIST * int(ivf.nlist)


def train_faiss(index: faiss.Index, vecs: np.ndarray, *, factory: str, max_vectors: int) -> None:
    """Train ``index`` on at most ``max_vectors`` of ``vecs`` (a fixed random subset).

    Above `_TWO_LEVEL_NLIST` lists a plain IVF's coarse centroids come from two-level
    k-means. Raises ValueError (naming ``factory`` and the fix) when FAISS refuses; the
    index may then be half trained and must be dropped.

    Examples
    --------
    >>> import numpy as np
    >>> index = new_faiss("IVF2,Flat")
    >>> vecs = np.random.default_rng(0).normal(size=(100, 104)).astype(np.float32)
    >>> train_faiss(index, vecs, factory="IVF2,Flat", max_vectors=50); index.is_trained
    True
    """
    ivf = faiss.try_extract_index_ivf(index)
    big = ivf is not None and ivf.nlist > _TWO_LEVEL_NLIST
    plain_ivf = isinstance(faiss.downcast_index(index), faiss.IndexIVF)
    if big and not plain_ivf:
        logger.warning(
            "%s: a transform precedes the inverted file, so its %d lists are trained by "
            "flat k-means (slow); prefer a plain IVF factory",
            factory,
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
        index.train(vecs)
    except RuntimeError as exc:
        raise ValueError(
            f"cannot train FAISS index {factory!r} on {len(vecs)} keypoint vectors "
            f"(about {len(vecs) // 100} casings): {exc}. Call fit() with more casings or "
            "use a smaller factory (fewer IVF lists)"
        ) from None
    logger.info("trained %s on %d vectors", factory, len(vecs))


def remove_vectors(index: faiss.Index, vec_ids: np.ndarray) -> bool:
    """Free vectors ``vec_ids``; False for indexes that cannot (HNSW keeps them)."""
    try:
        index.remove_ids(faiss.IDSelectorBatch(vec_ids))
    except RuntimeError:
        return False
    return True


def serialize(index: faiss.Index | None) -> np.ndarray:
    """The bytes of ``index`` as uint8 (empty for no index); `deserialize` reads them."""
    return np.zeros(0, np.uint8) if index is None else faiss.serialize_index(index)


def deserialize(blob: np.ndarray) -> faiss.Index | None:
    """The index written by `serialize` (RuntimeError if the bytes are damaged).

    Examples
    --------
    >>> deserialize(serialize(new_faiss("HNSW16"))).ntotal, deserialize(serialize(None))
    (0, None)
    """
    return faiss.deserialize_index(blob) if blob.size else None


def write_faiss(index: faiss.Index, path: str) -> None:
    """Write ``index`` to ``path`` in FAISS's own file format (`read_faiss` reads it)."""
    faiss.write_index(index, str(path))


def read_faiss(path: str, *, mmap: bool) -> faiss.Index:
    """Read a file of `write_faiss`; ``mmap``: map its codes and inverted lists read-only.

    With ``mmap`` FAISS maps the file (``IO_FLAG_MMAP_IFC`` for the codes of flat indexes,
    ``IO_FLAG_MMAP`` for the inverted lists of IVF ones) instead of reading it: pages are
    loaded as searches touch them and shared by every process that maps the same file.
    RuntimeError if the file is not a FAISS index.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/x.faiss"
    >>> write_faiss(new_faiss("Flat"), path); read_faiss(path, mmap=True).ntotal
    0
    """
    if not mmap:
        return faiss.read_index(str(path))
    try:  # flat codes mapped (IO_FLAG_MMAP_IFC); FAISS refuses it for inverted lists
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)  # IVF: lists mapped on disk
