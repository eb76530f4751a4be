"""Coarse global alignment of two prepared scans over the full 360° (issue 4, first stage).

Casework orientation is unknown, so before the cell search (``compare``) looks in a narrow
rotation window, this stage proposes a few candidate global poses of one scan relative to
another. Both scans are reduced to a coarse grid (NaN-aware block means, 50 µm by default)
and high-passed there (NaN-aware Gaussian local-mean removal); one of them is rotated over
the whole circle at a coarse angle step (4°), and for every angle the masked normalised
cross-correlation over all translations is computed at once by FFT. The angle scan uses a
three-correlation form (overlap means taken as zero, which the high-pass makes true to a
good approximation); the best angles are then refined (parabolic interpolation of the
score over angle) and re-measured with Padfield's exact masked NCC (2012: correlations of
values, squares and masks, so that every offset is normalised over the pixels valid in
both scans, never NaN-to-zero), with a sub-pixel peak fit for the translation.

A template caches its rotated copies and spectra, so a query compared with many
candidates (``coarse_align_many``) pays them once. Templates are built in
``_template``, pose maths live in ``_pose``, the search in ``_search``; :func:`masked_ncc`
is the library's one masked NCC for NaN-holed grids.

Pose convention
---------------
A :class:`Pose` ``(rotation_deg, dy_um, dx_um, score)`` returned by
``coarse_align(a, b)`` places ``b`` on ``a``. Positions are micrometres ``(y, x)`` = (row,
column), row 0 at the top, measured from each scan's array centre
``((ny - 1) / 2 * spacing_y, (nx - 1) / 2 * spacing_x)``. A point at ``q_b`` in ``b`` lands
at ``q_a = R(theta) @ q_b + (dy_um, dx_um)`` in ``a`` with::

    y' = cos(theta) * y - sin(theta) * x
    x' = sin(theta) * y + cos(theta) * x

which is the rotation of ``skimage.transform.rotate(b, rotation_deg)`` and
``scipy.ndimage.rotate(b, rotation_deg, reshape=False)`` (counter-clockwise as displayed
with row 0 on top) followed by moving the content by ``(dy_um, dx_um)``.
:func:`pose_transform` applies a pose to points; :func:`invert_pose` gives the pose of
``a`` relative to ``b``. cmcR's "modal theta" (target rotated to match the reference) has
the opposite sign: ``rotation_deg ≈ -theta_cmcR (mod 360)`` for ``a`` = reference.
"""

from ._pose import Pose, angle_diff, invert_pose, pose_transform
from ._search import (
    coarse_align,
    coarse_align_either,
    coarse_align_many,
    masked_ncc,
)
from ._template import AlignmentTemplate, prepare_alignment

__all__ = [
    "AlignmentTemplate",
    "Pose",
    "angle_diff",
    "coarse_align",
    "coarse_align_either",
    "coarse_align_many",
    "invert_pose",
    "masked_ncc",
    "pose_transform",
    "prepare_alignment",
]
