"""Pose maths of the whole library (re-exported by `balllink.align`): `Pose`, its inverse,
its action on points, and the one angle wrap.

A :class:`Pose` ``(rotation_deg, dy_um, dx_um, score)`` places scan ``b`` on scan ``a``.
Positions are micrometres ``(y, x)`` = (row, column), row 0 at the top, measured from each
scan's array centre. A point at ``q_b`` in ``b`` lands at ``q_a = R(theta) @ q_b + (dy_um,
dx_um)`` in ``a`` with ``y' = cos(theta) y - sin(theta) x``, ``x' = sin(theta) y +
cos(theta) x``: the rotation of ``skimage.transform.rotate(b, rotation_deg)``
(counter-clockwise as displayed with row 0 on top).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["Pose", "angle_diff", "invert_pose", "pose_transform", "rotation_matrix"]


class Pose(NamedTuple):
    """One candidate pose of scan ``b`` relative to scan ``a`` (see `balllink.align`).

    Attributes
    ----------
    rotation_deg : float
        Rotation of ``b`` about its array centre, degrees in [0, 360), counter-clockwise as
        displayed with row 0 on top (``skimage.transform.rotate`` sense).
    dy_um, dx_um : float
        Translation (µm) of the rotated ``b`` centre relative to ``a``'s centre.
    score : float
        Masked normalised cross-correlation at the refinement grid (Pearson over the
        jointly valid pixels), in [-1, 1]; higher is better (NaN when a pose was not
        scored, e.g. fitted to matched cells).
    """

    rotation_deg: float
    dy_um: float
    dx_um: float
    score: float


def rotation_matrix(theta_deg: float) -> np.ndarray:
    """The 2 x 2 matrix of the pose convention, acting on ``(y, x)`` column vectors.

    Examples
    --------
    >>> rotation_matrix(90.0).round(6) + 0.0
    array([[ 0., -1.],
           [ 1.,  0.]])
    """
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def invert_pose(pose: Pose) -> Pose:
    """The pose of ``a`` relative to ``b`` given that of ``b`` relative to ``a``.

    Examples
    --------
    >>> from balllink.align import Pose, invert_pose
    >>> p = invert_pose(Pose(90.0, 10.0, 0.0, 0.5))
    >>> round(p.rotation_deg, 6), round(p.dy_um, 6) + 0.0, round(p.dx_um, 6) + 0.0
    (270.0, 0.0, 10.0)
    """
    d = -rotation_matrix(-pose.rotation_deg) @ np.array([pose.dy_um, pose.dx_um])
    return Pose((-pose.rotation_deg) % 360.0, float(d[0]), float(d[1]), pose.score)


def pose_transform(pose: Pose, yx_um: np.ndarray) -> np.ndarray:
    """Map points of ``b`` (µm from b's array centre, shape (..., 2) as (y, x)) into ``a``.

    Examples
    --------
    >>> import numpy as np
    >>> from balllink.align import Pose, pose_transform
    >>> pose_transform(Pose(90.0, 0.0, 5.0, 1.0), np.array([0.0, 10.0])).round(6) + 0.0
    array([-10.,   5.])
    """
    pts = np.asarray(yx_um, dtype=float)
    return pts @ rotation_matrix(pose.rotation_deg).T + np.array([pose.dy_um, pose.dx_um])


def angle_diff(a: float, b: float) -> float:
    """Distance between two angles on the circle, degrees in [0, 180].

    Examples
    --------
    >>> angle_diff(350.0, 10.0), angle_diff(-90.0, 90.0), angle_diff(5.0, 365.0)
    (20.0, 180.0, 0.0)
    """
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)
