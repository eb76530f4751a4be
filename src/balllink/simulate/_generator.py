"""The generator of simulated casings: firearm signatures, firings, exported scans.

`Generator` holds everything fixed for one simulated set (seed, difficulty, grid,
geometry) and makes casing after casing: `Generator.signature` (a firearm's marks, cached
for a few firearms), `Generator.fire` (the surface one firing leaves on the whole grid)
and `Generator.export` (the breech face cut out, viewed or mirrored, with its truth).
The random streams are listed in `balllink.simulate._streams`; the conventions in the
`balllink.simulate` package docstring.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from .._scan import Scan
from ._checks import check_geometry, check_seed, check_shape, check_share, check_spacing
from ._cuts import Cut, annulus_cut, draw_cut
from ._difficulty import Difficulty, resolve_difficulty
from ._raw import raw_heights
from ._streams import BATCH_TAG, STREAM_CUT, STREAM_MIRROR, stream
from ._surface import (
    FRESH_SLOPE,
    LAMBDA_LONG_UM,
    LAMBDA_SHORT_UM,
    MARKS_SHARE,
    RMS_UM,
    SPECTRAL_SLOPE,
    STYLES,
    band_field,
    class_marks,
    normalise,
)
from ._truth import LazyTruth, flip_truth, rotation

__all__ = ["PREPARED_SPACING_UM", "Firing", "Generator", "Signature"]

PREPARED_SPACING_UM = 6.25  # prepared-like scans: like the Fadul scans after preprocessing
_PREPARED_SHAPE = (545, 545)
_RAW_SPACING_UM = 3.125
_RAW_FIELD_UM = 4375.0  # raw field side at the default geometry (1400 px at 3.125 µm)
_PRIMER_RADIUS_UM = 1600.0  # breech-face outer radius at the default geometry
_CACHE_SIZE = 4  # firearm signatures kept (casings come firearm by firearm)


@dataclass
class Signature:
    coeffs: np.ndarray  # cubic-spline coefficients of the signature grid (grid-wrap)
    centre: np.ndarray  # (y, x) index of the signature origin on its grid
    hole_ratio: float  # firing-pin hole radius / breech-face outer radius
    hole_offset: np.ndarray  # hole centre in the signature frame, µm (y, x)
    style: str
    batch_id: int


@dataclass
class Firing:
    """What one firing leaves on the whole grid, before the breech face is cut out."""

    firearm_id: int
    firing: int
    signature: Signature
    rotation_deg: float
    shift_um: tuple[float, float]
    contact: float
    dropout: float
    surface: np.ndarray  # µm, the marks on the whole grid (no noise)
    noise: np.ndarray  # µm, white measurement noise
    lost: np.ndarray  # bool, dropout blobs
    annulus: np.ndarray  # bool, the default breech face
    cut: Cut  # the default breech face as a Cut
    rng: np.random.Generator  # the firing's stream, where the raw artefacts continue
    r_o: np.ndarray  # distance to the primer centre, µm
    r_h: np.ndarray  # distance to the hole centre, µm


class Generator:
    """Everything fixed for one simulated set; produces casing after casing."""

    def __init__(
        self,
        *,
        seed: int,
        raw: bool,
        difficulty: str | float | Difficulty,
        shape: tuple[int, int] | None,
        spacing_um: float | tuple[float, float] | None,
        per_firearm: int,
        geometry: str = "annulus",
        mirrored: float = 0.0,
    ) -> None:
        self.seed = check_seed(seed)
        self.raw = bool(raw)
        self.geometry = check_geometry(geometry, self.raw)
        self.mirrored = check_share(mirrored)
        self.difficulty_name, self.difficulty = resolve_difficulty(difficulty)
        self.per_firearm = per_firearm
        self.spacing = check_spacing(
            spacing_um, _RAW_SPACING_UM if self.raw else PREPARED_SPACING_UM
        )
        if shape is None:
            if self.raw:
                n = round(_RAW_FIELD_UM / self.spacing)
                shape = (n, n)
            elif self.spacing == PREPARED_SPACING_UM:
                shape = _PREPARED_SHAPE
            else:
                n = round(_PREPARED_SHAPE[0] * PREPARED_SPACING_UM / self.spacing)
                shape = (n, n)
        self.shape = check_shape(shape)
        field = min(self.shape) * self.spacing
        # breech-face outer radius (µm): the default geometry scaled with the field
        scale = _PRIMER_RADIUS_UM / (
            _RAW_FIELD_UM if self.raw else _PREPARED_SHAPE[0] * PREPARED_SPACING_UM
        )
        self.radius = scale * field
        self.short = max(LAMBDA_SHORT_UM, 2.5 * self.spacing)
        self.long = LAMBDA_LONG_UM
        d = self.difficulty
        reach = 1.03 * self.radius + 3.0 * d.shift_sd_um + 0.02 * self.radius
        n = scipy.fft.next_fast_len(math.ceil(2.0 * reach / self.spacing) + 16, real=True)
        self.sig_shape = (n, n)
        self._cache: OrderedDict[int, Signature] = OrderedDict()
        self._batch_cache: OrderedDict[int, tuple[str, np.ndarray]] = OrderedDict()

    # signature ----------------------------------------------------------------------

    def _surface(self, rng: np.random.Generator, style: str) -> np.ndarray:
        """Multi-scale random surface plus class marks, unit RMS, on the signature grid."""
        rough = band_field(rng, self.sig_shape, self.spacing, self.short, self.long, SPECTRAL_SLOPE)
        marks = class_marks(rng, style, self.sig_shape, self.spacing, self.short)
        return normalise(math.sqrt(1.0 - MARKS_SHARE) * rough + math.sqrt(MARKS_SHARE) * marks)

    def _batch(self, batch_id: int) -> tuple[str, np.ndarray]:
        hit = self._batch_cache.get(batch_id)
        if hit is not None:
            self._batch_cache.move_to_end(batch_id)
            return hit
        rng = np.random.default_rng([self.seed, BATCH_TAG, self.difficulty.batch_size, batch_id])
        style = STYLES[int(rng.integers(len(STYLES)))]
        surface = self._surface(rng, style) if self.difficulty.shared > 0 else None
        self._batch_cache[batch_id] = (style, surface)
        while len(self._batch_cache) > 2:
            self._batch_cache.popitem(last=False)
        return style, surface

    def signature(self, firearm_id: int) -> Signature:
        hit = self._cache.get(firearm_id)
        if hit is not None:
            self._cache.move_to_end(firearm_id)
            return hit
        d = self.difficulty
        batch_id = firearm_id // d.batch_size
        style, batch_surface = self._batch(batch_id)
        rng = np.random.default_rng([self.seed, firearm_id])
        hole_ratio = rng.uniform(0.70, 0.78)
        offset = rng.uniform(0.06, min(0.22, 0.96 - hole_ratio)) * self.radius
        ang = rng.uniform(0.0, 2.0 * math.pi)
        own = self._surface(rng, style)
        if batch_surface is not None:
            own = normalise(math.sqrt(1.0 - d.shared) * own + math.sqrt(d.shared) * batch_surface)
        coeffs = ndi.spline_filter(own, order=3, mode="grid-wrap", output=np.float32)
        sig = Signature(
            coeffs=coeffs,
            centre=(np.array(self.sig_shape, dtype=float) - 1.0) / 2.0,
            hole_ratio=hole_ratio,
            hole_offset=offset * np.array([math.sin(ang), math.cos(ang)]),
            style=style,
            batch_id=batch_id,
        )
        self._cache[firearm_id] = sig
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return sig

    # firing -------------------------------------------------------------------------

    def casing(self, firearm_id: int, firing: int, *, keep_arrays: bool) -> Scan:
        fired = self.fire(firearm_id, firing)
        cut = fired.cut
        if self.geometry == "varied":
            rng = stream(self.seed, firearm_id, firing, STREAM_CUT)
            cut = draw_cut(rng, self.shape, self.spacing)
        flip = False
        if self.mirrored > 0.0:
            flip = bool(
                stream(self.seed, firearm_id, firing, STREAM_MIRROR).random() < self.mirrored
            )
        return self.export(fired, cut, mirrored=flip, keep_arrays=keep_arrays)

    def fire(self, firearm_id: int, firing: int) -> Firing:
        """The surface a firing leaves, on the whole grid, before any cut."""
        d = self.difficulty
        sp = self.spacing
        ny, nx = self.shape
        sig = self.signature(firearm_id)
        rng = np.random.default_rng([self.seed, firearm_id, firing])
        theta = float(rng.uniform(0.0, 360.0))
        shift = np.clip(rng.normal(0.0, d.shift_sd_um, 2), -3 * d.shift_sd_um, 3 * d.shift_sd_um)
        centre_px = (np.array(self.shape, dtype=float) - 1.0) / 2.0
        rot = rotation(theta)
        # geometry of this casing (µm, from pixel (0, 0))
        r_out = self.radius * (1.0 + 0.01 * rng.standard_normal())
        c_out = centre_px * sp + 0.01 * self.radius * rng.standard_normal(2)
        r_hole = sig.hole_ratio * self.radius * (1.0 + 0.005 * rng.standard_normal())
        c_hole = (
            centre_px * sp + rot @ sig.hole_offset + shift
        ) + 0.004 * self.radius * rng.standard_normal(2)
        contact = float(np.clip(1.0 - (1.0 - d.contact) * rng.uniform(0.5, 1.5), 0.05, 1.0))
        dropout = float(d.dropout * rng.uniform(0.5, 1.5))

        # the signature under this pose: scan(p) = S(R(-θ) (p - t))
        matrix = rot.T
        offset = sig.centre - matrix @ (centre_px + shift / sp)
        carried = ndi.affine_transform(
            sig.coeffs,
            matrix,
            offset=offset,
            output_shape=self.shape,
            order=3,
            mode="grid-wrap",
            prefilter=False,
            output=np.float32,
        )
        yy = (np.arange(ny, dtype=np.float32) * sp)[:, None]
        xx = (np.arange(nx, dtype=np.float32) * sp)[None, :]
        r_o = np.hypot(yy - c_out[0], xx - c_out[1])
        r_h = np.hypot(yy - c_hole[0], xx - c_hole[1])
        annulus = (r_o <= r_out) & (r_h >= r_hole)

        # partial contact: a smooth weight, 1 on the marked share of the annulus
        low = band_field(rng, self.shape, sp, 300.0, 2500.0)
        if contact < 1.0:
            vals = low[annulus]
            q = float(np.quantile(vals, 1.0 - contact)) if vals.size else 0.0
            weight = np.clip((low - q) / 0.3 + 0.5, 0.0, 1.0)
        else:
            weight = np.ones(self.shape, dtype=np.float32)
        fresh = band_field(rng, self.shape, sp, self.short, self.long, FRESH_SLOPE)
        rep = d.reproduction
        a = np.float32(math.sqrt(rep)) * weight
        b = np.sqrt(np.clip(1.0 - a * a, 0.0, 1.0))
        surface = (RMS_UM * (a * carried + b * fresh)).astype(np.float32)

        # dropouts: NaN blobs covering `dropout` of the annulus
        blobs = band_field(rng, self.shape, sp, 200.0, 2500.0, 0.5)
        if dropout > 0 and annulus.any():
            cut = float(np.quantile(blobs[annulus], 1.0 - dropout))
            lost = blobs > cut
        else:
            lost = np.zeros(self.shape, dtype=bool)
        noise = rng.standard_normal(self.shape, dtype=np.float32) * np.float32(d.noise_um)

        return Firing(
            firearm_id=int(firearm_id),
            firing=int(firing),
            signature=sig,
            rotation_deg=theta,
            shift_um=(float(shift[0]), float(shift[1])),
            contact=contact,
            dropout=dropout,
            surface=surface,
            noise=noise,
            lost=lost,
            annulus=annulus,
            cut=annulus_cut(c_out, r_out, c_hole, r_hole),
            rng=rng,
            r_o=r_o,
            r_h=r_h,
        )

    def export(
        self,
        fired: Firing,
        cut: Cut,
        *,
        mirrored: bool,
        keep_arrays: bool,
        extra: dict[str, Any] | None = None,
    ) -> Scan:
        """Cut a firing's surface, export it (viewed or mirrored) with its truth."""
        sp = self.spacing
        sig = fired.signature
        region = fired.annulus if cut is fired.cut else cut.mask(self.shape, sp)
        usable = region & ~fired.lost
        clean = np.where(region, fired.surface, np.float32(np.nan)).astype(np.float32)
        geometry = cut.info(self.shape, sp)
        if self.raw:
            heights = raw_heights(
                fired.rng,
                self.shape,
                sp,
                fired.surface + fired.noise,
                fired.annulus,
                fired.lost,
                fired.r_o,
                fired.r_h,
                geometry,
            )
        else:
            heights = np.where(usable, fired.surface + fired.noise, np.float32(np.nan)).astype(
                np.float32
            )

        casing_id = fired.firearm_id * self.per_firearm + fired.firing
        info = {
            "casing_id": int(casing_id),
            "firearm_id": fired.firearm_id,
            "firing_index": fired.firing,
            "batch_id": int(sig.batch_id),
            "style": sig.style,
            "rotation_deg": fired.rotation_deg,
            "shift_um": fired.shift_um,
            "contact_fraction": fired.contact,
            "dropout_fraction": fired.dropout,
            "difficulty": self.difficulty_name,
            "seed": self.seed,
            "raw": self.raw,
            "mirrored": False,
            **geometry,
            **(extra or {}),
        }
        if mirrored:
            info = flip_truth(info, self.shape, sp)
            heights, usable, clean = (
                np.ascontiguousarray(x[::-1]) for x in (heights, usable, clean)
            )
        if keep_arrays:
            usable.setflags(write=False)
            clean.setflags(write=False)
            truth = {**info, "breech_face_mask": usable, "clean_surface": clean}
        else:
            truth = LazyTruth(info, self)
        meta = {
            "generator": "balllink.simulate",
            "format": "simulated",
            "handedness": "mirrored" if mirrored else "viewed",
            "simulation": truth,
        }
        source = f"sim-seed{self.seed}-firearm{fired.firearm_id}-firing{fired.firing}"
        return Scan(heights, spacing_um=(sp, sp), meta=meta, source=source)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_batch_cache"] = OrderedDict()
        return state
