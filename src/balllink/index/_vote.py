"""The pose vote of `balllink.CasingIndex`: matched keypoints in, one score per casing out.

A pure function of arrays (no index state), so it can be tested on planted poses.

Every nearest-neighbour hit (query keypoint ``i``, stored keypoint ``j``) votes for
``(casing of j, rotation, shift)``: the rotation that maps the stored keypoint's
orientation onto the query's, and the shift that then maps its position onto the query's::

    rot = angle_i - angle_j
    t   = p_i - R(rot) p_j          (p = (y, x) in µm, R(a) = [[cos a, -sin a], [sin a, cos a]])

The poses are binned (``angle_bin_deg`` × ``shift_bin_um`` × ``shift_bin_um``) over the
2×2×2 grids offset by half a bin, so two votes closer than half a bin always share a bin of
one grid. A casing's score is the number of distinct query keypoints in its best bin; the
distance of its nearest hit orders casings of equal score. The vote without pose agreement
(neighbours simply counted per casing) gives Fadul recall@10 0.99 but ranks ties by chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["CasingVotes", "best_of", "drop_wrong_hand", "pose_vote"]

# A bin key packs (casing, angle bin, y bin, x bin) into one int64: 20 bits per shift bin
# (offset by 2**19 so negative shifts fit), 6 bits of angle bin (``n_ang`` <= 30 for bins
# of >= 12°; up to 64 allowed) and the casing's local number above bit 40.
_SHIFT_BITS = 20
_SHIFT_OFFSET = 1 << (_SHIFT_BITS - 1)
_ANGLE_SLOTS = 64
_CASING_SHIFT = 2 * _SHIFT_BITS


class CasingVotes(NamedTuple):
    """Votes of one query: per stored casing row, its best-bin vote and nearest hit."""

    rows: np.ndarray  #: int64, casing rows (positions in the index's casing arrays), sorted
    votes: np.ndarray  #: float32, query keypoints in the casing's best pose bin
    nearest: np.ndarray  #: float32, descriptor distance of the casing's nearest hit


def _no_votes() -> CasingVotes:
    return CasingVotes(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))


def pose_vote(
    query_pose: np.ndarray,
    labels: np.ndarray,
    dist: np.ndarray,
    *,
    starts: np.ndarray,
    alive: np.ndarray,
    stored_pose: np.ndarray,
    angle_bin_deg: float,
    shift_bin_um: float,
) -> CasingVotes:
    """Hough vote over (casing, rotation, shift) for one query casing.

    Parameters
    ----------
    query_pose : ndarray, shape (n, 3)
        ``(y_um, x_um, angle_rad)`` of each query keypoint.
    labels : ndarray of int, shape (n, k)
        Stored keypoint (vector) numbers of each query keypoint's ``k`` neighbours; ``-1``
        for none (as FAISS returns).
    dist : ndarray, shape (n, k)
        Descriptor distance of each neighbour.
    starts : ndarray of int64, shape (n_casings + 1,)
        Casing row ``r`` owns stored keypoints ``starts[r]`` to ``starts[r + 1] - 1``.
    alive : ndarray of bool, shape (n_casings,)
        Casing rows still in the index; hits on removed casings are ignored.
    stored_pose : ndarray, shape (starts[-1], 3)
        ``(y_um, x_um, angle_rad)`` of every stored keypoint.
    angle_bin_deg, shift_bin_um : float
        Pose bin size.

    Returns
    -------
    CasingVotes
        The casing rows hit (sorted), their votes and nearest-hit distances.

    Examples
    --------
    Two stored casings of two keypoints each; the query is casing 1 turned by 90° and
    shifted by (100, 0) µm, and each query keypoint also hits a keypoint of casing 0:

    >>> import numpy as np
    >>> stored = np.array([[0, 0, 0], [500, 0, 1], [0, 0, 0], [0, 300, 0.5]], float)
    >>> query = np.array([[100, 0, np.pi / 2], [-200, 0, 0.5 + np.pi / 2]])
    >>> labels = np.array([[2, 0], [3, 1]])
    >>> dist = np.array([[0.1, 0.5], [0.2, 0.4]])
    >>> v = pose_vote(query, labels, dist, starts=np.array([0, 2, 4]),
    ...               alive=np.array([True, True]), stored_pose=stored,
    ...               angle_bin_deg=12.0, shift_bin_um=150.0)
    >>> v.rows.tolist(), v.votes.tolist()
    ([0, 1], [1.0, 2.0])
    """
    kk = labels.shape[1] if labels.ndim == 2 else 0
    qi = np.repeat(np.arange(len(labels), dtype=np.int64), kk)
    vec = labels.ravel().astype(np.int64)
    d = np.asarray(dist, np.float32).ravel()
    good = vec >= 0
    qi, vec, d = qi[good], vec[good], d[good]
    row = np.searchsorted(starts, vec, side="right") - 1
    live = alive[row]
    qi, vec, row, d = qi[live], vec[live], row[live], d[live]
    if len(vec) == 0:
        return _no_votes()
    pose = stored_pose[vec].astype(np.float64)
    q = query_pose[qi].astype(np.float64)
    rot = q[:, 2] - pose[:, 2]
    c, s = np.cos(rot), np.sin(rot)
    ty = q[:, 0] - (c * pose[:, 0] - s * pose[:, 1])
    tx = q[:, 1] - (s * pose[:, 0] + c * pose[:, 1])
    n_ang = max(1, round(2 * np.pi / np.radians(angle_bin_deg)))
    a = np.mod(rot, 2 * np.pi) / (2 * np.pi) * n_ang
    by, bx = ty / shift_bin_um, tx / shift_bin_um
    rows_u, local = np.unique(row, return_inverse=True)
    best = np.zeros(len(rows_u), np.int64)
    top = (1 << _SHIFT_BITS) - 1
    for off in range(8):  # the 2×2×2 grids offset by half a bin
        oa, oy, ox = (off >> 2) & 1, (off >> 1) & 1, off & 1
        ka = (np.floor(a + 0.5 * oa).astype(np.int64)) % n_ang
        ky = np.clip(np.floor(by + 0.5 * oy).astype(np.int64) + _SHIFT_OFFSET, 0, top)
        kx = np.clip(np.floor(bx + 0.5 * ox).astype(np.int64) + _SHIFT_OFFSET, 0, top)
        key = (local.astype(np.int64) * _ANGLE_SLOTS + ka) << _CASING_SHIFT
        key |= (ky << _SHIFT_BITS) | kx
        pair = np.unique(np.stack([key, qi], axis=1), axis=0)[:, 0]  # one vote per keypoint
        bins, counts = np.unique(pair, return_counts=True)
        np.maximum.at(best, (bins >> _CASING_SHIFT) // _ANGLE_SLOTS, counts)
    nearest = np.full(len(rows_u), np.inf, np.float32)
    np.minimum.at(nearest, local, d)
    return CasingVotes(rows_u, best.astype(np.float32), nearest)


def drop_wrong_hand(
    votes: CasingVotes, stored_hand: np.ndarray, query_hand: int, *, mirrored: bool
) -> CasingVotes:
    """Drop the votes of casings whose known handedness contradicts the reflection voted.

    ``stored_hand`` holds the handedness code of every casing row and ``query_hand`` that
    of the query (0 unknown, 1 viewed, 2 mirrored). The query's own image (``mirrored``
    False) may vote only for casings of its handedness, its mirror image only for the
    others; a casing or query of unknown handedness keeps every vote.

    Examples
    --------
    >>> import numpy as np
    >>> v = CasingVotes(np.array([0, 1, 2]), np.ones(3, np.float32), np.zeros(3, np.float32))
    >>> drop_wrong_hand(v, np.array([1, 2, 0], np.int8), 1, mirrored=False).rows.tolist()
    [0, 2]
    >>> drop_wrong_hand(v, np.array([1, 2, 0], np.int8), 1, mirrored=True).rows.tolist()
    [1, 2]
    """
    if not query_hand or votes.rows.size == 0:
        return votes
    stored = stored_hand[votes.rows]
    known = stored > 0
    wrong = known & ((stored == query_hand) if mirrored else (stored != query_hand))
    keep = ~wrong
    return CasingVotes(votes.rows[keep], votes.votes[keep], votes.nearest[keep])


def best_of(results: Sequence[CasingVotes]) -> CasingVotes:
    """Merge the votes of a query's reflections: each casing keeps its best vote and hit.

    Examples
    --------
    >>> import numpy as np
    >>> f32 = lambda *x: np.array(x, np.float32)
    >>> own = CasingVotes(np.array([0, 3]), votes=f32(5, 1), nearest=f32(0.25, 0.75))
    >>> mirror = CasingVotes(np.array([3]), votes=f32(4), nearest=f32(0.5))
    >>> m = best_of([own, mirror])
    >>> m.rows.tolist(), m.votes.tolist(), m.nearest.tolist()
    ([0, 3], [5.0, 4.0], [0.25, 0.5])
    """
    if len(results) == 1:
        return results[0]
    rows = np.concatenate([r.rows for r in results])
    votes = np.concatenate([r.votes for r in results])
    nearest = np.concatenate([r.nearest for r in results])
    if rows.size == 0:
        return CasingVotes(rows, votes, nearest)
    uniq, inv = np.unique(rows, return_inverse=True)
    best = np.zeros(len(uniq), np.float32)
    near = np.full(len(uniq), np.inf, np.float32)
    np.maximum.at(best, inv, votes)
    np.minimum.at(near, inv, nearest)
    return CasingVotes(uniq, best, near)
