"""Query casings as the index searches them, and the ranking of vote results.

Shared by `balllink.CasingIndex` and `balllink.index.ShardedIndex`, so that a sharded
search prepares its queries and ranks its candidates exactly as one index does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from ..features import POSE_COLUMNS, mirror_keypoints
from ._casings import casing_rows

__all__ = ["Queries", "check_k", "prepare_queries", "top_k"]


class Queries(NamedTuple):
    """The keypoint rows searched for a batch of query casings."""

    table: np.ndarray  #: float32 rows of every part (queries first, then mirror images)
    bounds: np.ndarray  #: int64, part ``p`` owns ``table[bounds[p]:bounds[p + 1]]``
    hand: list[int]  #: handedness code of each query (0 unknown)
    mirror_part: dict[int, int]  #: query -> part number of its mirror image
    nq: int  #: number of query casings

    @property
    def vecs(self) -> np.ndarray:
        """The descriptors of `table`, C-contiguous float32 (what FAISS searches)."""
        return np.ascontiguousarray(self.table[:, POSE_COLUMNS:], dtype=np.float32)

    def parts(self, qi: int) -> list[tuple[slice, bool]]:
        """``(rows of table, mirrored)`` of query ``qi``: its own image, then its mirror."""
        out = []
        for part, mirrored in ((qi, False), (self.mirror_part.get(qi), True)):
            if part is not None:
                out.append((slice(int(self.bounds[part]), int(self.bounds[part + 1])), mirrored))
        return out


def check_k(k) -> int:
    """``k`` as int, at least 1 (ValueError naming it otherwise)."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def prepare_queries(
    items: Iterable,
    *,
    query_keypoints: int | None,
    handedness: str,
    live_hand: np.ndarray,
) -> Queries:
    """Embed or check the queries, keep their strongest keypoints, add mirror images.

    With ``handedness="both"`` a query also searches as its mirror image unless its
    handedness is known and agrees with every live stored casing (``live_hand``: the
    handedness codes of the stored casings still in the index, all shards together).

    Examples
    --------
    >>> import numpy as np
    >>> q = prepare_queries([np.zeros((3, 107), np.float32)], query_keypoints=2,
    ...                     handedness="both", live_hand=np.zeros(0, np.int8))
    >>> q.nq, q.bounds.tolist(), q.mirror_part
    (1, [0, 2, 4], {0: 1})
    """
    given = [casing_rows(q, f"query {i}") for i, q in enumerate(items)]
    queries, qhand = [g.rows for g in given], [g.hand for g in given]
    if query_keypoints is not None:
        queries = [q[: int(query_keypoints)] for q in queries]  # strongest first
    nq = len(queries)
    mirror_part: dict[int, int] = {}
    if handedness == "both":
        for qi in range(nq):
            # a query of known handedness needs no mirror vote when every stored casing
            # is known to agree with it
            if not (qhand[qi] and (live_hand == qhand[qi]).all()):
                mirror_part[qi] = len(queries)
                queries.append(mirror_keypoints(queries[qi]))
    width = queries[0].shape[1] if queries else POSE_COLUMNS
    table = np.concatenate(queries) if queries else np.zeros((0, width), np.float32)
    bounds = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    return Queries(table, bounds, qhand, mirror_part, nq)


def top_k(
    ids: np.ndarray, votes: np.ndarray, nearest: np.ndarray, tiebreak: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best casings (most votes, then nearest hit, then ``tiebreak``), padded.

    Examples
    --------
    >>> import numpy as np
    >>> f = lambda *x: np.array(x, np.float32)
    >>> top_k(np.array([7, 8, 9]), f(2, 5, 2), f(0.1, 0.3, 0.05), np.arange(3), 4)
    (array([ 8,  9,  7, -1]), array([5., 2., 2., 0.], dtype=float32))
    """
    out_ids = np.full(k, -1, np.int64)
    out_scores = np.zeros(k, np.float32)
    order = np.lexsort((tiebreak, nearest, -votes))[:k]
    out_ids[: len(order)] = ids[order]
    out_scores[: len(order)] = votes[order]
    return out_ids, out_scores
