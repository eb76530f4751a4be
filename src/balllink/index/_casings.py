"""What `balllink.CasingIndex` keeps of each casing beside FAISS.

FAISS holds one descriptor vector per stored keypoint, numbered ``0, 1, 2, ...`` in order
of addition. `CasingTable` records which numbers belong to which casing (casing row ``r``
owns vectors ``starts[r]`` to ``starts[r + 1] - 1``), the casing's id, whether it is still
in the index, its handedness and the pose of each of its keypoints. `casing_rows` turns
what a caller gives (a prepared scan or its `embed` table) into keypoint rows and a
handedness code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._scan import Scan
from ..features import DESCRIPTOR_DIM, POSE_COLUMNS, embed

__all__ = ["HAND_CODES", "CasingRows", "CasingTable", "Removed", "casing_rows"]

#: Handedness codes kept per casing: 0 unknown, 1 "viewed", 2 "mirrored".
HAND_CODES = {"viewed": 1, "mirrored": 2}


class CasingRows(NamedTuple):
    """One casing as the index takes it."""

    rows: np.ndarray  #: float32 (n, POSE_COLUMNS + DESCRIPTOR_DIM), strongest keypoint first
    hand: int  #: handedness code (0 unknown: descriptor tables carry none)


def casing_rows(item, what: str) -> CasingRows:
    """Embed a prepared scan, or check a descriptor table from `embed`.

    Examples
    --------
    >>> import numpy as np
    >>> casing_rows(np.zeros((2, 107), np.float32), "query 0").rows.shape
    (2, 107)
    >>> casing_rows(np.zeros((2, 5)), "query 0")
    Traceback (most recent call last):
    ...
    ValueError: query 0: expected a prepared bl.Scan or a descriptor table from bl.embed of shape (n, 107), got shape (2, 5)
    """
    if isinstance(item, Scan):
        return CasingRows(embed(item), HAND_CODES.get(item.meta.get("handedness"), 0))
    rows = np.asarray(item)
    if rows.ndim != 2 or rows.shape[1] != POSE_COLUMNS + DESCRIPTOR_DIM:
        raise ValueError(
            f"{what}: expected a prepared bl.Scan or a descriptor table from bl.embed of "
            f"shape (n, {POSE_COLUMNS + DESCRIPTOR_DIM}), got shape {rows.shape}"
        )
    if not np.isfinite(rows).all():
        raise ValueError(f"{what}: descriptor table contains NaN or inf")
    return CasingRows(np.ascontiguousarray(rows, dtype=np.float32), 0)


class Removed(NamedTuple):
    """What `CasingTable.remove` took out."""

    n_casings: int  #: casings removed
    vectors: np.ndarray  #: int64 numbers of their keypoint vectors


class CasingTable:
    """Casing rows of an index: ids, keypoint vector ranges, liveness, handedness, poses.

    Examples
    --------
    >>> import numpy as np
    >>> t = CasingTable()
    >>> kp = lambda n: np.zeros((n, POSE_COLUMNS + DESCRIPTOR_DIM), np.float32)
    >>> t.append([7, 9], [CasingRows(kp(2), hand=1), CasingRows(kp(3), hand=0)])
    array([0, 1, 2, 3, 4])
    >>> t.remove([9, 4])
    Removed(n_casings=1, vectors=array([2, 3, 4]))
    >>> len(t), 7 in t, 9 in t, t.alive.tolist()
    (1, True, False, [True, False])
    """

    def __init__(self) -> None:
        self.casing_ids = np.zeros(0, np.int64)
        self.starts = np.zeros(1, np.int64)
        self.alive = np.zeros(0, bool)
        self.hand = np.zeros(0, np.int8)
        self._pose_parts: list[np.ndarray] = []  # concatenated lazily (adds stay O(n))
        self._pose = np.zeros((0, POSE_COLUMNS), np.float16)
        self._row_of_map: dict[int, int] | None = {}

    @classmethod
    def from_arrays(
        cls,
        casing_ids: np.ndarray,
        starts: np.ndarray,
        alive: np.ndarray,
        hand: np.ndarray,
        pose: np.ndarray,
    ) -> CasingTable:
        """The table of saved arrays (as `balllink.index._file.IndexFile` holds them)."""
        self = cls()
        self.casing_ids, self.starts, self.alive, self.hand = casing_ids, starts, alive, hand
        self._pose = pose
        self._row_of_map = None  # built on first use: opening a large file stays cheap
        return self

    @property
    def _row_of(self) -> dict[int, int]:
        """Casing id -> row of every live casing."""
        if self._row_of_map is None:
            ids, live = self.casing_ids.tolist(), self.alive.tolist()
            self._row_of_map = {c: r for r, c in enumerate(ids) if live[r]}
        return self._row_of_map

    @property
    def pose(self) -> np.ndarray:
        """Pose (y_um, x_um, angle_rad) of every stored keypoint vector, float16."""
        if self._pose_parts:
            self._pose = np.concatenate([self._pose, *self._pose_parts])
            self._pose_parts = []
        return self._pose

    @property
    def n_vectors(self) -> int:
        """Keypoint vectors numbered so far (removed casings' included)."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return int(self.alive.sum())

    def __contains__(self, casing_id) -> bool:
        return int(casing_id) in self._row_of

    def check_new_ids(self, ids, n_items: int) -> np.ndarray:
        """``ids`` as int64 after checking they are new, distinct and one per item."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D sequence of integers, got {ids!r}")
        ids = ids.astype(np.int64)
        if len(ids) != n_items:
            raise ValueError(f"add got {len(ids)} ids for {n_items} scans/descriptors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("add: ids contain duplicates")
        present = [int(i) for i in ids if int(i) in self._row_of]
        if present:
            raise ValueError(f"casing ids already in the index: {present[:5]}; remove() them first")
        return ids

    def append(self, ids: Sequence[int], casings: Sequence[CasingRows]) -> np.ndarray:
        """Record casings (their keypoint poses and handedness); their new vector numbers."""
        first = self.n_vectors
        base = len(self.casing_ids)
        counts = np.array([len(c.rows) for c in casings], np.int64)
        self.casing_ids = np.concatenate([self.casing_ids, np.asarray(ids, np.int64)])
        self.starts = np.concatenate([self.starts, first + np.cumsum(counts)])
        self.alive = np.concatenate([self.alive, np.ones(len(ids), bool)])
        self.hand = np.concatenate([self.hand, np.array([c.hand for c in casings], np.int8)])
        pose = [c.rows[:, :POSE_COLUMNS].astype(np.float16) for c in casings]
        self._pose_parts.append(np.concatenate(pose) if pose else self._pose[:0])
        for j, cid in enumerate(ids):
            self._row_of[int(cid)] = base + j
        return np.arange(first, self.n_vectors, dtype=np.int64)

    def remove(self, ids) -> Removed:
        """Mark the casings ``ids`` removed (unknown ids ignored)."""
        rows = [self._row_of.pop(int(i)) for i in np.atleast_1d(ids) if int(i) in self._row_of]
        self.alive[rows] = False
        ranges = [np.arange(self.starts[r], self.starts[r + 1], dtype=np.int64) for r in rows]
        return Removed(len(rows), np.concatenate([np.zeros(0, np.int64), *ranges]))
