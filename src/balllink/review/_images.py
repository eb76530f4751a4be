"""Pictures of the review app, drawn on the server: surfaces as PNG, the pair's geometry,
the series map and timeline as plain numbers for inline SVG. Nothing is fetched from
elsewhere (no map tiles, no fonts)."""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from .._scan import Scan
from ..comparison import Comparison
from ..report import align_to

__all__ = [
    "LRU",
    "cell_boxes",
    "map_points",
    "posed",
    "surface_png",
    "timeline_points",
]

#: Longest side of a surface picture, pixels (larger scans are shown reduced).
MAX_SIDE = 640


class LRU:
    """A small thread-safe least-recently-used cache: ``get(key, make)``.

    Examples
    --------
    >>> c = LRU(2)
    >>> c.get("a", lambda: 1), c.get("a", lambda: 2), len(c)
    (1, 1, 1)
    """

    def __init__(self, size: int):
        self.size = int(size)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: two threads may both make it, one is kept
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def surface_png(heights: np.ndarray, *, max_side: int = MAX_SIDE) -> bytes:
    """A height map as a PNG: viridis between its 1st and 99th percentiles, transparent
    where there is no data, reduced (block mean) when its longest side exceeds
    ``max_side``.

    Examples
    --------
    >>> z = np.arange(12.0).reshape(3, 4); z[0, 0] = np.nan
    >>> png = surface_png(z)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    from matplotlib import colormaps
    from PIL import Image

    z = np.asarray(heights, dtype=np.float32)
    step = max(1, math.ceil(max(z.shape) / max_side))
    if step > 1:
        ny, nx = (z.shape[0] // step) * step, (z.shape[1] // step) * step
        blocks = z[:ny, :nx].reshape(ny // step, step, nx // step, step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: NaN
            z = np.nanmean(blocks, axis=(1, 3))
    finite = np.isfinite(z)
    lo, hi = np.percentile(z[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    norm = np.clip((np.where(finite, z, lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgba = (colormaps["viridis"](norm) * 255).astype(np.uint8)
    rgba[..., 3] = np.where(finite, 255, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def posed(a: Scan, b: Scan, comparison: Comparison) -> np.ndarray:
    """Heights of ``b`` moved onto ``a``'s grid by the comparison's pose (mirrored first
    when the comparison found opposite handedness): the picture to lay over ``a``."""
    if comparison.mirrored:
        b = b.replace(heights=np.flipud(b.heights), mask=np.flipud(b.mask))
    return align_to(a, b, comparison.rotation_deg, comparison.translation_um)


def cell_boxes(a: Scan, comparison: Comparison) -> list[dict]:
    """The cells of ``a`` compared in direction a-in-b, as boxes in ``a``'s pixels
    (``x``, ``y``, ``w``, ``h``) with ``congruent``, ``row``, ``col``, ``corr``."""
    cells = comparison.cells
    if not len(cells):
        return []
    gy, gx = comparison.config.grid
    h, w = a.shape[0] / gy, a.shape[1] / gx
    sy, sx = a.spacing_um
    out = []
    for c in cells[cells["direction"] == 0]:
        cy, cx = float(c["center_y_um"]) / sy, float(c["center_x_um"]) / sx
        out.append(
            dict(
                x=round(cx - w / 2, 1),
                y=round(cy - h / 2, 1),
                w=round(w, 1),
                h=round(h, 1),
                congruent=bool(c["congruent"]),
                row=int(c["row"]),
                col=int(c["col"]),
                corr=float(c["corr"]),
            )
        )
    return out


def map_points(
    places: Sequence[tuple[float, float, str]], *, width: int = 420, height: int = 300
) -> dict:
    """Incident locations ``(lat, lon, label)`` placed in a ``width`` x ``height`` box
    (equirectangular, longitude scaled by the cosine of the mean latitude, a margin
    around), with the box's bounds for the axis labels.

    Examples
    --------
    >>> m = map_points([(40.0, -75.0, "A"), (41.0, -74.0, "B")])
    >>> [p["label"] for p in m["points"]], m["points"][0]["y"] > m["points"][1]["y"]
    (['A', 'B'], True)
    """
    pts = [(float(la), float(lo), str(lab)) for la, lo, lab in places]
    if not pts:
        return {"points": [], "width": width, "height": height}
    lats = [p[0] for p in pts]
    lons = [p[1] for p in pts]
    k = math.cos(math.radians(sum(lats) / len(lats)))
    span_y = max(max(lats) - min(lats), 1e-3)
    span_x = max((max(lons) - min(lons)) * k, 1e-3)
    scale = min((width - 60) / span_x, (height - 40) / span_y)
    cx, cy = (max(lons) + min(lons)) / 2, (max(lats) + min(lats)) / 2
    points = [
        dict(
            x=round(width / 2 + (lo - cx) * k * scale, 1),
            y=round(height / 2 - (la - cy) * scale, 1),
            label=lab,
            lat=la,
            lon=lo,
        )
        for la, lo, lab in pts
    ]
    return {
        "points": points,
        "width": width,
        "height": height,
        "lat": (min(lats), max(lats)),
        "lon": (min(lons), max(lons)),
    }


def timeline_points(dates: Sequence[tuple[str, str]], *, width: int = 420) -> dict:
    """Dated events ``(iso_date, label)`` placed along a ``width``-pixel line (undated
    events are left out)."""
    from datetime import date

    parsed = []
    for d, label in dates:
        try:
            parsed.append((date.fromisoformat(str(d)[:10]), str(label)))
        except ValueError:
            continue
    if not parsed:
        return {"points": [], "width": width}
    parsed.sort()
    t0, t1 = parsed[0][0].toordinal(), parsed[-1][0].toordinal()
    span = max(t1 - t0, 1)
    return {
        "points": [
            dict(
                x=round(20 + (d.toordinal() - t0) / span * (width - 40), 1), date=str(d), label=lab
            )
            for d, lab in parsed
        ],
        "width": width,
        "first": str(parsed[0][0]),
        "last": str(parsed[-1][0]),
    }
