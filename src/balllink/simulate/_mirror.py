"""Mirrored exports: the same casing stored with the other handedness (``np.flipud``)."""

from __future__ import annotations

from collections.abc import Mapping

from .._scan import Scan
from ._truth import flip_truth, scan_truth

__all__ = ["mirror"]


def mirror(scan: Scan) -> Scan:
    """The same scan exported with the other handedness: rows reversed (``np.flipud``).

    Parameters
    ----------
    scan : Scan
        Any scan; a simulated one has its truth carried along.

    Returns
    -------
    Scan
        ``heights = np.flipud(scan.heights)`` (and the mask likewise), ``meta
        ["handedness"]`` switched between ``"viewed"`` and ``"mirrored"`` (a scan
        without one counts as ``"viewed"``), ``meta["crop"]["offset_px"]`` moved to the
        mirrored source. In ``meta["simulation"]``: ``mirrored`` switched; the arrays
        (``breech_face_mask``, ``clean_surface``), the centres ``*_center_um``
        (``y -> (ny - 1) * spacing - y``), ``primer_angle_deg`` and ``sector_deg`` follow
        the stored array; ``rotation_deg`` and ``shift_um`` still give the pose of the
        casing as viewed, so `balllink.simulate.relative_pose` stays exact. Mirroring
        twice gives the original back. Lazy truth arrays are loaded.

    Examples
    --------
    >>> import numpy as np
    >>> from balllink import simulate
    >>> scan = simulate.casings(1, 1, seed=0, shape=(64, 64), spacing_um=25.0).scans[0]
    >>> flipped = simulate.mirror(scan)
    >>> flipped.meta["handedness"], flipped.meta["simulation"]["mirrored"]
    ('mirrored', True)
    >>> bool(np.array_equal(flipped.heights, scan.heights[::-1], equal_nan=True))
    True
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"mirror() takes a Scan, got {type(scan).__name__}")
    ny, _ = scan.shape
    hand = scan.meta.get("handedness", "viewed")
    if hand not in ("viewed", "mirrored"):
        raise ValueError(
            f"meta['handedness'] is {hand!r}; mirror() needs 'viewed' or 'mirrored' "
            "(or no entry, read as 'viewed')"
        )
    # the flip itself (heights, mask, grids in meta, handedness) is Scan.mirrored's
    flipped = scan.replace(meta={**scan.meta, "handedness": hand}).mirrored()
    meta = dict(flipped.meta)
    if isinstance(meta.get("crop"), Mapping):
        crop_info = dict(meta["crop"])
        oy, ox = crop_info["offset_px"]
        crop_info["offset_px"] = (int(crop_info["source_shape"][0] - oy - ny), int(ox))
        meta["crop"] = crop_info
    truth = scan_truth(scan)
    if truth is not None:
        meta["simulation"] = flip_truth(truth, scan.shape, scan.spacing_um[0])
    return flipped.replace(meta=meta)
