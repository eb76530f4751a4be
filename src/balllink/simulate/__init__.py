"""Simulated casings with ground truth (issue 2).

A simulated firearm carries a *breech-face signature*: a band-limited, multi-scale random
surface plus class marks (parallel filing lines, circular machining arcs, or granular
texture). Each firing reproduces part of that signature on a casing, rotated by an
arbitrary angle and shifted, with partial contact, dropouts and fresh texture of its own.
Every scan comes with its truth (firearm, pose, the noise-free surface it carries, the
usable breech-face mask), so every later stage can be tested on planted answers.

Conventions (all public functions)
----------------------------------
*Grid.* Pixel ``(i, j)`` of a scan of shape ``(ny, nx)`` and spacing ``s`` µm lies at
``(y, x) = (i * s, j * s)`` µm; the *image centre* is pixel ``((ny - 1) / 2, (nx - 1) / 2)``.
Rows grow downwards, as in every image display.

*Pose.* A firearm's signature ``S`` is an image on the scan grid centred on the image
centre. Firing ``k`` is ``rotation_deg = θ`` (uniform in [0, 360)) and ``shift_um =
(dy, dx)``; the surface it carries is::

    scan = scipy.ndimage.shift(skimage.transform.rotate(S, θ), (dy / s, dx / s))

i.e. the signature rotated by ``+θ`` degrees counter-clockwise *as displayed* (skimage's
convention, rows down) about the image centre, then moved by ``dy`` µm down and ``dx`` µm
right. A feature at ``q = (y, x)`` µm from the image centre in ``S`` appears at
``R(θ) q + (dy, dx)`` with ``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]`` acting on
``(y, x)``. Two firings ``a``, ``b`` of one firearm are related by `relative_pose`:
``scan_b = shift(rotate(scan_a, θb - θa), t_b - R(θb - θa) t_a)``.

*Handedness.* A simulated scan is stored as the casing is viewed (``meta["handedness"] ==
"viewed"``). An export with the other handedness (`mirror`, ``casings(mirrored=...)``) is
``np.flipud`` of the viewed array (``meta["handedness"] == "mirrored"``, truth
``mirrored=True``): row ``i`` becomes row ``ny - 1 - i``, about the same image centre.
Its ``rotation_deg`` / ``shift_um`` still give the pose of the casing as viewed; the other
truth entries (centres, masks, ...) describe the stored array. `relative_pose` gives the
pose of ``b`` brought to ``a``'s handedness (``np.flipud(b)`` when exactly one of the two
is mirrored, as `balllink.compare` reports with ``Comparison.mirrored``) relative to ``a``
as stored: the viewed pose ``(θ, dy, dx)`` when ``a`` is viewed, ``(-θ, -dy, dx)`` when
``a`` is mirrored (flipping conjugates a rotation into its inverse).

*Cut.* ``geometry="varied"`` keeps every firing's surface and changes only which pixels
are kept: the breech-face outline and firing-pin hole vary per casing like real exports
(off-centre, touching or open holes, missing sectors, elliptical or clipped outlines; see
`casings`). `crop` cuts small windows, `annotations` makes FiX3P-like annotation masks.

Nothing here is random without a seed: the firearm signature comes from
``np.random.default_rng([seed, firearm_id])``, its manufacturing-batch component from
``np.random.default_rng([seed, 7919, batch_size, batch_id])`` and firing ``k`` from
``np.random.default_rng([seed, firearm_id, k])``, so any casing can be regenerated alone.
The varied cut, the mirrored choice, `cut_geometries`, `crop` and `annotations` draw from
separate streams ``np.random.default_rng([seed, a, b, 104729, kind])`` (kind 1-5), so the
options never change the surfaces of the default ones.
"""

from ._annotations import ANNOTATION_NAMES, annotations
from ._casings import SimulatedSet, casings, cut_geometries, iter_casings
from ._checks import GEOMETRIES
from ._crop import crop
from ._cuts import CUT_KINDS
from ._difficulty import DIFFICULTIES, Difficulty
from ._mirror import mirror
from ._truth import TRUTH_DTYPE, relative_pose

__all__ = [
    "ANNOTATION_NAMES",
    "CUT_KINDS",
    "DIFFICULTIES",
    "GEOMETRIES",
    "TRUTH_DTYPE",
    "Difficulty",
    "SimulatedSet",
    "annotations",
    "casings",
    "crop",
    "cut_geometries",
    "iter_casings",
    "mirror",
    "relative_pose",
]
