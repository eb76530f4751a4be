"""What a raw instrument export adds to a breech-face surface, for ``casings(raw=True)``.

Everything preprocessing must remove: primer plane tilt and curvature, a steep firing-pin
crater, the unmeasured gap around the primer and the casing head beyond it, missing rim
sectors and spikes. The draws continue the firing's own stream, after its surface.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._surface import band_field

__all__ = ["raw_heights"]


def raw_heights(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    surface: np.ndarray,
    annulus: np.ndarray,
    lost: np.ndarray,
    r_o: np.ndarray,
    r_h: np.ndarray,
    geometry: dict[str, Any],
) -> np.ndarray:
    """Raw heights (µm, NaN = not measured) around ``surface`` on the breech face.

    ``r_o`` and ``r_h`` are the distances (µm) of every pixel to the primer and hole
    centres; ``geometry`` is the cut's truth (``primer_radius_um``, ``hole_radius_um``,
    ``primer_center_um``) and receives ``tilt_um_per_mm``, ``crater_depth_um`` and
    ``n_spikes``.
    """
    sp = spacing
    ny, nx = shape
    r_out = geometry["primer_radius_um"]
    r_hole = geometry["hole_radius_um"]
    cy, cx = geometry["primer_center_um"]
    yy = (np.arange(ny, dtype=np.float32) * sp - cy)[:, None]
    xx = (np.arange(nx, dtype=np.float32) * sp - cx)[None, :]
    # primer plane tilt (5-30 µm per mm) and curvature (sag ±2-8 µm at the edge)
    slope = rng.uniform(0.005, 0.03)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    tilt = slope * (yy * math.sin(direction) + xx * math.cos(direction))
    sag = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 8.0)
    curve = sag * (yy * yy + xx * xx) / (r_out * r_out)
    rough = band_field(rng, shape, sp, 30.0, 1000.0)
    # firing-pin crater: a steep-walled bowl 40-120 µm deep inside the hole
    depth = rng.uniform(40.0, 120.0)
    q = np.clip(r_h / r_hole, 0.0, 1.0)
    crater = -depth * (1.0 - q * q) ** 0.3 + 0.8 * rough
    # outside the primer: a gap (groove, mostly unmeasured) then the casing head
    gap = rng.uniform(40.0, 90.0)
    head_level = rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 30.0)
    head = head_level + 0.6 * rough
    groove = -rng.uniform(20.0, 50.0) + 0.5 * rough
    z = np.where(annulus, surface, np.float32(0.0))
    inside_hole = (r_o <= r_out) & ~annulus
    in_gap = (r_o > r_out) & (r_o <= r_out + gap)
    z = np.where(inside_hole, crater, z)
    z = np.where(in_gap, groove, z)
    z = np.where(r_o > r_out + gap, head, z)
    z = (z + tilt + np.where(r_o <= r_out, curve, 0.0)).astype(np.float32)
    # missing data: dropouts, most of the gap, steep crater walls, rim sectors
    theta = np.arctan2(yy, xx)
    sectors = band_field(rng, (1, 256), 1.0, 24.0, 256.0)[0]
    sector_lost = np.interp(theta, np.linspace(-math.pi, math.pi, 256), sectors) > 0.8
    wall = inside_hole & (q > 0.93) & (rough > -0.3)
    rim = (r_o > r_out + gap + 0.1 * r_out) & sector_lost
    nan = lost | (in_gap & (rough > -1.0)) | wall | rim
    z[nan] = np.nan
    # spikes: isolated outliers of ±20-200 µm, a few per 10^4 pixels
    n_spikes = max(3, int(3e-4 * ny * nx))
    iy = rng.integers(0, ny, n_spikes)
    ix = rng.integers(0, nx, n_spikes)
    z[iy, ix] = rng.choice([-1.0, 1.0], n_spikes) * rng.uniform(20.0, 200.0, n_spikes)
    geometry["tilt_um_per_mm"] = float(slope * 1000.0)
    geometry["crater_depth_um"] = float(depth)
    geometry["n_spikes"] = int(n_spikes)
    return z
