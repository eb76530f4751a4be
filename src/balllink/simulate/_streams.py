"""The random streams of the simulator: every draw comes from a seeded stream of its own.

The firearm signature comes from ``np.random.default_rng([seed, firearm_id])``, its
manufacturing-batch component from ``np.random.default_rng([seed, BATCH_TAG, batch_size,
batch_id])`` and firing ``k`` from ``np.random.default_rng([seed, firearm_id, k])`` (made
where they are used, in `balllink.simulate._generator`). The export options (the varied
cut, the mirrored choice, `cut_geometries`, `crop`, `annotations`) draw from `stream`:
``np.random.default_rng([seed, a, b, STREAM_TAG, kind])`` with a non-zero last entry, so
they never repeat a stream of the surfaces (those have at most four entries, and
SeedSequence pads with zeros) and the options never change the surfaces.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BATCH_TAG",
    "STREAM_ANNOTATE",
    "STREAM_CROP",
    "STREAM_CUT",
    "STREAM_CUTS",
    "STREAM_MIRROR",
    "STREAM_TAG",
    "stream",
]

#: Separates the batch random streams from the firearm streams.
BATCH_TAG = 7919
#: Tag of the export-option streams (see the module docstring).
STREAM_TAG = 104729
#: Kinds of export-option streams: varied cut, mirrored choice, `cut_geometries`,
#: `annotations`, `crop`.
STREAM_CUT, STREAM_MIRROR, STREAM_CUTS, STREAM_ANNOTATE, STREAM_CROP = 1, 2, 3, 4, 5


def stream(seed: int, a: int, b: int, kind: int) -> np.random.Generator:
    """A random stream of the export options (see `STREAM_TAG`).

    Examples
    --------
    >>> float(stream(0, 1, 2, STREAM_CUT).random()) == float(stream(0, 1, 2, 1).random())
    True
    """
    return np.random.default_rng([int(seed), int(a), int(b), STREAM_TAG, int(kind)])
