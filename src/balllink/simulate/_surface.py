"""The marks a firearm leaves: band-limited random surfaces and class marks.

A signature is half multi-scale random surface (amplitude ∝ f^-1.5 inside a Gaussian band,
like the Fadul scans' spectrum) and half class marks of its batch's style (`STYLES`:
parallel filing lines, circular machining arcs or granular texture). Every field is drawn
from the stream it is given, so the same stream gives the same bits.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

__all__ = [
    "FRESH_SLOPE",
    "LAMBDA_LONG_UM",
    "LAMBDA_SHORT_UM",
    "MARKS_SHARE",
    "RMS_UM",
    "SPECTRAL_SLOPE",
    "STYLES",
    "band_field",
    "class_marks",
    "normalise",
]

RMS_UM = 1.5  # RMS height of the breech-face surface, µm (Fadul after band-pass: 1.3-1.8)
LAMBDA_SHORT_UM = 20.0  # signature band: Gaussian low-pass cutoff (raised to 2.5 px)
LAMBDA_LONG_UM = 400.0  # signature band: Gaussian high-pass cutoff
SPECTRAL_SLOPE = 1.5  # amplitude ∝ f**-slope inside the band (Fadul's spectrum)
FRESH_SLOPE = 1.0  # per-firing texture is finer: coarse scales reproduce better
_MARKS_SLOPE = 1.0  # amplitude ∝ f**-slope of the line and arc profiles
MARKS_SHARE = 0.5  # share of a signature's variance carried by its class marks
STYLES = ("filing", "arcs", "granular")  # class-mark styles, one per batch


@functools.lru_cache(maxsize=64)
def _transfer(
    shape: tuple[int, int], spacing: float, short_um: float, long_um: float, slope: float
) -> np.ndarray:
    """Band-pass amplitude for irfft2 coefficients: Gaussian (ISO) roll-offs, f**-slope."""
    fy = scipy.fft.fftfreq(shape[0], d=spacing)[:, None]
    fx = scipy.fft.rfftfreq(shape[1], d=spacing)[None, :]
    f = np.hypot(fy, fx)
    alpha2 = math.log(2.0) / math.pi  # Gaussian filter constant: 50 % at the cutoff
    low = np.exp(-math.pi * alpha2 * (short_um * f) ** 2)
    high = 1.0 - np.exp(-math.pi * alpha2 * (long_um * f) ** 2)
    with np.errstate(divide="ignore"):
        power = np.where(f > 0, f, np.inf) ** -slope
    h = (low * high * power).astype(np.float32)
    h.setflags(write=False)
    return h


def band_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    short_um: float,
    long_um: float,
    slope: float = 0.0,
) -> np.ndarray:
    """A periodic Gaussian random field with the given band, unit RMS, float32.

    Examples
    --------
    >>> z = band_field(np.random.default_rng(0), (64, 64), 25.0, 50.0, 400.0, SPECTRAL_SLOPE)
    >>> z.dtype, round(float(z.std()), 3)
    (dtype('float32'), 1.0)
    """
    h = _transfer(shape, float(spacing), float(short_um), float(long_um), float(slope))
    coef = np.empty(h.shape, dtype=np.complex64)
    coef.real = rng.standard_normal(h.shape, dtype=np.float32)
    coef.imag = rng.standard_normal(h.shape, dtype=np.float32)
    coef *= h
    field = scipy.fft.irfft2(coef, s=shape)
    field -= field.mean()
    std = float(field.std())
    if std > 0:
        field /= std
    return field.astype(np.float32, copy=False)


def _profile(
    rng: np.random.Generator,
    n: int,
    spacing: float,
    short_um: float,
    long_um: float,
    slope: float = 0.0,
) -> np.ndarray:
    """A 1-D band-limited unit-RMS profile of ``n`` samples (for lines and arcs)."""
    f = scipy.fft.rfftfreq(n, d=spacing)
    alpha2 = math.log(2.0) / math.pi
    h = np.exp(-math.pi * alpha2 * (short_um * f) ** 2) * (
        1.0 - np.exp(-math.pi * alpha2 * (long_um * f) ** 2)
    )
    with np.errstate(divide="ignore"):
        h = h * np.where(f > 0, f, np.inf) ** -slope
    coef = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * h
    p = scipy.fft.irfft(coef, n=n)
    p -= p.mean()
    return p / max(float(p.std()), 1e-12)


def normalise(z: np.ndarray) -> np.ndarray:
    """``z`` with mean 0 and unit RMS (unchanged scale when constant), float32."""
    z = z - z.mean()
    std = float(z.std())
    return (z / std if std > 0 else z).astype(np.float32, copy=False)


def class_marks(
    rng: np.random.Generator, style: str, shape: tuple[int, int], spacing: float, short: float
) -> np.ndarray:
    """Class marks on a signature grid (unit RMS): filing lines, arcs or grains.

    Examples
    --------
    >>> z = class_marks(np.random.default_rng(0), "arcs", (64, 64), 25.0, 62.5)
    >>> z.shape, round(float(z.std()), 3)
    ((64, 64), 1.0)
    """
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * spacing
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * spacing
    half = 0.5 * math.hypot(ny, nx) * spacing
    if style == "filing":
        phi = rng.uniform(0.0, math.pi)
        u = y[:, None] * math.sin(phi) + x[None, :] * math.cos(phi)
        v = y[:, None] * math.cos(phi) - x[None, :] * math.sin(phi)
        n = int(2 * half / spacing) + 8
        grid = np.linspace(-half - 4 * spacing, half + 4 * spacing, n)
        lines = _profile(rng, n, grid[1] - grid[0], short, 300.0, _MARKS_SLOPE)
        strength = 1.0 + 0.5 * _profile(rng, n, grid[1] - grid[0], 400.0, 3000.0)
        z = np.interp(u, grid, lines) * np.interp(v, grid, strength)
    elif style == "arcs":
        dist = rng.uniform(0.6, 3.0) * half
        ang = rng.uniform(0.0, 2.0 * math.pi)
        cy, cx = dist * math.sin(ang), dist * math.cos(ang)
        r = np.hypot(y[:, None] - cy, x[None, :] - cx)
        r0, r1 = float(r.min()), float(r.max())
        n = int((r1 - r0) / spacing) + 8
        grid = np.linspace(r0 - 2 * spacing, r1 + 2 * spacing, n)
        arcs = _profile(rng, n, grid[1] - grid[0], short, 300.0, _MARKS_SLOPE)
        t = np.arctan2(y[:, None] - cy, x[None, :] - cx)
        m = 64
        ring = rng.standard_normal(m)
        ring = ndi.gaussian_filter1d(ring, 2.0, mode="wrap")
        ring = 1.0 + 0.5 * ring / max(float(ring.std()), 1e-12)
        tg = np.linspace(-math.pi, math.pi, m + 1)
        z = np.interp(r, grid, arcs) * np.interp(t, tg, np.append(ring, ring[0]))
    elif style == "granular":
        g = band_field(rng, shape, spacing, max(short, 30.0), 300.0, SPECTRAL_SLOPE)
        z = np.tanh(2.0 * g)
    else:  # pragma: no cover - guarded by STYLES
        raise ValueError(style)
    return normalise(np.asarray(z, dtype=np.float32))
