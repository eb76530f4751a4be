"""`write_scan`: a scan as X3P (`balllink.io._x3p_write`) or as balllink's .npz format
(`balllink.io._arrays`), written atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .._scan import HANDEDNESS, Scan
from ._arrays import npz_bytes
from ._content import fail
from ._x3p_write import x3p_bytes

__all__ = ["write_scan"]

logger = logging.getLogger(__name__)


def _annotations_to_write(
    scan: Scan, annotations: Mapping[str, np.ndarray] | None, path: Path
) -> dict[str, np.ndarray]:
    if annotations is None:  # what the reader found, while it still fits the grid
        found = scan.meta.get("annotations")
        if not isinstance(found, Mapping) or not all(
            np.shape(region) == scan.shape for region in found.values()
        ):
            if found:
                logger.debug("write_scan %s: meta['annotations'] do not fit; not written", path)
            return {}
        annotations = found
    if not isinstance(annotations, Mapping):
        raise TypeError(
            f"annotations must be a dict {{name: bool array}}, got {type(annotations).__name__}"
        )
    out = {}
    for name, region in annotations.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(
                f"{path}: annotation names must be non-empty text without surrounding spaces, "
                f"got {name!r}"
            )
        region = np.asarray(region)
        if region.shape != scan.shape:
            raise ValueError(
                f"{path}: annotation {name!r} has shape {region.shape}, the scan {scan.shape}"
            )
        out[name] = region.astype(bool)
    return out


def write_scan(
    scan: Scan,
    path: str | os.PathLike[str],
    *,
    annotations: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a scan as X3P (``.x3p``) or as ``.npz``; `read_scan` reads it back.

    X3P layout (ISO 25178-72 Amd 1:2020, written by x3pio, valid checksums): heights as
    float32 with a Z increment of 1e-6 m, so the stored numbers are the float32 micrometres
    exactly and a round trip is bit-exact; NaN for points not measured; lateral increments in
    metres; ``Record2`` from ``meta`` (``date``, ``creator``, ``comment``, ``instrument`` and
    the instrument details of ``meta["x3p"]``; the probing type is ``Software`` unless known).
    Two vendor files (``VendorSpecificID`` ``http://balllink/...``): ``meta.json`` holds every
    JSON-serialisable entry of ``meta`` (arrays are left out, tuples become lists, NaN and Inf
    are kept, dates become ISO text) and is merged back on reading (``meta["handedness"]``
    among them); ``mask.png`` holds ``scan.mask`` (white = usable, black = not) when it is
    stricter than the finite heights, and is read back as the file's region of interest.
    Annotations are written as x3ptools does:
    ``bindata/mask.png`` (RGB, ``#cd7f32`` where nothing is annotated, one colour per
    annotation) and ``Record3/Mask`` with ``<Background>#cd7f32</Background>`` and
    ``<Annotations><Annotation color="#rrggbb">name</Annotation>...</Annotations>``.

    ``.npz``: balllink's own format (``format`` = ``"balllink-scan-2"``, see
    `balllink.io._arrays`): ``heights`` (float32 µm), ``mask`` (``scan.mask``), ``spacing_um``
    (dy, dx), ``meta_json`` (every JSON-serialisable entry of ``meta``, NaN and Inf kept),
    ``source``, ``file_mask`` (when ``meta["file_mask"]`` is an array of the grid's shape),
    ``annotations`` (bool, ``(n, rows, cols)``) and ``annotation_names`` when there are
    annotations. `read_scan` gives the scan back exactly: heights, mask, spacing, ``meta``
    (its JSON form) and source, nothing guessed or applied.

    The file is written to a temporary name, flushed to disk (fsync) and moved into place.

    Parameters
    ----------
    scan : Scan
        The scan to write.
    path : str or path-like
        Destination ending in ``.x3p`` or ``.npz``.
    annotations : dict of str to bool ndarray, optional
        Named regions of the grid's shape, marks on the surface (not the usable region; see
        `read_scan`). By default ``scan.meta["annotations"]`` (what `read_scan` found) when
        they still fit the grid; ``{}`` writes none. In X3P a pixel has one colour, so the
        regions must not overlap.

    Raises
    ------
    ScanFormatError
        For another suffix, or metadata X3P cannot hold; the message names the file.
    ValueError
        For annotations that cannot be written (another shape, overlapping regions, a name
        that is not text) or a ``meta["handedness"]`` other than ``"viewed"``,
        ``"mirrored"`` or None.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import balllink as bl
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> scan = bl.Scan(np.arange(12.0).reshape(3, 4), spacing_um=6.25, meta={"creator": "lab"})
    >>> bl.write_scan(scan, folder / "a.x3p")
    >>> back = bl.read_scan(folder / "a.x3p")
    >>> back.spacing_um, back.meta["creator"], back.meta["checksum"]
    ((6.25, 6.25), 'lab', 'ok')
    >>> bool(np.array_equal(back.heights, scan.heights))
    True
    >>> blob = np.zeros((3, 4), bool)
    >>> blob[0, :2] = True
    >>> bl.write_scan(scan, folder / "b.x3p", annotations={"break-off": blob})
    >>> list(bl.read_scan(folder / "b.x3p").meta["annotations"])
    ['break-off']
    >>> bl.read_scan(folder / "b.x3p", exclude=["break-off"]).n_valid
    10
    >>> bl.write_scan(scan.replace(source="casing.x3p"), folder / "c.npz")
    >>> again = bl.read_scan(folder / "c.npz")
    >>> again.meta == scan.meta, again.source, bool(np.array_equal(again.mask, scan.mask))
    (True, 'casing.x3p', True)
    """
    if not isinstance(scan, Scan):
        raise TypeError(f"write_scan needs a balllink Scan, got {type(scan).__name__}")
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    handedness = scan.meta.get("handedness")
    if handedness is not None and handedness not in HANDEDNESS:
        raise ValueError(
            f"{path}: meta['handedness'] must be 'viewed', 'mirrored' or None (unknown), "
            f"got {handedness!r}"
        )
    regions = _annotations_to_write(scan, annotations, path)
    if suffix == ".x3p":
        mask = None if np.array_equal(scan.mask, np.isfinite(scan.heights)) else scan.mask
        data = x3p_bytes(
            scan.heights, scan.spacing_um, mask, scan.meta, str(path), annotations=regions
        )
    elif suffix == ".npz":
        data = npz_bytes(scan, regions)
    else:
        raise fail(path, f"write_scan writes .x3p or .npz, not {suffix or '(no suffix)'!r}")
    atomic_write(path, data)
