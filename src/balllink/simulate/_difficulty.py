"""How hard a simulated set is to link: `Difficulty` and the named settings.

A difficulty changes how firings reproduce the signatures, never the signatures' random
streams (see `balllink.simulate.casings`, "How difficulty is built").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["DIFFICULTIES", "Difficulty", "NamedDifficulty", "resolve_difficulty"]


@dataclass(frozen=True)
class Difficulty:
    """What makes a simulated set easy or hard to link.

    Parameters
    ----------
    reproduction : float in (0, 1]
        Share of the breech-face surface variance, where the firearm made contact, that
        comes from the firearm signature; the rest is fresh texture of this casing (same
        band). Two firings of one firearm compared at the true relative pose correlate
        about ``reproduction`` over their common contact region.
    shared : float in [0, 1)
        Share of a firearm signature's variance that comes from its manufacturing batch
        (subclass marks shared by consecutively made firearms). Two firings of different
        firearms of one batch, at their true relative pose, correlate about
        ``reproduction * shared``; firearms of different batches about 0.
    batch_size : int >= 1
        Firearms per batch: firearm ``f`` belongs to batch ``f // batch_size``. The batch
        also fixes the class-mark style (filing lines, arcs or granular texture).
    contact : float in (0, 1]
        Mean share of the breech-face annulus that the firearm marks in a firing (drawn
        per firing as ``1 - (1 - contact) * U(0.5, 1.5)``); outside it the casing shows
        only its own texture.
    dropout : float in [0, 1)
        Mean share of the annulus lost to missing-data blobs (NaN), drawn per firing
        uniformly in ``[0.5, 1.5] * dropout``.
    noise_um : float >= 0
        White measurement noise added to the heights, µm RMS (not in ``clean_surface``).
    shift_sd_um : float >= 0
        SD of each shift component, µm (truncated at 3 SD).
    """

    reproduction: float
    shared: float
    batch_size: int
    contact: float
    dropout: float
    noise_um: float
    shift_sd_um: float

    def __post_init__(self) -> None:
        checks = {
            "reproduction": 0.0 < self.reproduction <= 1.0,
            "shared": 0.0 <= self.shared < 1.0,
            "batch_size": int(self.batch_size) >= 1,
            "contact": 0.0 < self.contact <= 1.0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "noise_um": self.noise_um >= 0.0,
            "shift_sd_um": self.shift_sd_um >= 0.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"Difficulty.{name}={getattr(self, name)!r} is out of range; see the "
                    "Difficulty docstring for the allowed interval"
                )
        object.__setattr__(self, "batch_size", int(self.batch_size))

    @classmethod
    def from_value(cls, value: float) -> Difficulty:
        """Interpolate linearly between "easy" (0.0) and "hard" (1.0).

        ``batch_size`` is rounded to the nearest integer; 0.5 is "medium".
        """
        d = float(value)
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"difficulty as a number must lie in [0, 1], got {value!r}")
        easy, hard = DIFFICULTIES["easy"], DIFFICULTIES["hard"]
        mix = {
            f.name: getattr(easy, f.name) + d * (getattr(hard, f.name) - getattr(easy, f.name))
            for f in dataclasses.fields(cls)
        }
        mix["batch_size"] = round(mix["batch_size"])
        return cls(**mix)


#: Named difficulty settings (see `Difficulty` for what each field does).
#:
#: - ``"easy"``: every firing reproduces its firearm almost fully; no batch sharing.
#: - ``"medium"``: ``Difficulty.from_value(0.5)``.
#: - ``"hard"``: 40 % of the surface is fresh texture, three quarters contact, 10 %
#:   dropouts, and batches of 10 consecutively made firearms sharing 25 % of their
#:   signature (aimed at sets like the consecutively made Ruger SR9 slides).
#: - ``"fadul-like"``: aimed at the Fadul set (10 consecutively made slides).
#:
#: Measured (seed 1, 6 firearms x 3 firings, 272 x 272 px at 12.5 µm; Pearson correlation
#: of the heights at the true relative pose; KM = same firearm, batch = same batch):
#: easy KM 0.90-0.94; medium KM 0.52-0.68, batch 0.08-0.18; hard KM 0.20-0.46, batch
#: 0.09-0.22; fadul-like KM 0.80-0.86, batch 0.13-0.27.
#: Whole-surface masked correlation maximised over 360° (3° steps) and all shifts at
#: 25 µm, 12 KM and 12 KNM pairs of a 10 x 3 set at the default geometry: fadul-like KM
#: 0.59-0.82, KNM 0.26-0.37 (the real Fadul scans, same method: KM 0.66-0.85, KNM
#: 0.27-0.47); medium KM 0.38-0.61, KNM 0.23-0.31; hard KM 0.25-0.40, KNM 0.23-0.35.
DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        reproduction=0.95,
        shared=0.0,
        batch_size=1,
        contact=0.98,
        dropout=0.01,
        noise_um=0.02,
        shift_sd_um=30.0,
    ),
    "hard": Difficulty(
        reproduction=0.6,
        shared=0.25,
        batch_size=10,
        contact=0.75,
        dropout=0.1,
        noise_um=0.1,
        shift_sd_um=120.0,
    ),
    "fadul-like": Difficulty(
        reproduction=0.92,
        shared=0.12,
        batch_size=10,
        contact=0.95,
        dropout=0.05,
        noise_um=0.05,
        shift_sd_um=60.0,
    ),
}
DIFFICULTIES["medium"] = Difficulty.from_value(0.5)


class NamedDifficulty(NamedTuple):
    """A difficulty setting and the name it is recorded under (``meta["simulation"]``)."""

    name: str  # a key of DIFFICULTIES, the number as text, or "custom"
    setting: Difficulty


def resolve_difficulty(value: str | float | Difficulty) -> NamedDifficulty:
    """The setting a ``difficulty=`` argument names, with its name; ValueError otherwise.

    Examples
    --------
    >>> resolve_difficulty(0.5) == ("0.5", DIFFICULTIES["medium"])
    True
    >>> resolve_difficulty("easy").name
    'easy'
    """
    if isinstance(value, Difficulty):
        return NamedDifficulty("custom", value)
    if isinstance(value, str):
        if value not in DIFFICULTIES:
            raise ValueError(
                f"unknown difficulty {value!r}; use one of {sorted(DIFFICULTIES)}, a number "
                "in [0, 1] or a Difficulty(...)"
            )
        return NamedDifficulty(value, DIFFICULTIES[value])
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
        return NamedDifficulty(f"{float(value):g}", Difficulty.from_value(float(value)))
    raise ValueError(
        f"difficulty must be a name {sorted(DIFFICULTIES)}, a number in [0, 1] or a "
        f"Difficulty, got {value!r}"
    )
